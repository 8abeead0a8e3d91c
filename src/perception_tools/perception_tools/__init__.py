"""ROS-side tools of the perception stack: bag replay and recording, the node stack runner, live evaluation
(replay into the running nodes, record, score), and the environment doctor. They talk to a live ROS graph,
so they sit above the node packages; the offline tools are ``model_tools``."""
