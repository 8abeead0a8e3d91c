"""Self-contained HTML evaluation report: tables, plots and sample frames embedded as base64 PNGs.

One file a person can open or mail anywhere. Figures use matplotlib's Agg
backend; images are encoded with cv2. A partial evaluation gets a red banner
at the top, so it is never mistaken for a complete one.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.bags.scoring import CELL_STATES
from model_tools.io_utils import atomic_write
from perception_core.costmap import UNKNOWN

# RGB per costmap cell state (unknown, FREE, CAUTION, BLOCKED, HAZARD).
CATEGORY_COLORS = np.array([[90, 90, 90], [40, 170, 60], [235, 200, 40], [210, 40, 40], [170, 40, 200]], np.uint8)
REPORT_IMAGE_WIDTH = 320


@dataclass
class SampleFrame:
    """What the report shows for one frame: input, prediction views and the two costmaps."""

    stamp_ns: int
    panels: dict[str, np.ndarray] = field(default_factory=dict)  # title -> RGB uint8 image


def costmap_rgb(category: np.ndarray) -> np.ndarray:
    """Colour a category grid (rows = grid y, cols = grid x) with forward up and left on the left."""
    states = np.asarray(category, np.int64) - UNKNOWN  # UNKNOWN -> 0, FREE -> 1, ...
    rgb = CATEGORY_COLORS[np.clip(states, 0, len(CATEGORY_COLORS) - 1)]
    return np.ascontiguousarray(rgb.transpose(1, 0, 2)[::-1, ::-1])


def fit_width(rgb: np.ndarray, width: int = REPORT_IMAGE_WIDTH) -> np.ndarray:
    """Resize for display (nearest, so label/costmap cells stay crisp)."""
    import cv2

    h, w = rgb.shape[:2]
    if w == width:
        return rgb
    height = max(1, round(h * width / w))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_NEAREST)


def png_data_uri(rgb: np.ndarray) -> str:
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def figure_data_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- plots


def latency_histogram(latencies: Mapping[str, Sequence[float]], names: Iterable[str]) -> str | None:
    plt = _pyplot()
    chosen = [n for n in names if latencies.get(n)]
    if not chosen:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for name in chosen:
        ax.hist(latencies[name], bins=30, alpha=0.6, label=f"{name} (p50 {np.median(latencies[name]):.1f})")
    ax.set_xlabel("ms per frame")
    ax.set_ylabel("frames")
    ax.set_title("Latency distribution")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_data_uri(fig)


def iou_bars(per_class_iou: Mapping[str, float | None]) -> str | None:
    plt = _pyplot()
    if not per_class_iou:
        return None
    names = list(per_class_iou)
    values = [np.nan if v is None else v for v in per_class_iou.values()]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.bar(range(len(names)), np.nan_to_num(values, nan=0.0), color="#3a7bd5")
    for i, v in enumerate(values):
        ax.text(i, (0 if math.isnan(v) else v) + 0.02, "n/a" if math.isnan(v) else f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("IoU")
    ax.set_title("Per-class IoU")
    fig.tight_layout()
    return figure_data_uri(fig)


def error_vs_depth(by_distance: Mapping[str, Any] | None) -> str | None:
    plt = _pyplot()
    if not by_distance:
        return None
    edges = np.asarray(by_distance["bin_edges_m"], float)
    centres = (edges[:-1] + edges[1:]) / 2
    mae = np.array([np.nan if v is None else v for v in by_distance["mean_abs_error_m"]], float)
    rel = np.array([np.nan if v is None else v for v in by_distance["mean_abs_rel"]], float)
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.plot(centres, mae, "o-", label="mean |error| (m)")
    ax.set_xlabel("ground-truth depth (m)")
    ax.set_ylabel("mean |error| (m)")
    twin = ax.twinx()
    twin.plot(centres, rel, "s--", color="#d55e00", label="mean abs rel")
    twin.set_ylabel("mean abs rel")
    ax.set_title("Depth error vs distance")
    fig.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return figure_data_uri(fig)


# --------------------------------------------------------------------------- HTML


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _table(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">' if uri else f"<p><i>{html.escape(alt)}: nothing to plot</i></p>"


STYLE = """
body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}.banner{background:#c62828;color:#fff;padding:0.8em;font-weight:bold;font-size:1.1em}
.ok{background:#2e7d32;color:#fff;padding:0.5em}.samples td{vertical-align:top;text-align:center}
.legend span{display:inline-block;padding:2px 8px;margin-right:4px;color:#fff}
"""


def render_html(
    title: str,
    metrics: Mapping[str, Any],
    latencies: Mapping[str, Sequence[float]],
    samples: Sequence[SampleFrame],
    extra_sections: Sequence[tuple[str, str]] = (),
) -> str:
    """The report as one HTML string (every image inline)."""
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if metrics.get("partial"):
        out.append(f"<div class='banner'>PARTIAL RESULTS: {html.escape(str(metrics.get('partial_reason', '')))} "
                   f"({metrics.get('frames_evaluated', 0)} frames evaluated). These numbers are NOT a complete "
                   "evaluation.</div>")
    else:
        out.append(f"<div class='ok'>Complete: {metrics.get('frames_evaluated', 0)} frames evaluated.</div>")
    run_rows = [(k, metrics.get(k)) for k in ("bag", "depth_model", "seg_model", "backend", "backend_used", "path",
                                              "frames_in_bag", "frames_evaluated", "frames_without_gt")
                if k in metrics]
    out.append("<h2>Run</h2>" + _table(run_rows, ["item", "value"]))
    for note in metrics.get("notes", []):
        out.append(f"<p><b>Note:</b> {html.escape(str(note))}</p>")

    depth = metrics.get("depth")
    out.append("<h2>Depth (Eigen metrics)</h2>")
    if depth:
        keys = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "n_valid"]
        out.append(_table([[depth.get(k) for k in keys]], keys))
        out.append(_img(error_vs_depth(metrics.get("depth_by_distance")), "error vs depth"))
    else:
        out.append("<p>No ground-truth depth in the bag: depth accuracy not scored.</p>")

    seg = metrics.get("segmentation")
    out.append("<h2>Segmentation</h2>")
    if seg:
        out.append(_table([[seg.get("miou"), seg.get("pixel_accuracy")]], ["mIoU", "pixel accuracy"]))
        out.append(_img(iou_bars(seg.get("per_class_iou", {})), "per-class IoU"))
    else:
        out.append("<p>No ground-truth labels in the bag: segmentation accuracy not scored.</p>")

    costmap = metrics.get("costmap")
    out.append("<h2>Costmap vs GT-derived costmap</h2>")
    if costmap:
        out.append("<p>The ground-truth costmap is the same <code>build_costmap</code> run on GT depth and labels. "
                   "Agreement over cells the GT costmap observed: "
                   f"<b>{_fmt(costmap.get('agreement_observed'))}</b>; over all cells: "
                   f"{_fmt(costmap.get('agreement_all_cells'))}.</p>")
        rows = [[name, v.get("precision"), v.get("recall"), v.get("gt_cells"), v.get("predicted_cells")]
                for name, v in costmap.get("per_category", {}).items()]
        out.append(_table(rows, ["category", "precision", "recall", "GT cells", "predicted cells"]))
        legend = "".join(f"<span style='background:rgb{tuple(int(c) for c in CATEGORY_COLORS[i])}'>{s}</span>"
                         for i, s in enumerate(CELL_STATES))
        out.append(f"<p class='legend'>Costmap colours: {legend} (forward is up)</p>")
    else:
        out.append("<p>No ground truth to build a reference costmap from.</p>")
    measures = metrics.get("costmap_measures")
    if measures:
        out.append("<h3>What the planner sees (bird's-eye ground truth)</h3>"
                   "<p>Against a bird's-eye view projected from the GT depth and labels at full resolution "
                   f"({measures['frames']} frames; cells with 0 &le; x &le; {measures['definition']['x_max_m']} m, "
                   f"tolerance {measures['definition']['tolerance_m']} m; see docs/costmap.md):</p>")
        names = ["obstacle_recall", "obstacle_precision", "object_recall", "holes", "false_lethal"]
        if measures.get("counts", {}).get("gt_drop_cells") or measures.get("counts", {}).get("sloped_clear_cells"):
            names += ["drop_recall", "false_lethal_on_slopes", "labelled_object_recall"]  # terrain was scored
        rows = [[name.replace("_", " "), measures[name], measures["goals"][name]] for name in names]
        out.append(_table(rows, ["measure", "value", "goal"]))
    by_range = metrics.get("costmap_by_range")
    if by_range:
        kinds = [k for k in ("labelled", "drop", "terrain") if any(by_range["counts"][f"gt_{k}_cells"])]
        out.append("<p>By distance ahead: obstacle recall of the GT obstacle cells by what makes them lethal "
                   "(labelled: their labels; drop: a seen brink; terrain: another step or slope), and the "
                   "precision of the predicted lethal cells:</p>")
        rows = [[f"{low:g}-{high:g}", *(by_range[f"recall_{k}"][i] for k in (*kinds, "all")),
                 by_range["precision_all"][i], by_range["counts"]["gt_all_cells"][i]]
                for i, (low, high) in enumerate(by_range["bands_m"])]
        out.append(_table(rows, ["x (m)", *(f"recall, {k}" for k in kinds), "recall, all", "precision",
                                 "GT obstacle cells"]))

    out.append("<h2>Latency per frame (ms)</h2>")
    lat = metrics.get("latency_ms", {})
    if lat:
        rows = [[name, s.get("count"), s.get("mean"), s.get("p50"), s.get("p90"), s.get("p99"), s.get("max")]
                for name, s in lat.items()]
        out.append(_table(rows, ["stage", "frames", "mean", "p50", "p90", "p99", "max"]))
        key = [n for n in ("total_ms", "end_to_end_ms", "depth_inference_ms", "seg_inference_ms", "costmap_ms")
               if n in latencies]
        out.append(_img(latency_histogram(latencies, key), "latency histogram"))

    for heading, body in extra_sections:
        out.append(f"<h2>{html.escape(heading)}</h2>{body}")

    if samples:
        out.append("<h2>Sample frames</h2><table class='samples'>")
        titles = list(samples[0].panels)
        out.append("<tr><th>stamp</th>" + "".join(f"<th>{html.escape(t)}</th>" for t in titles) + "</tr>")
        for sample in samples:
            cells = "".join(f"<td>{_img(png_data_uri(fit_width(sample.panels[t])), t)}</td>" if t in sample.panels
                            else "<td>-</td>" for t in titles)
            out.append(f"<tr><td>{sample.stamp_ns / 1e9:.3f} s</td>{cells}</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(path: str | os.PathLike[str], html_text: str, overwrite: bool = True) -> Path:
    """Write the HTML atomically (temp file, then rename)."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    return Path(path)
