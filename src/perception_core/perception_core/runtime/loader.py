"""The one runtime loader: FP32 ONNX, INT8 QDQ ONNX or QNN context binary -> a runnable model.

Used by the nodes, offline evaluation and the INT8 comparison alike; imports no
torch and no ROS. ``onnxruntime-qnn`` is imported only when the NPU is tried.

Backends:

- ``cpu``: ONNX Runtime's CPU EP. A QNN context binary (EPContext model) holds
  HTP code only and cannot run here: that is a BackendError, said as such.
- ``npu``: the QNN HTP backend with CPU fallback disabled, so a model HTP cannot
  take fails at start-up (BackendError naming the file and ORT's reason) rather
  than silently running on the CPU.
- ``auto``: ``npu`` when the QNN EP is installed AND either the file is a
  context binary (only the NPU can run it) or the host is the real target
  (aarch64 Linux, where ``libQnnHtp.so`` drives the Hexagon NPU). Otherwise
  ``cpu``: on x86_64 the HTP backend is an emulator taking seconds per frame.
  When auto picks ``npu`` for a plain ONNX file and HTP refuses it, auto falls
  back to ``cpu`` with a warning (``npu`` never does). The choice and its reason
  are logged and kept in ``LoadedModel.backend_reason``.

Integrity: the graph's bytes in the file are hashed and compared with the
metadata's ``content_sha256`` (see perception_core.model_metadata); a
mismatch (flipped weight bytes, a damaged copy) is a ModelFileError. A model
written without a hash loads with a warning, and ``LoadedModel.content_check``
says it was not verified.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception_core.errors import BackendError, ModelFileError
from perception_core.model_metadata import CAMERA_INPUT_SHAPE, ModelMetadata, graph_sha256_of_file, load_onnx

LOG = logging.getLogger(__name__)
BACKENDS = ("auto", "npu", "cpu")
EP_CONTEXT_OP = "EPContext"
# Lets a host that is not aarch64 (or a test) steer `auto` without code changes.
AUTO_ENV = "MODEL_TOOLS_AUTO_BACKEND"
CONTENT_VERIFIED = "verified: the graph's SHA-256 matches the metadata's content_sha256"
CONTENT_UNVERIFIED = "not verified: the metadata carries no content_sha256 (written by an older or another tool)"
CONTENT_FOREIGN_CONTEXT = ("not verified: a QNN context binary generated outside `model-tools compile`; its metadata "
                           "(content_sha256 included) was copied from the source model")


@dataclass
class LoadedModel:
    """An ONNX Runtime session plus the contract its metadata states."""

    path: Path
    metadata: ModelMetadata
    backend_requested: str
    backend_used: str  # "npu" | "cpu"
    backend_reason: str
    session: Any = field(repr=False)
    load_ms: float = 0.0
    content_check: str = CONTENT_UNVERIFIED  # CONTENT_VERIFIED or CONTENT_UNVERIFIED

    @property
    def input_name(self) -> str:
        return self.metadata.input_name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.metadata.input_shape)

    @property
    def output_names(self) -> list[str]:
        return list(self.metadata.output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; returns the metadata's outputs by name.

        Raises:
            BackendError: ONNX Runtime rejected the inputs or failed, naming the file.
        """
        try:
            values = self.session.run(self.metadata.output_names, feeds)
        except Exception as err:
            raise BackendError(f"{self.path}: inference on backend {self.backend_used!r} failed: {err}") from err
        return dict(zip(self.metadata.output_names, values, strict=True))


def is_target_host() -> bool:
    """True on the vehicle-like host where HTP is real hardware (aarch64 Linux)."""
    return platform.system() == "Linux" and platform.machine().lower() in ("aarch64", "arm64")


def qnn_available() -> bool:
    """Whether the onnxruntime-qnn plugin is installed (imports nothing heavy)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime_qnn") is not None


def is_context_binary(path: str | os.PathLike[str]) -> bool:
    """Whether the ONNX file holds a QNN context binary (EPContext nodes).

    Raises:
        ModelFileError: the file is not a readable ONNX model.
    """
    return _read_graph_facts(Path(path))["context_binary"]


def _read_graph_facts(path: Path) -> dict[str, Any]:
    """Parse the file's protobuf to spot EPContext nodes and corruption early."""
    try:
        import onnx  # noqa: F401 - only to learn whether load_onnx can run
    except ImportError:  # the vehicle may run ORT without the onnx package: rely on metadata then
        return {"context_binary": None}
    model = load_onnx(path)
    return {"context_binary": any(n.op_type == EP_CONTEXT_OP for n in model.graph.node)}


def verify_content(path: Path, meta: ModelMetadata, context_binary: bool) -> str:
    """Compare the graph's bytes in the file with the metadata's hash; returns the verdict for LoadedModel.

    ONNX Runtime's context generation copies the source model's metadata into
    the context model unchanged; such a file (a context binary whose metadata
    format is not ``qnn_context``) has no hash of its own and is not verified.

    Raises:
        ModelFileError: the hashes differ (weights or nodes changed after the file was written).
    """
    if context_binary and meta.format != "qnn_context":
        LOG.warning("%s: model integrity %s", path, CONTENT_FOREIGN_CONTEXT)
        return CONTENT_FOREIGN_CONTEXT
    if not meta.content_sha256:
        LOG.warning("%s: model integrity %s", path, CONTENT_UNVERIFIED)
        return CONTENT_UNVERIFIED
    actual = graph_sha256_of_file(path)
    if actual != meta.content_sha256:
        raise ModelFileError(
            f"{path}: content hash mismatch: the graph's SHA-256 is {actual[:16]}..., the metadata says "
            f"{meta.content_sha256[:16]}...; weights or nodes changed after the file was written (damaged copy?). "
            "Copy or export the model again"
        )
    return CONTENT_VERIFIED


def choose_auto_backend(context_binary: bool) -> tuple[str, str]:
    """The backend `auto` picks for this host and file, with the reason (see module doc)."""
    forced = os.environ.get(AUTO_ENV, "").strip().lower()
    if forced in ("npu", "cpu"):
        return forced, f"{AUTO_ENV}={forced}"
    if not qnn_available():
        if context_binary:
            return "npu", "file is a QNN context binary (only the NPU can run it), though onnxruntime-qnn is missing"
        return "cpu", "onnxruntime-qnn is not installed"
    if context_binary:
        return "npu", "file is a QNN context binary"
    if is_target_host():
        return "npu", f"QNN EP installed on the target ({platform.machine()})"
    return "cpu", (f"host is {platform.machine()}, where QNN HTP is only an emulator (seconds per frame); "
                   "ask for backend 'npu' to use it anyway")


def _cpu_session(path: Path, num_threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if num_threads > 0:
        so.intra_op_num_threads = num_threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _npu_session(path: Path, num_threads: int) -> Any:
    import onnxruntime as ort

    from perception_core.runtime.qnn import qnn_session_options

    so = qnn_session_options(disable_cpu_fallback=True)
    if num_threads > 0:
        so.intra_op_num_threads = num_threads
    return ort.InferenceSession(str(path), sess_options=so)


def _open_session(path: Path, backend: str, num_threads: int) -> Any:
    """Create the session, translating ORT's errors into ours (file and reason named)."""
    try:
        return _npu_session(path, num_threads) if backend == "npu" else _cpu_session(path, num_threads)
    except BackendError as err:
        raise BackendError(f"{path}: backend {backend!r} unavailable: {err}") from err
    except Exception as err:
        text = str(err)
        if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text or ("Load model" in text and "failed" in text):
            raise ModelFileError(f"{path}: not a readable ONNX model (corrupt or truncated?): {text}") from err
        if backend == "npu":
            raise BackendError(
                f"{path}: QNN HTP (CPU fallback disabled) cannot run this model: {text.strip()}"
            ) from err
        if EP_CONTEXT_OP in text:
            raise BackendError(f"{path}: is a QNN context binary; it runs only on backend 'npu', not 'cpu'") from err
        raise BackendError(f"{path}: ONNX Runtime CPU EP cannot load this model: {text.strip()}") from err


def _validate(path: Path, session: Any, meta: ModelMetadata, expected_task: str | None) -> None:
    """Check the session's real inputs/outputs against the metadata and the caller's task."""
    if expected_task is not None and meta.task != expected_task:
        raise ModelFileError(f"{path}: model task is {meta.task!r}, but this consumer needs a {expected_task!r} model")
    if meta.input_layout != "NCHW":
        raise ModelFileError(f"{path}: input layout {meta.input_layout!r} unsupported; export NCHW")
    inputs = session.get_inputs()
    if [i.name for i in inputs] != meta.input_names:
        raise ModelFileError(f"{path}: graph inputs are {[i.name for i in inputs]} but the metadata says "
                             f"{meta.input_names} (input_name{', camera_input' if meta.camera_input else ''})")
    if meta.camera_input:
        camera = inputs[1]
        if list(camera.shape) != list(CAMERA_INPUT_SHAPE) or camera.type != "tensor(float)":
            raise ModelFileError(f"{path}: camera input {camera.name!r} is {camera.type} {list(camera.shape)}; "
                                 f"the runtime feeds tensor(float) {list(CAMERA_INPUT_SHAPE)}")
    actual = inputs[0]
    shape = list(actual.shape)
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ModelFileError(f"{path}: input {actual.name!r} shape {shape} is not a static 4-D NCHW shape")
    if shape != [int(d) for d in meta.input_shape]:
        raise ModelFileError(f"{path}: input {actual.name!r} shape {shape} differs from metadata input_shape "
                             f"{meta.input_shape}")
    if shape[0] != 1 or shape[1] != 3:
        raise ModelFileError(f"{path}: input shape {shape} must be [1, 3, H, W] (one RGB image)")
    if actual.type != "tensor(float)":
        raise ModelFileError(f"{path}: input {actual.name!r} is {actual.type}; the runtime feeds tensor(float)")
    graph_outputs = {o.name: o for o in session.get_outputs()}
    missing = [n for n in meta.output_names if n not in graph_outputs]
    if missing:
        raise ModelFileError(f"{path}: metadata output_names {missing} are not graph outputs "
                             f"(graph has {sorted(graph_outputs)})")
    want = {"composed": 1, "separate": 2, "logits": 1, "class_id": 1}
    mode = meta.depth_outputs if meta.task == "depth" else meta.seg_output
    if len(meta.output_names) != want[mode]:
        raise ModelFileError(f"{path}: a {mode!r} {meta.task} model needs {want[mode]} output(s), metadata lists "
                             f"{meta.output_names}")


def load_model(
    path: str | os.PathLike[str],
    backend: str = "auto",
    expected_task: str | None = None,
    num_threads: int = 0,
) -> LoadedModel:
    """Open a model file on the requested backend and check it against its metadata.

    Args:
        path: FP32 ONNX, QDQ ONNX or EPContext (QNN context binary) ONNX file.
        backend: ``auto`` | ``npu`` | ``cpu`` (see the module doc for auto's rule).
        expected_task: ``depth`` | ``segmentation`` to reject the wrong kind of model.
        num_threads: ORT intra-op threads (0 = ONNX Runtime's default).

    Raises:
        ModelFileError: missing, corrupt or truncated file; graph bytes that do not
            match the metadata's content hash; metadata missing or inconsistent
            with the graph or with ``expected_task``.
        BackendError: the backend cannot run the model (file and reason named).
    """
    model_path = Path(path)
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r} is not one of {BACKENDS}")
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: model file does not exist")
    if model_path.stat().st_size == 0:
        raise ModelFileError(f"{model_path}: model file is empty")
    context_binary = _read_graph_facts(model_path)["context_binary"]

    if backend == "auto":
        chosen, reason = choose_auto_backend(bool(context_binary))
    else:
        chosen, reason = backend, "requested"
    if chosen == "cpu" and context_binary:
        raise BackendError(f"{model_path}: is a QNN context binary (EPContext); it runs only on backend 'npu', "
                           "not 'cpu'. Use the FP32 or QDQ ONNX file for the CPU")

    start = time.perf_counter()
    try:
        session = _open_session(model_path, chosen, num_threads)
    except BackendError as err:
        if not (backend == "auto" and chosen == "npu" and not context_binary):
            raise
        LOG.warning("%s: auto backend: NPU refused the model (%s); falling back to cpu", model_path, err)
        chosen, reason = "cpu", f"NPU refused the model ({err}); fell back to cpu"
        session = _open_session(model_path, chosen, num_threads)
    load_ms = (time.perf_counter() - start) * 1e3

    meta = ModelMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map), str(model_path))
    if context_binary is None:  # no onnx package: trust the metadata's format field
        context_binary = meta.format == "qnn_context"
        if context_binary and chosen == "cpu":
            raise BackendError(f"{model_path}: is a QNN context binary; it runs only on backend 'npu', not 'cpu'")
    content_check = verify_content(model_path, meta, bool(context_binary))
    _validate(model_path, session, meta, expected_task)
    LOG.info("%s: %s model on backend %s (requested %s: %s), loaded in %.0f ms",
             model_path, meta.task, chosen, backend, reason, load_ms)
    return LoadedModel(
        path=model_path,
        metadata=meta,
        backend_requested=backend,
        backend_used=chosen,
        backend_reason=reason,
        session=session,
        load_ms=load_ms,
        content_check=content_check,
    )
