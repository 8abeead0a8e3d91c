"""TEST DOUBLE of ROS 2 `launch_ros` (not installable here): records and resolves, starts nothing; see test/launch_double/README.md."""
