"""ROS 2 plumbing shared by every node package of the stack (the role nav2_util plays for Nav2).

Nothing here knows a model or a costmap: QoS profiles, parameter declaration,
image conversion, frame statistics and ``/diagnostics``, the inference-node
base class and the console entry point. The algorithms live in
``perception_core``, which imports no ROS.
"""
