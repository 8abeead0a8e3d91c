"""Frame statistics, input-arrival accounting and the one set of health rules every node reports.

The rules (``frame_health``), in order; the first that holds gives the status:

1. ERROR ``stale``: the node withdrew its output because an input (or the
   output itself) has been silent for longer than its timeout, e.g. the
   costmap publishing an unknown grid after ``stale_timeout_s``;
2. ERROR: frames arrived but none has been processed (every one was dropped);
3. ERROR ``error``: a node-specific failure of the frames it does process
   (e.g. the costmap: no frame in the last 5 s observed any cell);
4. ERROR / WARN: input frames never arrived (``arrival_health``: at least half
   / any of the frames sent in the last 5 s were lost in transport, or the
   stream is slower than ``expected_rate_hz``, or silent while a rate is expected);
5. WARN ``warning``: a node-specific condition (e.g. the costmap's flat-ground
   fallback, rectification off on a distorted camera);
6. WARN: frames were dropped since the last report;
7. WARN: no frame processed yet, or none in the last 5 s;
8. OK otherwise, with the processing rate.
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


class ArrivalMonitor:
    """Accounts for the input frames a subscription should have had, and says which never arrived.

    Three sources, all cheap:

    - DDS sample-lost events (rclpy's ``message_lost`` QoS event; Fast DDS
      counts samples whose sequence numbers never completed, which is how an
      undersized transport loses camera frames): frames lost in transport.
    - The publisher's sequence number on each received frame
      (``MessageInfo.publication_sequence_number``, where the RMW fills it): a
      gap that DDS did not report lost is a frame the 1-deep queue replaced while
      the node was busy (latest frame wins, by design), not a loss.
    - The camera's header stamps against ``expected_rate_hz`` (0 = not checked):
      a stream slower than expected (a throttled or stalled camera, or losses
      that no layer reports) or silent.

    A loss is detected when a later frame arrives, so its event comes just
    before or just after that frame's callback: a gap is matched with lost
    events within ``MATCH_S`` of it, either way round, and one event may
    explain several gaps (Fast DDS reports losses in batches). On a loaded
    host the event can trail its frames by more than a second, hence 2 s.
    """

    MATCH_S = 2.0

    def __init__(self, window_s: float = RECENT_WINDOW_S) -> None:
        self.window_s = window_s
        self.received = 0
        self.lost = 0
        self.skipped = 0
        self._lost_events: deque[tuple[float, int]] = deque()  # (monotonic time, count) in the window
        self._skip_events: deque[list[float]] = deque()  # [monotonic time, count]; the last one may shrink
        self._unmatched_lost: deque[list[float]] = deque()  # [time, count] of lost events no gap explained yet
        self._frames: deque[tuple[float, int, int | None]] = deque()  # (monotonic time, stamp ns, sequence)
        self._last_sequence: int | None = None

    def on_lost(self, count: int) -> None:
        """DDS reported ``count`` more samples lost (the event's ``total_count_change``)."""
        if count <= 0:
            return
        now = time.monotonic()
        self.lost += count
        self._lost_events.append((now, count))
        for event in reversed(self._skip_events):  # gaps already counted as skipped, newest first
            if not count or now - event[0] > self.MATCH_S:
                break
            explained = min(count, int(event[1]))
            event[1] -= explained
            self.skipped -= explained
            count -= explained
        if count:
            self._unmatched_lost.append([now, count])

    def on_frame(self, stamp_ns: int, sequence: int | None = None) -> None:
        """A frame reached the callback; ``sequence`` is the publisher's, or None where the RMW gives none."""
        now = time.monotonic()
        self.received += 1
        while self._unmatched_lost and now - self._unmatched_lost[0][0] > self.MATCH_S:
            self._unmatched_lost.popleft()
        if sequence is not None and sequence > 0:
            if self._last_sequence is not None and sequence > self._last_sequence + 1:
                gap = sequence - self._last_sequence - 1
                while gap and self._unmatched_lost:  # lost events that came before this frame's callback
                    explained = min(gap, int(self._unmatched_lost[0][1]))
                    gap -= explained
                    self._unmatched_lost[0][1] -= explained
                    if self._unmatched_lost[0][1] == 0:
                        self._unmatched_lost.popleft()
                self.skipped += gap
                self._skip_events.append([now, gap])
            elif self._last_sequence is not None and sequence <= self._last_sequence:
                self._unmatched_lost.clear()  # a new publisher: the old one's losses explain none of its gaps
            self._last_sequence = sequence
        self._frames.append((now, int(stamp_ns), sequence if sequence else None))
        self._trim(now)

    def _trim(self, now: float) -> None:
        for events in (self._lost_events, self._skip_events, self._frames):
            while events and now - events[0][0] > self.window_s:
                events.popleft()

    def summary(self, expected_rate_hz: float = 0.0) -> dict[str, float]:
        """Numbers over the last window: received, lost, skipped (latest wins), sent, the camera's rate."""
        self._trim(time.monotonic())
        received = len(self._frames)
        lost = sum(n for _, n in self._lost_events)
        skipped = int(sum(n for _, n in self._skip_events))
        rate = 0.0
        if received >= 2:
            span_s = (self._frames[-1][1] - self._frames[0][1]) / 1e9
            first_seq, last_seq = self._frames[0][2], self._frames[-1][2]
            sent_between = (last_seq - first_seq) if first_seq and last_seq and last_seq > first_seq \
                else received - 1
            rate = sent_between / span_s if span_s > 0 else 0.0
        return {
            "frames_received_5s": float(received),
            "frames_lost_in_transport_5s": float(lost),
            "frames_skipped_latest_wins_5s": float(skipped),
            "frames_sent_5s": float(received + skipped + lost),
            "camera_rate_hz": rate,
            "expected_rate_hz": float(expected_rate_hz),
        }


def arrival_health(summary: Mapping[str, float], topic: str) -> tuple[int, str] | None:
    """ERROR/WARN for frames that never arrived, with the numbers; None when nothing is missing."""
    lost, sent = summary["frames_lost_in_transport_5s"], summary["frames_sent_5s"]
    expected, rate = summary["expected_rate_hz"], summary["camera_rate_hz"]
    if lost > 0:
        level = DiagnosticStatus.ERROR if lost >= 0.5 * sent else DiagnosticStatus.WARN
        return level, (f"{lost:.0f} of {sent:.0f} frames on {topic} were lost in transport in the last "
                       f"{RECENT_WINDOW_S:.0f} s (received {summary['frames_received_5s']:.0f}); "
                       "check the DDS transport profile (docs/bringup.md)")
    if expected > 0 and summary["frames_received_5s"] == 0:
        return DiagnosticStatus.ERROR, f"no frame on {topic} in the last {RECENT_WINDOW_S:.0f} s; expected {expected:g} Hz"
    if expected > 0 and summary["frames_received_5s"] >= 2 and rate < 0.8 * expected:
        return DiagnosticStatus.WARN, (f"{topic} arrives at {rate:.1f} Hz by its stamps; expected {expected:g} Hz "
                                       f"(received {summary['frames_received_5s']:.0f} in {RECENT_WINDOW_S:.0f} s)")
    return None


def frame_health(stats: FrameStats, summary: Mapping[str, float], warning: str | None = None,
                 ok_suffix: str = "", arrival: tuple[int, str] | None = None, stale: str | None = None,
                 error: str | None = None) -> tuple[int, str]:
    """(DiagnosticStatus level, message) by the module's rules, in their order.

    ``stale`` says which inputs went silent when the node withdrew its output, ``error`` and ``warning``
    are node-specific ERROR and WARN conditions, ``arrival`` the result of ``arrival_health``.
    """
    if stale:
        return DiagnosticStatus.ERROR, stale
    if stats.processed == 0 and stats.dropped > 0:
        return DiagnosticStatus.ERROR, f"every frame dropped: {stats.last_error}"
    if error:
        return DiagnosticStatus.ERROR, error
    if arrival is not None:
        return arrival
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
