"""TEST DOUBLE of ROS 2 `launch_ros` (not installable here); see test/launch_double/README.md."""
