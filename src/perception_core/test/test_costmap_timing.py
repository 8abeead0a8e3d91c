"""Pairing, flat-ground timing and the staleness watchdog on a fake clock (no wall-clock waits, no DDS)."""

from __future__ import annotations

import time

import pytest

from perception_core.costmap import DepthLabelSync, ExactStampPairer, StalenessWatchdog
from perception_core.errors import ConfigError


class FakeClock:
    """A clock the test steps: seconds as a float."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def built(work: list) -> list[tuple[str, str | None]]:
    return [(w.labels, w.depth) for w in work]


def test_labels_wait_for_their_depth_even_when_the_previous_depth_is_older_than_the_timeout() -> None:
    """The slow-depth case: a CPU depth model is slower than depth_timeout_s per frame; labels still wait."""
    clock = FakeClock()
    sync: DepthLabelSync[str] = DepthLabelSync(depth_timeout_s=0.5, clock=clock)
    assert sync.on_depth(1000, "D1000") == []  # a previous frame's depth, its labels long gone
    clock.now += 2.0
    assert sync.on_labels(2000, "L2000") == []
    clock.now += 0.25
    assert sync.poll() == [], "not yet silent for depth_timeout_s since the labels arrived"
    assert built(sync.on_depth(2000, "D2000")) == [("L2000", "D2000")]
    clock.now += 5.0
    assert sync.poll() == []


def test_a_silent_depth_stream_sends_waiting_labels_flat_ground_after_the_timeout() -> None:
    clock = FakeClock()
    sync: DepthLabelSync[str] = DepthLabelSync(depth_timeout_s=1.0, clock=clock)
    assert sync.on_labels(1, "L1") == []
    clock.now += 1.0
    assert sync.poll() == [] and not sync.depth_silent()
    clock.now += 0.01
    assert built(sync.poll()) == [("L1", None)] and sync.depth_silent()
    # The stream is known silent: the next labels go flat-ground at the next poll, not after another timeout.
    assert sync.on_labels(2, "L2") == []
    assert built(sync.poll()) == [("L2", None)]
    # Any depth message ends the silence: later labels get their full timeout again.
    sync.on_depth(2, "D2-late")  # its labels were already sent flat-ground: no pair
    assert sync.on_labels(3, "L3") == []
    clock.now += 0.5
    assert sync.poll() == []


def test_labels_whose_depth_never_comes_while_depth_flows_are_dropped_not_flat_ground() -> None:
    clock = FakeClock()
    sync: DepthLabelSync[str] = DepthLabelSync(depth_timeout_s=0.5, clock=clock)
    for n in range(1, 20):  # depth keeps flowing, but for other frames than the labels
        sync.on_depth(2000 + n, f"D{n}")
        sync.on_labels(3000 + n, f"L{n}")
        clock.now += 0.1
        assert sync.poll() == []
    assert sync.pairer.dropped >= 8


def test_without_the_fallback_silent_depth_never_gives_flat_ground_and_without_depth_labels_go_at_once() -> None:
    clock = FakeClock()
    strict: DepthLabelSync[str] = DepthLabelSync(depth_timeout_s=0.5, flat_ground_fallback=False, clock=clock)
    strict.on_labels(1, "L1")
    clock.now += 10.0
    assert strict.poll() == []
    no_depth: DepthLabelSync[str] = DepthLabelSync(use_depth=False, clock=clock)
    assert built(no_depth.on_labels(1, "L1")) == [("L1", None)]
    assert no_depth.on_depth(1, "D1") == []
    with pytest.raises(ConfigError, match="depth_timeout_s must be > 0"):
        DepthLabelSync(depth_timeout_s=0.0)


def test_poll_period_follows_the_timeout() -> None:
    assert DepthLabelSync(depth_timeout_s=2.0).poll_period_s == pytest.approx(0.1)
    assert DepthLabelSync(depth_timeout_s=0.2).poll_period_s == pytest.approx(0.05)


def test_watchdog_names_silent_streams_and_counts_never_seen_ones_from_its_start() -> None:
    clock = FakeClock()
    watchdog = StalenessWatchdog(1.0, ["depth", "labels", "costmap"], clock=clock)
    clock.now += 0.9
    watchdog.mark("labels")
    assert watchdog.silent() == {}
    clock.now += 0.2
    assert set(watchdog.silent()) == {"depth", "costmap"}
    assert watchdog.describe(watchdog.silent()) == "depth never received (1.1 s), costmap never received (1.1 s)"
    watchdog.mark("depth")
    clock.now += 1.5
    assert watchdog.describe({"depth": watchdog.silent()["depth"]}) == "depth silent 1.5 s"
    with pytest.raises(ValueError, match="unknown stream 'rgb'"):
        watchdog.mark("rgb")
    with pytest.raises(ConfigError, match="stale_timeout_s must be > 0"):
        StalenessWatchdog(0.0, ["depth"])


def test_pairer_pairs_identical_stamps_only() -> None:
    pairer: ExactStampPairer[str] = ExactStampPairer(capacity=2)
    assert pairer.add("depth", 100, "d100") is None
    assert pairer.add("labels", 101, "l101") is None
    assert pairer.add("labels", 100, "l100") == {"labels": "l100", "depth": "d100"}
    assert pairer.pending("labels") == [101]  # newer than the pair: still waiting
    assert pairer.add("depth", 101, "d101") == {"depth": "d101", "labels": "l101"}
    assert pairer.pending("depth") == [] and pairer.pending("labels") == []


def test_pairer_keeps_latest_few_and_drops_older_than_a_pair() -> None:
    pairer: ExactStampPairer[int] = ExactStampPairer(capacity=2)
    for stamp in (1, 2, 3):
        pairer.add("depth", stamp, stamp)
    assert pairer.pending("depth") == [2, 3] and pairer.dropped == 1
    assert pairer.add("labels", 1, 1) is None, "stamp 1 was evicted; no pair"
    assert pairer.add("labels", 3, 3) == {"labels": 3, "depth": 3}
    assert pairer.pending("depth") == [] and pairer.pending("labels") == []
    assert pairer.dropped == 3  # depth 1 (evicted), depth 2 and labels 1 (older than the pair)
    with pytest.raises(ValueError, match="unknown stream 'rgb'"):
        pairer.add("rgb", 1, 1)


def test_pairer_keeps_arrival_times_and_take_acts_like_a_completed_pair() -> None:
    pairer: ExactStampPairer[str] = ExactStampPairer(capacity=3)
    pairer.add("labels", 10, "l10", arrival=1.0)
    pairer.add("depth", 5, "d5", arrival=1.5)
    pairer.add("labels", 20, "l20", arrival=2.0)
    pairer.add("labels", 30, "l30", arrival=3.0)
    assert pairer.waiting("labels") == [(10, 1.0), (20, 2.0), (30, 3.0)]
    assert pairer.take("labels", 20) == "l20"
    assert pairer.pending("labels") == [30] and pairer.pending("depth") == []
    assert pairer.dropped == 2  # labels 10 and depth 5: older than the taken message
    with pytest.raises(KeyError, match="no message with stamp 20 is waiting on stream 'labels'"):
        pairer.take("labels", 20)
    pairer.add("labels", 30, "l30 again", arrival=4.0)  # a duplicate stamp replaces the message and its arrival
    assert pairer.waiting("labels") == [(30, 4.0)] and pairer.dropped == 3


def test_pairer_arrival_defaults_to_the_monotonic_clock() -> None:
    pairer: ExactStampPairer[str] = ExactStampPairer()
    before = time.monotonic()
    pairer.add("depth", 1, "d1")
    [(stamp, arrival)] = pairer.waiting("depth")
    assert stamp == 1 and before <= arrival <= time.monotonic()


def test_pairer_with_skew_prefers_exact_then_pairs_the_nearest_skipped_frame() -> None:
    ms = 1_000_000
    pairer: ExactStampPairer[str] = ExactStampPairer(capacity=3, max_skew_ns=120 * ms)
    assert pairer.add("labels", 100 * ms, "L100") is None
    assert pairer.add("labels", 200 * ms, "L200") is None
    assert pairer.add("depth", 200 * ms, "D200") == {"depth": "D200", "labels": "L200"}
    assert pairer.approximate_pairs == 0 and pairer.pending("labels") == []
    assert pairer.add("labels", 300 * ms, "L300") is None  # the depth node skipped 300 and delivers 400 next
    assert pairer.add("depth", 400 * ms, "D400") == {"depth": "D400", "labels": "L300"}
    assert pairer.approximate_pairs == 1
    assert pairer.add("labels", 700 * ms, "L700") is None  # beyond the skew bound nothing pairs
    assert pairer.add("depth", 900 * ms, "D900") is None
    with pytest.raises(ConfigError, match="max skew must be >= 0"):
        ExactStampPairer(max_skew_ns=-1)
