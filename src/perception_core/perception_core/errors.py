"""Errors of the perception stack, shared by every package. Each names the file, topic or field at fault.

CLIs and node entry points catch ``PerceptionError`` and exit non-zero with its one-line message.
"""

from __future__ import annotations


class PerceptionError(Exception):
    """Base class: a user-facing failure with a message that names its cause."""


class ConfigError(PerceptionError):
    """A config file or parameter is missing, malformed or inconsistent."""


class DataError(PerceptionError):
    """A data-set file is missing, unreadable, or inconsistent with its pair."""


class ModelFileError(PerceptionError):
    """A model file (checkpoint, ONNX, context binary) is corrupt or mismatched."""


class BackendError(PerceptionError):
    """The requested inference backend cannot run the model."""


class ImageEncodingError(PerceptionError):
    """An image message has an unsupported encoding or inconsistent size/step."""


class BagError(PerceptionError):
    """A rosbag is missing, truncated, corrupt, or lacks a required topic."""


class OutputError(PerceptionError):
    """An output file or folder cannot be written (not a folder, no permission, under a regular file)."""


class OutputExistsError(OutputError):
    """An output file exists and overwriting was not asked for."""
