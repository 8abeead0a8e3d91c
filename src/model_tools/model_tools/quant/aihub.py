"""Optional: compile on Qualcomm AI Hub (``qai-hub`` client) instead of the local QNN EP.

AI Hub compiles on Qualcomm's servers for a named device and can profile on
real hardware. It needs network access and an API token (``qai-hub
configure --api_token ...`` writes ``~/.qai_hub/client.ini``), neither of which
this workspace has, so only the job *construction* is tested here (with a
labelled test double for the client); submission runs where a token exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_tools.io_utils import atomic_write
from perception_core.errors import BackendError, ConfigError, OutputExistsError
from perception_core.model_metadata import CAMERA_INPUT_SHAPE, ModelMetadata

# AI Hub's device name for the Dragonwing IQ-9075 evaluation kit (QCS9075, Hexagon v73).
IQ9075_DEVICE = "Dragonwing IQ-9075 EVK"
TARGET_RUNTIMES = ("qnn_context_binary", "onnx")
CLIENT_CONFIG = Path("~/.qai_hub/client.ini")


@dataclass
class AiHubCompileJob:
    """Everything ``qai_hub.submit_compile_job`` needs, built without the client."""

    model_path: str
    device_name: str
    options: str
    input_specs: dict[str, tuple[tuple[int, ...], str]]
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def build_compile_job(
    model_path: str | os.PathLike[str],
    metadata: ModelMetadata,
    *,
    device_name: str = IQ9075_DEVICE,
    target_runtime: str = "qnn_context_binary",
    extra_options: str = "",
) -> AiHubCompileJob:
    """The AI Hub compile job for an already quantized (QDQ) model.

    The QDQ model carries its own quantization, so no ``--quantize_*`` option is
    passed: AI Hub only converts it for the target runtime.
    """
    if target_runtime not in TARGET_RUNTIMES:
        raise ConfigError(f"AI Hub target runtime {target_runtime!r} is not one of {TARGET_RUNTIMES}")
    if metadata.format != "qdq":
        raise ConfigError(f"{model_path}: AI Hub compile takes the QDQ model (metadata format is {metadata.format!r})")
    options = f"--target_runtime {target_runtime}"
    if extra_options.strip():
        options += " " + extra_options.strip()
    return AiHubCompileJob(
        model_path=str(model_path),
        device_name=device_name,
        options=options,
        input_specs={metadata.input_name: (tuple(int(d) for d in metadata.input_shape), "float32"),
                     **({metadata.camera_input: (CAMERA_INPUT_SHAPE, "float32")} if metadata.camera_input else {})},
        name=f"{metadata.model_name or Path(model_path).stem}_{target_runtime}",
    )


def token_configured() -> bool:
    """Whether a qai-hub API token is configured on this machine."""
    return CLIENT_CONFIG.expanduser().is_file() or bool(os.environ.get("QAIHUB_CLIENT_INI"))


def submit_compile_job(
    job: AiHubCompileJob, out_path: str | os.PathLike[str], client: Any | None = None, overwrite: bool = False
) -> Path:
    """Submit ``job``, wait, and download the compiled model to ``out_path``.

    ``client`` is the ``qai_hub`` module (injected so tests can pass a double).

    Raises:
        BackendError: qai-hub is missing, no token is configured, or the job failed.
    """
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; refusing to overwrite it (pass --overwrite to replace it)")
    if client is None:
        if not token_configured():
            raise BackendError(f"AI Hub needs an API token: run `qai-hub configure --api_token TOKEN` "
                               f"(writes {CLIENT_CONFIG})")
        try:
            import qai_hub as client
        except ImportError as err:
            raise BackendError("compile --via ai-hub needs the qai-hub package (pip install qai-hub)") from err
    try:
        device = client.Device(job.device_name)
        submitted = client.submit_compile_job(
            model=job.model_path, device=device, options=job.options, input_specs=job.input_specs, name=job.name,
        )
        target = submitted.get_target_model()
    except Exception as err:
        raise BackendError(f"AI Hub compile job for {job.model_path} on {job.device_name!r} failed: {err}") from err
    if target is None:
        raise BackendError(f"AI Hub compile job for {job.model_path} produced no model (see the job page)")
    with atomic_write(out, overwrite=overwrite) as tmp:
        target.download(str(tmp))
    return out
