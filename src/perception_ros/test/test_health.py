"""ArrivalMonitor and the arrival rules: frames lost in transport, replaced while busy, or slower than expected."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticStatus

from perception_ros.health import ArrivalMonitor, FrameStats, arrival_health, frame_health

PERIOD_NS = 100_000_000  # a 10 Hz camera


def test_sequence_gaps_not_reported_lost_are_frames_replaced_while_busy() -> None:
    monitor = ArrivalMonitor()
    for sequence in (1, 2, 5, 6, 9):  # 4 frames never reached the callback, DDS reported none lost
        monitor.on_frame(sequence * PERIOD_NS, sequence)
    summary = monitor.summary()
    assert (monitor.received, monitor.lost, monitor.skipped) == (5, 0, 4)
    assert summary["frames_sent_5s"] == 9 and summary["frames_skipped_latest_wins_5s"] == 4
    assert summary["camera_rate_hz"] == 10.0  # 8 sequence steps over 0.8 s of stamps: the camera's own rate
    assert arrival_health(summary, "cam") is None  # latest frame wins is by design, not a fault


def test_frames_lost_in_transport_are_a_warning_then_an_error_with_the_numbers() -> None:
    monitor = ArrivalMonitor()
    for sequence in (1, 2, 3, 5):
        monitor.on_frame(sequence * PERIOD_NS, sequence)
    monitor.on_lost(1)  # DDS: one sample never completed
    level, message = arrival_health(monitor.summary(), "camera/image_raw")
    assert level == DiagnosticStatus.WARN
    assert message.startswith("1 of 5 frames on camera/image_raw were lost in transport in the last 5 s (received 4)")
    assert monitor.skipped == 0  # the gap was the lost frame, not a busy skip
    monitor.on_lost(9)
    level, message = arrival_health(monitor.summary(), "camera/image_raw")
    assert level == DiagnosticStatus.ERROR and message.startswith("10 of 14 frames")


def test_a_stream_slower_than_expected_or_silent_is_flagged() -> None:
    monitor = ArrivalMonitor()
    assert arrival_health(monitor.summary(expected_rate_hz=30.0), "cam")[0] == DiagnosticStatus.ERROR  # silent
    for i in range(6):  # a new publisher every frame: no sequence numbers to compare (another RMW)
        monitor.on_frame(i * 3 * PERIOD_NS, None)
    summary = monitor.summary(expected_rate_hz=10.0)
    assert abs(summary["camera_rate_hz"] - 10 / 3) < 1e-6
    level, message = arrival_health(summary, "cam")
    assert level == DiagnosticStatus.WARN and message.startswith("cam arrives at 3.3 Hz by its stamps; expected 10 Hz")
    assert arrival_health(monitor.summary(expected_rate_hz=3.0), "cam") is None


def test_a_new_publisher_restarts_the_sequence_without_a_gap() -> None:
    monitor = ArrivalMonitor()
    for sequence in (7, 8, 1, 2):
        monitor.on_frame(sequence * PERIOD_NS, sequence)
    assert monitor.skipped == 0


def test_arrival_problems_rank_below_every_frame_dropped_and_above_drops() -> None:
    stats = FrameStats()
    stats.drop("bad encoding")
    summary = stats.summary()
    lost = (DiagnosticStatus.ERROR, "lost")
    assert frame_health(stats, summary, arrival=lost)[1].startswith("every frame dropped")
    stats.record(5.0)
    stats.drop("bad encoding")
    assert frame_health(stats, stats.summary(), arrival=lost) == lost


def test_lost_events_explain_the_gap_they_came_with_before_or_after_its_frame() -> None:
    monitor = ArrivalMonitor()
    monitor.on_frame(1 * PERIOD_NS, 1)
    monitor.on_frame(4 * PERIOD_NS, 4)  # gap of 2: counted as replaced while busy ...
    monitor.on_lost(2)  # ... until DDS says those two were lost
    assert (monitor.lost, monitor.skipped) == (2, 0)
    monitor.on_lost(1)  # a loss reported before the frame that reveals it
    monitor.on_frame(7 * PERIOD_NS, 7)  # gap of 2: one lost, one replaced
    assert (monitor.lost, monitor.skipped) == (3, 1)
    summary = monitor.summary()
    assert summary["frames_sent_5s"] == 7 and summary["frames_lost_in_transport_5s"] == 3


def test_one_lost_event_explains_several_gaps_so_no_frame_counts_twice() -> None:
    monitor = ArrivalMonitor()
    for sequence in (1, 4, 8, 9):  # gaps of 2 and 3, both counted as replaced while busy ...
        monitor.on_frame(sequence * PERIOD_NS, sequence)
    assert monitor.skipped == 5
    monitor.on_lost(4)  # ... until one batch of losses explains the 3 and 1 of the 2
    assert (monitor.received, monitor.lost, monitor.skipped) == (4, 4, 1)
    assert monitor.summary()["frames_sent_5s"] == 9


def test_losses_of_an_earlier_publisher_explain_none_of_a_new_ones_gaps() -> None:
    monitor = ArrivalMonitor()
    monitor.on_lost(28)  # a camera whose frames all got lost: no frame, no sequence
    monitor.MATCH_S = 0.0  # those losses are older than a match allows by the time the next camera starts
    monitor.on_frame(1 * PERIOD_NS, 1)
    monitor.on_frame(9 * PERIOD_NS, 9)
    assert (monitor.lost, monitor.skipped) == (28, 7)


def test_the_rules_apply_in_the_documented_order() -> None:
    """Each rule of the module docstring wins over every rule after it."""
    stats = FrameStats()
    stats.drop("bad encoding")
    lost = (DiagnosticStatus.WARN, "lost")
    everything = {"stale": "stopped asserting free space: labels silent 2.1 s", "error": "no frame observed any cell",
                  "arrival": lost, "warning": "flat-ground fallback"}
    assert frame_health(stats, stats.summary(), **everything) == (DiagnosticStatus.ERROR, everything["stale"])
    del everything["stale"]
    assert frame_health(stats, stats.summary(), **everything) == (DiagnosticStatus.ERROR,
                                                                  "every frame dropped: bad encoding")
    stats.record(5.0)
    assert frame_health(stats, stats.summary(), **everything) == (DiagnosticStatus.ERROR, everything["error"])
    del everything["error"]
    assert frame_health(stats, stats.summary(), **everything) == lost
    del everything["arrival"]
    assert frame_health(stats, stats.summary(), **everything) == (DiagnosticStatus.WARN, everything["warning"])
    stats.drop("bad encoding")
    assert frame_health(stats, stats.summary()) == (DiagnosticStatus.WARN, "dropping frames: bad encoding")
    assert frame_health(stats, stats.summary())[0] == DiagnosticStatus.OK  # drops were reported once
