"""Data for training and evaluation: the synthetic generator, data-set loaders, augmentations.

Importing this package imports nothing heavy: ``synth`` and ``transforms``
need only numpy/cv2/yaml; ``datasets`` imports torch; bag writing imports
rosbags lazily. So the GPU box (no ROS, no rosbags) can generate and load data.
"""
