"""INT8 path of model_tools: calibrate, quantize (QDQ), rank layer sensitivity,
compile to a QNN context binary, and compare FP32 with INT8.

Modules:

- ``images``: numpy-only readers of calibration/validation images (data-set
  folder or rosbag).
- ``quantize``: FP32 ONNX -> QDQ ONNX for the QNN HTP (W8A8 or A16W8, mixed).
- ``sensitivity``: per-part quantization sensitivity and the mixed-precision search.
- ``compile``: QDQ ONNX -> EPContext ONNX (QNN context binary) with op placement.
- ``aihub``: the optional Qualcomm AI Hub compile job.
- ``compare``: FP32 vs INT8 task metrics, per-head analysis, HTP agreement.
- ``convert``: run folder -> every deployable artifact in one command.
- ``commands``: the ``model-tools`` subcommands.

Nothing here imports torch or ROS at module level.
"""

from __future__ import annotations
