"""Model life cycle and ROS-free runtime core of the off-road perception stack.

Import discipline: the runtime core (``runtime``, ``preprocess``, ``depth_codec``,
``costmap``, ``image_codec``, ``ontology``, ``metrics``) imports no torch and no
ROS, so nodes and offline evaluation stay light. Training, export and data
loaders import torch; ROS and onnxruntime-qnn are imported lazily where used.
"""

__version__ = "0.1.0"
