"""Errors of model_tools. Each names the file, topic or field at fault.

CLIs catch ``ModelToolsError`` and exit non-zero with its one-line message.
"""

from __future__ import annotations


class ModelToolsError(Exception):
    """Base class: a user-facing failure with a message that names its cause."""


class ConfigError(ModelToolsError):
    """A config file or parameter is missing, malformed or inconsistent."""


class DataError(ModelToolsError):
    """A data-set file is missing, unreadable, or inconsistent with its pair."""


class ModelFileError(ModelToolsError):
    """A model file (checkpoint, ONNX, context binary) is corrupt or mismatched."""


class BackendError(ModelToolsError):
    """The requested inference backend cannot run the model."""


class ImageEncodingError(ModelToolsError):
    """An image message has an unsupported encoding or inconsistent size/step."""


class BagError(ModelToolsError):
    """A rosbag is missing, truncated, corrupt, or lacks a required topic."""


class OutputExistsError(ModelToolsError):
    """An output file exists and overwriting was not asked for."""
