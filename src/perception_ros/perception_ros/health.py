"""Frame statistics and the one set of health rules every node reports to ``/diagnostics``.

The rules (``frame_health``), in order:

- ERROR: frames arrived but none has been processed (every one was dropped);
- WARN: a node-specific condition (e.g. the costmap's flat-ground fallback);
- WARN: frames were dropped since the last report;
- WARN: no frame processed yet, or none in the last 5 s;
- OK otherwise, with the processing rate.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

DIAGNOSTICS_PERIOD_S = 1.0
RECENT_WINDOW_S = 5.0


class FrameStats:
    """Counters and a sliding window of frame times for stats and diagnostics."""

    def __init__(self, window: int = 50) -> None:
        self.processed = 0
        self.dropped = 0
        self._times: deque[tuple[float, float]] = deque(maxlen=window)  # (monotonic end, total ms)
        self._dropped_at_last_report = 0
        self.last_error = ""

    def record(self, total_ms: float) -> None:
        self.processed += 1
        self._times.append((time.monotonic(), total_ms))

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.last_error = reason

    def summary(self) -> dict[str, float]:
        """Rate and latency over the last 5 s, and drops since the previous call (one call per report)."""
        now = time.monotonic()
        recent = [(t, ms) for t, ms in self._times if now - t <= RECENT_WINDOW_S]
        rate = 0.0
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            rate = (len(recent) - 1) / (recent[-1][0] - recent[0][0])
        latencies = [ms for _, ms in recent]
        new_drops = self.dropped - self._dropped_at_last_report
        self._dropped_at_last_report = self.dropped
        return {
            "rate_hz": rate,
            "latency_ms_mean": float(np.mean(latencies)) if latencies else 0.0,
            "latency_ms_max": float(np.max(latencies)) if latencies else 0.0,
            "frames_in_last_5s": float(len(recent)),
            "drops_since_last_report": float(new_drops),
        }


def frame_health(stats: FrameStats, summary: Mapping[str, float], warning: str | None = None,
                 ok_suffix: str = "") -> tuple[int, str]:
    """(DiagnosticStatus level, message) by the module's rules; ``warning`` is a node-specific WARN."""
    if stats.processed == 0 and stats.dropped > 0:
        return DiagnosticStatus.ERROR, f"every frame dropped: {stats.last_error}"
    if warning:
        return DiagnosticStatus.WARN, warning
    if summary["drops_since_last_report"] > 0:
        return DiagnosticStatus.WARN, f"dropping frames: {stats.last_error}"
    if stats.processed == 0:
        return DiagnosticStatus.WARN, "no frames processed yet"
    if summary["frames_in_last_5s"] == 0:
        return DiagnosticStatus.WARN, f"no frames in the last {RECENT_WINDOW_S:.0f} s"
    return DiagnosticStatus.OK, f"{summary['rate_hz']:.1f} Hz{ok_suffix}"


def diagnostic_array(stamp: Any, name: str, hardware_id: str, level: int, message: str,
                     values: Mapping[str, Any]) -> DiagnosticArray:
    """A one-status DiagnosticArray; booleans are written ``true``/``false`` like other ROS tools."""
    status = DiagnosticStatus(
        level=level, name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v).lower() if isinstance(v, bool) else str(v)) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
