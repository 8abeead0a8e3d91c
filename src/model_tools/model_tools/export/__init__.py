"""ONNX export and ONNX-Runtime-vs-PyTorch validation shared by the depth and segmentation tasks."""
