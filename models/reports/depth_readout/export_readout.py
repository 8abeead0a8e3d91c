"""Record of an experiment, not product code: export the shipped depth weights with another read-out.

    python models/reports/depth_readout/export_readout.py MODE OUT.onnx

MODE: ``argmax`` (what ``model-tools depth export`` does), ``expect`` (the softmax expectation of the level, the
quantity the training's ``depth`` term scores), ``wN`` (the expectation over the levels within N of the ArgMax),
``flip`` (the logits and fractional head averaged with those of the mirrored image, then ArgMax) or ``flipwN``.
It patches the network's read-out and the export module for this process and then runs
``model-tools depth export --variant separate`` on ``models/weights/depth_levels_r18_fp16``. The results are in
this folder's README.md. Run from the repository root with ``src/model_tools`` and ``src/perception_core`` on
``PYTHONPATH``.
"""

from __future__ import annotations

import sys

import torch

from model_tools.models import depth_net

MODE = sys.argv[1]
FLIP = MODE.startswith("flip")
READOUT = (MODE[4:] if FLIP else MODE) or "argmax"


def integer_value(self: depth_net.DualHeadDepthNet, logits: torch.Tensor) -> torch.Tensor:
    if READOUT == "argmax":
        return torch.argmax(logits, dim=1, keepdim=True).to(torch.float32) / float(self.levels - 1)
    probs = torch.softmax(logits.float(), dim=1)
    ks = torch.arange(self.levels, dtype=probs.dtype).view(1, -1, 1, 1)
    if READOUT == "expect":
        return (probs * ks).sum(1, keepdim=True) / float(self.levels - 1)
    radius = float(READOUT[1:])
    peak = torch.argmax(logits, dim=1, keepdim=True).to(torch.float32)
    near = probs * ((ks - peak).abs() <= radius).to(probs.dtype)
    return (near * ks).sum(1, keepdim=True) / near.sum(1, keepdim=True) / float(self.levels - 1)


def export_forward(self: depth_net.DepthExportModule, rgb: torch.Tensor,
                   camera: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if not FLIP:
        out = self.net(rgb, scales=(0,), camera=camera)
        return self.net.integer_value(out[("integer", 0)]), out[("fractional", 0)]
    both = torch.cat([rgb, rgb.flip(-1)], 0)
    cameras = None if camera is None else torch.cat([camera, camera], 0)
    out = self.net(both, scales=(0,), camera=cameras)
    logits, fractional = out[("integer", 0)], out[("fractional", 0)]
    logits = 0.5 * (logits[:1] + logits[1:].flip(-1))
    fractional = 0.5 * (fractional[:1] + fractional[1:].flip(-1))
    return self.net.integer_value(logits), fractional


if __name__ == "__main__":
    depth_net.DualHeadDepthNet.integer_value = integer_value
    depth_net.DepthExportModule.forward = export_forward
    from model_tools.cli import main

    sys.exit(main(["depth", "export", "--checkpoint", "models/weights/depth_levels_r18_fp16",
                   "--config", "models/reports/depth_levels_r18/config.yaml", "--out", sys.argv[2],
                   "--variant", "separate", "--overwrite"]))
