"""The one training engine shared by the depth and segmentation tasks."""
