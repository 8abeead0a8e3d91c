"""ROS 2 nodes: DDRNet23-Slim segmentation and the traversability costmap (model-agnostic)."""
