"""The self-describing model contract: what an exported model's metadata says.

Every model file we ship (FP32 ONNX, INT8 QDQ ONNX, QNN EPContext ONNX) carries
these keys in ONNX ``metadata_props``. Values are strings; structured values
are JSON. Exporters build a :class:`ModelMetadata` and write ``to_props()``;
consumers (runtime loader, nodes, eval) read ``from_props()``. No onnx/torch
import here: ONNX Runtime exposes the same dict as ``custom_metadata_map``.

Content hash: ``content_sha256`` is the SHA-256 of the serialized ONNX
``GraphProto`` (every node, attribute and weight byte, and a context binary's
payload). ``metadata_props`` lie outside the graph, so the metadata can carry
the hash of the graph it describes, and editing the metadata keeps it valid.
Writers set it with :func:`set_model_metadata`; the runtime loader checks it
against the graph's bytes in the file (:func:`graph_sha256_of_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perception_core.errors import ModelFileError

PREFIX = "perception."
SCHEMA_VERSION = "1"
TASKS = ("depth", "segmentation")
FORMATS = ("fp32", "qdq", "qnn_context")
# What a depth model's output means for a camera other than the one it was trained on:
# "fixed": metres, for the training camera only (no intrinsics needed);
# "canonical_focal": metres for a camera whose focal length at the model input is canonical_focal_px
#   (geometric mean of fx and fy after the resize to the input); the runtime multiplies by
#   f_input / canonical_focal_px, with f_input from the camera's K (pipelines.input_focal_px);
# "canonical_focal_height": as canonical_focal, and for a camera canonical_height_m above the ground plane
#   of the vehicle's base frame; the runtime also multiplies by camera_height / canonical_height_m.
DEPTH_CAMERA_MODELS = ("fixed", "canonical_focal", "canonical_focal_height")
# A canonical_focal_height model may also take its camera as a second graph input (``camera_input`` names it):
# float32 [1, 2] = [ln(f_input / canonical_focal_px), ln(camera_height / canonical_height_m)], the logs of the two
# factors the output is rescaled by (zeros: the canonical camera). The network then knows what the output
# scaling cannot tell it, e.g. that a higher camera sees finer texture at the same image row.
CAMERA_INPUT_SHAPE = (1, 2)


@dataclass
class ModelMetadata:
    """What a consumer needs to run a model file correctly.

    Normalisation: ``x = (pixel * input_scale - mean) / std`` per channel, on
    ``color_order`` channels, laid out ``input_layout``.
    """

    task: str
    input_name: str
    input_shape: list[int]  # e.g. [1, 3, 384, 640]
    output_names: list[str]
    input_layout: str = "NCHW"
    color_order: str = "RGB"
    input_scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    format: str = "fp32"
    model_name: str = ""
    # Meaning of each output, e.g. {"depth": "metres, 32F"}.
    output_meaning: dict[str, str] = field(default_factory=dict)
    # Depth task.
    max_depth: float = 0.0
    min_depth: float = 0.0
    integer_head_kind: str = ""  # "sigmoid" | "levels"
    levels: int = 0
    depth_outputs: str = ""  # "composed" (depth) | "separate" (integer, fractional)
    depth_camera: str = "fixed"  # one of DEPTH_CAMERA_MODELS
    canonical_focal_px: float = 0.0  # depth_camera canonical_*: the focal length the output assumes
    canonical_height_m: float = 0.0  # depth_camera canonical_focal_height: the camera height the output assumes
    camera_input: str = ""  # name of the [1, 2] camera input (CAMERA_INPUT_SHAPE); "" = the image is the only input
    # Segmentation task.
    class_names: list[str] = field(default_factory=list)
    class_colors: list[list[int]] = field(default_factory=list)
    ontology_version: str = ""
    seg_output: str = ""  # "logits" [1,C,h,w] | "class_id" [1,1,h,w] float ids
    # Free-form provenance (checkpoint path, training config hash, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    # SHA-256 (hex) of the serialized GraphProto, set by set_model_metadata; "" = written without one.
    content_sha256: str = ""

    @property
    def needs_camera(self) -> bool:
        """True when the output depth must be rescaled with the camera's intrinsics."""
        return self.task == "depth" and self.depth_camera != "fixed"

    @property
    def needs_camera_height(self) -> bool:
        """True when the output depth must also be rescaled with the camera's height above the ground."""
        return self.task == "depth" and self.depth_camera == "canonical_focal_height"

    @property
    def input_names(self) -> list[str]:
        """The graph's inputs in order: the image, then the camera input if there is one."""
        return [self.input_name, self.camera_input] if self.camera_input else [self.input_name]

    @property
    def input_hw(self) -> tuple[int, int]:
        if self.input_layout == "NCHW":
            return int(self.input_shape[2]), int(self.input_shape[3])
        return int(self.input_shape[1]), int(self.input_shape[2])

    def validate(self, source: str = "model") -> None:
        """Raise ModelFileError naming ``source`` when fields are inconsistent."""
        if self.task not in TASKS:
            raise ModelFileError(f"{source}: metadata task {self.task!r} is not one of {TASKS}")
        if self.format not in FORMATS:
            raise ModelFileError(f"{source}: metadata format {self.format!r} is not one of {FORMATS}")
        if len(self.input_shape) != 4:
            raise ModelFileError(f"{source}: metadata input_shape {self.input_shape} is not 4-D")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ModelFileError(f"{source}: metadata mean/std must be 3 values with std != 0")
        if self.task == "depth":
            if self.max_depth <= 0:
                raise ModelFileError(f"{source}: depth model metadata needs max_depth > 0")
            if self.integer_head_kind not in ("sigmoid", "levels"):
                raise ModelFileError(f"{source}: integer_head_kind {self.integer_head_kind!r} is not sigmoid/levels")
            if self.depth_outputs not in ("composed", "separate"):
                raise ModelFileError(f"{source}: depth_outputs {self.depth_outputs!r} is not composed/separate")
            if self.depth_camera not in DEPTH_CAMERA_MODELS:
                raise ModelFileError(f"{source}: depth_camera {self.depth_camera!r} is not one of {DEPTH_CAMERA_MODELS}")
            if self.depth_camera != "fixed" and not self.canonical_focal_px > 0:
                raise ModelFileError(f"{source}: depth_camera {self.depth_camera!r} needs canonical_focal_px > 0, "
                                     f"got {self.canonical_focal_px}")
            if self.depth_camera == "canonical_focal_height" and not self.canonical_height_m > 0:
                raise ModelFileError(f"{source}: depth_camera 'canonical_focal_height' needs canonical_height_m > 0, "
                                     f"got {self.canonical_height_m}")
        if self.camera_input:
            if self.task != "depth" or self.depth_camera != "canonical_focal_height":
                raise ModelFileError(f"{source}: a camera input ({self.camera_input!r}) needs a depth model with "
                                     f"depth_camera 'canonical_focal_height', got task {self.task!r}, depth_camera "
                                     f"{self.depth_camera!r}")
            if self.camera_input == self.input_name:
                raise ModelFileError(f"{source}: camera_input and input_name are both {self.input_name!r}")
        if self.task == "segmentation":
            if not self.class_names or len(self.class_names) != len(self.class_colors):
                raise ModelFileError(f"{source}: segmentation metadata needs class_names and one colour each")
            if self.seg_output not in ("logits", "class_id"):
                raise ModelFileError(f"{source}: seg_output {self.seg_output!r} is not logits/class_id")

    def to_props(self) -> dict[str, str]:
        """Flat string dict for ONNX ``metadata_props``."""
        props = {f"{PREFIX}schema_version": SCHEMA_VERSION}
        for key, value in asdict(self).items():
            props[PREFIX + key] = value if isinstance(value, str) else json.dumps(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse ``metadata_props`` / ``custom_metadata_map``; errors name ``source``."""
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not ours:
            raise ModelFileError(
                f"{source}: no '{PREFIX}*' metadata; export it with model-tools, or pass the preprocessing "
                "and output contract as node parameters"
            )
        ours.pop("schema_version", None)
        kwargs: dict[str, Any] = {}
        for name, spec in cls.__dataclass_fields__.items():
            if name not in ours:
                continue
            raw = ours[name]
            if spec.type in ("str", str):
                kwargs[name] = raw
            else:
                try:
                    kwargs[name] = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise ModelFileError(f"{source}: metadata field {PREFIX}{name} is not valid JSON: {raw!r}") from err
        missing = [n for n in ("task", "input_name", "input_shape", "output_names") if n not in kwargs]
        if missing:
            raise ModelFileError(f"{source}: metadata lacks {', '.join(PREFIX + m for m in missing)}")
        meta = cls(**kwargs)
        meta.validate(source)
        return meta


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """The ONNX ``ModelProto`` of ``path`` (external data not loaded).

    Raises:
        ModelFileError: the file is missing, empty, or not a readable ONNX model (corrupt or truncated).
    """
    import onnx

    model_path = Path(path)
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: model file does not exist")
    if model_path.stat().st_size == 0:
        raise ModelFileError(f"{model_path}: model file is empty")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as err:
        raise ModelFileError(f"{model_path}: not a readable ONNX model (corrupt or truncated?): {err}") from err
    if not model.graph.node and not model.graph.output:
        raise ModelFileError(f"{model_path}: not a readable ONNX model (empty graph; truncated file?)")
    return model


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """The ``perception.*`` metadata of an ONNX file, read with the onnx package.

    Raises:
        ModelFileError: the file is missing, not ONNX, or carries no valid metadata.
    """
    model = load_onnx(path)
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path))


def set_model_metadata(model: Any, meta: ModelMetadata) -> None:
    """Write ``meta`` into an ONNX ``ModelProto`` with the hash of its graph as it is now.

    Call it after the last change to the graph. Replaces the ``perception.*``
    props and keeps the others (e.g. ONNX Runtime's own keys).
    """
    meta.content_sha256 = hashlib.sha256(model.graph.SerializeToString()).hexdigest()
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in kept + list(meta.to_props().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


# ONNX ModelProto field number of `graph` (onnx.proto: `optional GraphProto graph = 7;`).
_GRAPH_FIELD = 7


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("varint runs past the end of the file")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def graph_sha256_of_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the graph bytes exactly as stored in the file (top-level protobuf fields walked, nothing parsed).

    Needs no onnx package. A protobuf writer stores the graph as the same
    bytes ``model.graph.SerializeToString()`` gives, so this equals the hash
    :func:`set_model_metadata` recorded unless the file changed since.

    Raises:
        ModelFileError: the file's top level is not valid protobuf (corrupt or truncated) or holds no graph.
    """
    model_path = Path(path)
    data = memoryview(model_path.read_bytes())
    digest = hashlib.sha256()
    found = False
    at = 0
    try:
        while at < len(data):
            key, at = _varint(data, at)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, at = _varint(data, at)
            elif wire == 1:
                at += 8
            elif wire == 5:
                at += 4
            elif wire == 2:
                size, at = _varint(data, at)
                if number == _GRAPH_FIELD:
                    digest.update(data[at:at + size])
                    found = True
                at += size
            else:
                raise ValueError(f"wire type {wire} at byte {at}")
            if at > len(data):
                raise ValueError("a field runs past the end of the file")
    except ValueError as err:
        raise ModelFileError(f"{model_path}: not a readable ONNX model (corrupt or truncated?): {err}") from err
    if not found:
        raise ModelFileError(f"{model_path}: not a readable ONNX model (no graph)")
    return digest.hexdigest()
