"""ONNX Runtime QNN execution provider: registration and session options.

The QNN EP ships as a plugin library (``onnxruntime-qnn``). On x86_64 its
``libQnnHtp.so`` emulates the Hexagon HTP, so NPU numerics are checkable here.
Imported lazily: nodes that run on the CPU never load it.
"""

from __future__ import annotations

from typing import Any

from perception_core.errors import BackendError

EP_NAME = "QNNExecutionProvider"
# Dragonwing IQ-9075 (QCS9075): Hexagon v73; soc_model id per DATASETS.md.
DEFAULT_SOC_MODEL = "77"
DEFAULT_HTP_ARCH = "73"

_registered = False


def register_qnn_ep() -> Any:
    """Register the QNN plugin EP once; return the onnxruntime_qnn module."""
    global _registered
    import onnxruntime as ort

    try:
        import onnxruntime_qnn
    except ImportError as err:
        raise BackendError("backend 'npu' needs the onnxruntime-qnn package, which is not installed") from err
    if not _registered:
        try:
            ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
        except Exception as err:
            if "already registered" not in str(err):
                raise BackendError(f"could not register the QNN execution provider: {err}") from err
        _registered = True
    return onnxruntime_qnn


def qnn_session_options(
    *,
    disable_cpu_fallback: bool = True,
    soc_model: str = DEFAULT_SOC_MODEL,
    htp_arch: str = DEFAULT_HTP_ARCH,
    context_path: str | None = None,
    extra_provider_options: dict[str, str] | None = None,
) -> Any:
    """SessionOptions that put a model on the QNN HTP backend.

    With ``disable_cpu_fallback`` any node HTP cannot take fails session
    creation instead of silently running on the CPU. With ``context_path`` the
    session writes a QNN context-binary EPContext model there (ORT refuses to
    overwrite an existing file).
    """
    import onnxruntime as ort

    qnn = register_qnn_ep()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise BackendError("the QNN execution provider registered but reports no device")
    provider_options = {
        "backend_path": qnn.get_qnn_htp_path(),
        "soc_model": str(soc_model),
        "htp_arch": str(htp_arch),
    }
    provider_options.update(extra_provider_options or {})
    so = ort.SessionOptions()
    so.add_provider_for_devices(devices, provider_options)
    if disable_cpu_fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if context_path is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context_path))
        so.add_session_config_entry("ep.context_embed_mode", "1")
    return so
