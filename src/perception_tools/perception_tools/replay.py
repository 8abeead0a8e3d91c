"""`perception-tools replay`: play a rosbag2 into the live ROS graph with its recorded timing.

Stands in for ``ros2 bag play`` where rosbag2 is not installable (on the
vehicle, use ``ros2 bag play``; see docs/replay.md). Messages are published
as the CDR bytes stored in the bag (rclpy publishers accept serialized data),
so nothing is deserialised on the way. Topics whose message package is not
importable here (e.g. tf2_msgs for /tf_static) are skipped with one warning
each; the costmap node then takes the camera mount from parameters, and
``camera_mount_from_bag`` reads the mount out of the bag for them.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_tools.bags.bagio import (
    BagSummary,
    RawMessage,
    ReadTally,
    iter_raw,
    message_class,
    require_topics,
    summarize_bag,
)
from perception_core.errors import BagError, ConfigError

# Called after each publish with (topic, bag timestamp ns, wall-clock time.time_ns() of the publish, raw CDR bytes).
PublishHook = Callable[[str, int, int, bytes], None]


@dataclass
class ReplayStats:
    """What one replay did: counts per topic, loops, how far behind schedule it fell."""

    published: dict[str, int] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> msgtype not importable here
    loops_completed: int = 0
    max_lateness_ms: float = 0.0
    wall_s: float = 0.0
    stopped_early: bool = False
    read_error: str | None = None  # the bag broke while playing: what was not published, and why
    unread: dict[str, int] = field(default_factory=dict)  # topic -> messages of the bag that could not be read

    @property
    def total_published(self) -> int:
        return sum(self.published.values())

    @property
    def partial(self) -> bool:
        """The replay did not publish every message of the bag (it is damaged)."""
        return self.read_error is not None


class BagReplayer:
    """Publishes a bag's messages through an rclpy node on the recorded schedule.

    The node is passed in (it is only used to create publishers), so the
    replayer can share a process and executor with the nodes under test.
    ``play`` blocks; ``start`` runs it in a daemon thread and ``stop`` ends it.
    """

    def __init__(
        self,
        node: Any,
        bag: str | Path,
        *,
        rate: float = 1.0,
        loop: bool = False,
        topics: Iterable[str] | None = None,
        start_delay_s: float = 0.0,
        qos_depth: int = 10,
        on_publish: PublishHook | None = None,
        first_topics: Iterable[str] = (),
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ConfigError(f"replay rate must be a positive number, got {rate}")
        if start_delay_s < 0:
            raise ConfigError(f"replay start delay must be >= 0 s, got {start_delay_s}")
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.node = node
        self.bag = Path(bag)
        self.summary: BagSummary = summarize_bag(self.bag)
        self.rate = float(rate)
        self.loop = loop
        self.start_delay_s = float(start_delay_s)
        self.on_publish = on_publish
        self.first_topics = list(first_topics)
        wanted = list(topics) if topics else sorted(self.summary.topics)
        require_topics(self.summary, wanted, purpose="for replay")
        self.stats = ReplayStats()
        self._publishers: dict[str, Any] = {}
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=qos_depth,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )
        warned_types: set[str] = set()
        for topic in wanted:
            msgtype = self.summary.topics[topic].msgtype
            msg_class = message_class(msgtype)
            if msg_class is None:
                self.stats.skipped_topics[topic] = msgtype
                if msgtype not in warned_types:
                    warned_types.add(msgtype)
                    node.get_logger().warning(
                        f"replay: skipping {topic} ({msgtype}): that message package is not importable here"
                    )
                continue
            self._publishers[topic] = node.create_publisher(msg_class, topic, qos)
            self.stats.published[topic] = 0
        if not self._publishers:
            raise BagError(f"bag {self.bag}: none of the topics {', '.join(wanted)} has a message type importable here")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def topics(self) -> list[str]:
        """The topics this replayer publishes (skipped ones excluded)."""
        return list(self._publishers)

    def wait_for_subscribers(self, topics: Iterable[str] | None = None, timeout_s: float = 10.0) -> bool:
        """Block until each topic (default: all published) has at least one matched subscriber."""
        names = list(topics) if topics is not None else self.topics
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._publishers[t].get_subscription_count() > 0 for t in names):
                return True
            if self._stop.wait(0.05):
                return False
        return False

    def play(self, max_loops: int | None = None) -> ReplayStats:
        """Publish the bag (looping if asked, at most ``max_loops`` passes); return the stats.

        A bag that cannot be read to its end ends the replay after what could
        be read: ``stats.read_error`` says why and ``stats.unread`` counts the
        messages per topic that were not published.
        """
        started = time.monotonic()
        if self._stop.wait(self.start_delay_s):
            self.stats.stopped_early = True
            return self.stats
        loop_start = time.monotonic()
        period_ns = self._mean_gap_ns()
        while not self._stop.is_set():
            first_ns: int | None = None
            last_ns = 0
            tally = ReadTally()
            try:
                for message in self._ordered(iter_raw(self.bag, topics=self.topics, tally=tally)):
                    if first_ns is None:
                        first_ns = message.timestamp_ns
                    last_ns = message.timestamp_ns
                    due = loop_start + (message.timestamp_ns - first_ns) / 1e9 / self.rate
                    delay = due - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    if self._stop.is_set():
                        break
                    lateness_ms = max(0.0, -delay) * 1000.0
                    self.stats.max_lateness_ms = max(self.stats.max_lateness_ms, lateness_ms)
                    self._publishers[message.topic].publish(message.data)
                    published_at = time.time_ns()
                    self.stats.published[message.topic] += 1
                    if self.on_publish is not None:
                        self.on_publish(message.topic, message.timestamp_ns, published_at, message.data)
            except BagError as err:
                self.stats.read_error = str(err)
                self.stats.unread = tally.unread()
                break
            if self._stop.is_set():
                self.stats.stopped_early = True
                break
            self.stats.loops_completed += 1
            if not self.loop or (max_loops is not None and self.stats.loops_completed >= max_loops):
                break
            # The next pass starts one mean message gap after this one's last message, like a continuing recording.
            loop_start += ((last_ns - (first_ns or 0)) + period_ns) / 1e9 / self.rate
        self.stats.wall_s = time.monotonic() - started
        return self.stats

    def _ordered(self, messages: Iterable[RawMessage]) -> Iterator[RawMessage]:
        """Messages in bag order, except that ``first_topics`` lead within one identical timestamp.

        A bag does not define an order among messages stored at the same
        instant; putting camera_info before its image lets nodes that need the
        intrinsics use the very first frame.
        """
        if not self.first_topics:
            yield from messages
            return
        rank = {topic: i for i, topic in enumerate(self.first_topics)}
        group: list[RawMessage] = []
        for message in messages:
            if group and message.timestamp_ns != group[0].timestamp_ns:
                yield from sorted(group, key=lambda m: rank.get(m.topic, len(rank)))
                group = []
            group.append(message)
        yield from sorted(group, key=lambda m: rank.get(m.topic, len(rank)))

    def _mean_gap_ns(self) -> int:
        counts = max(1, max(self.summary.topics[t].count for t in self.topics) - 1)
        return int((self.summary.end_ns - self.summary.start_ns) / counts)

    def start(self, max_loops: int | None = None) -> threading.Thread:
        """Play in a daemon thread (publishing needs no executor spin)."""
        if self._thread is not None:
            raise RuntimeError("replay already started")
        self._thread = threading.Thread(target=self.play, kwargs={"max_loops": max_loops}, name="bag-replay", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ask a running replay to stop after the message in flight."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the replay thread; True when it has finished."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def finished(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (metadata.yaml) or .mcap/.db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2.0 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="start again at the end until interrupted")
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC", help="only these topics (default: all)")
    parser.add_argument("--start-delay", type=float, default=0.0, metavar="S",
                        help="seconds to wait after creating publishers so subscribers can match")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds for every topic to have a subscriber before playing")
    parser.add_argument("--qos-depth", type=int, default=10, help="publisher history depth (reliable, volatile)")
    parser.add_argument("--first-topics", nargs="+", default=[], metavar="TOPIC",
                        help="publish these first among messages stored at the same instant (e.g. camera_info)")


def run(args: argparse.Namespace) -> int:
    from perception_ros.spin import interrupts_deferred

    with interrupts_deferred() as interrupted:  # a Ctrl-C while rclpy loads ends the tool, without a traceback
        import rclpy
        from rclpy.executors import ExternalShutdownException

        from model_tools.bags.bagio import camera_mount_from_bag
    if interrupted.is_set():
        return 0
    rclpy.init()
    node = None
    try:
        node = rclpy.create_node("bag_replay")
        replayer = BagReplayer(
            node, args.bag, rate=args.rate, loop=args.loop, topics=args.topics,
            start_delay_s=args.start_delay, qos_depth=args.qos_depth, first_topics=args.first_topics,
        )
        summary = replayer.summary
        print(f"replay {args.bag}: {summary.message_count} messages over {summary.duration_s:.2f} s, "
              f"rate {args.rate}x{' looping' if args.loop else ''}")
        for topic in replayer.topics:
            print(f"  {topic:<32} {summary.topics[topic].msgtype} ({summary.topics[topic].count})")
        for topic, msgtype in replayer.stats.skipped_topics.items():
            print(f"  {topic:<32} SKIPPED ({msgtype} not importable here)")
        mount = camera_mount_from_bag(args.bag)
        if mount is not None:
            print("  camera mount in bag (set these costmap node parameters if the node has no TF): "
                  + ", ".join(f"{k}={v:.4g}" for k, v in mount.items()))
        if args.wait_for_subscribers > 0 and not replayer.wait_for_subscribers(timeout_s=args.wait_for_subscribers):
            print(f"  warning: not every topic had a subscriber after {args.wait_for_subscribers} s; playing anyway")
        try:
            stats = replayer.play()
        except (KeyboardInterrupt, ExternalShutdownException):
            replayer.stop()
            stats = replayer.stats
            stats.stopped_early = True
        print(f"published {stats.total_published} messages in {stats.wall_s:.2f} s "
              f"({stats.loops_completed} full pass(es), max lateness {stats.max_lateness_ms:.1f} ms)"
              + (" - stopped early" if stats.stopped_early else ""))
        if stats.partial:
            print(f"perception-tools replay: error: partial replay, {stats.read_error}", file=sys.stderr)
            return 1
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
