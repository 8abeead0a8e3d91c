"""`perception-tools record`: write chosen topics of the live graph to a rosbag2 (mcap or sqlite3).

Subscriptions are raw (``raw=True``): the CDR bytes the rmw delivers are
written as they are, so nothing is deserialised. The bag's message
definitions come from a rosbags typestore that also knows perception_msgs
(registered from their .msg files), so the bag is self-describing and reads
back anywhere. The bag is written under a temporary name beside the target
and renamed into place on ``stop``, so a killed recording never leaves a
bag that looks complete. MCAP chunks carry CRCs (``write_mcap_chunk_crcs``),
so a reader detects later damage; SQLite storage has no per-page checksum.
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_tools.bags.bagio import header_stamp_from_cdr, make_typestore, message_class, write_mcap_chunk_crcs
from model_tools.io_utils import check_output_folder
from perception_core.errors import BagError, ConfigError, OutputExistsError

STORAGES = ("mcap", "sqlite3")


@dataclass
class RecordStats:
    """What a recording holds: messages per topic, and topics that never appeared."""

    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    never_seen: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class BagRecorder:
    """Records topics of the ROS graph through an rclpy node into a new bag.

    Topic types come from ``types`` or, for topics not listed there, from graph
    discovery (a topic is subscribed as soon as a publisher of it appears).
    The node must be spun by the caller's executor; callbacks write under a
    lock, so ``stop`` may be called from another thread.
    """

    def __init__(
        self,
        node: Any,
        out: str | Path,
        topics: Iterable[str],
        *,
        types: Mapping[str, str] | None = None,
        storage: str = "mcap",
        overwrite: bool = False,
        qos_depth: int = 100,
        custom_data: Mapping[str, str] | None = None,
        discovery_period_s: float = 0.2,
    ) -> None:
        if storage not in STORAGES:
            raise ConfigError(f"record storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.topics = list(dict.fromkeys(topics))
        if not self.topics:
            raise ConfigError("record needs at least one topic")
        self.node = node
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise OutputExistsError(f"{self.out} exists; refusing to overwrite it (pass --overwrite to replace it)")
        check_output_folder(self.out, "--out")
        self.overwrite = overwrite
        self.storage = storage
        self.qos_depth = qos_depth
        self.custom_data = dict(custom_data or {})
        self._types = dict(types or {})
        self._typestore = make_typestore()
        self._lock = threading.Lock()
        self._stage = self.out.parent / f".{self.out.name}.recording-{os.getpid()}"
        self._writer: Any = None
        self._connections: dict[str, Any] = {}
        self._subscriptions: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self._last_stamp_ns: dict[str, int] = {}
        self._last_header_stamp_ns: dict[str, int | None] = {}
        self._timer: Any = None
        self._discovery_period_s = discovery_period_s
        self._closed = False

    # ----------------------------------------------------------------- life cycle

    def start(self) -> BagRecorder:
        """Open the staging bag and subscribe to every topic whose type is known or discoverable now."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        if self._writer is not None:
            raise RuntimeError("recorder already started")
        if self._stage.exists():
            shutil.rmtree(self._stage)
        self._stage.mkdir(parents=True)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self._stage / self.out.name, version=9, storage_plugin=plugin)
        for key, value in self.custom_data.items():
            self._writer.set_custom_data(key, str(value))
        self._writer.open()
        self._discover()
        self._timer = self.node.create_timer(self._discovery_period_s, self._discover)
        return self

    def stop(self) -> RecordStats:
        """Unsubscribe, close the bag and move it into place; return what was recorded."""
        with self._lock:
            if self._closed:
                raise RuntimeError("recorder already stopped")
            self._closed = True
            self._teardown()
            writer, self._writer = self._writer, None
            if writer is None:
                raise RuntimeError("recorder was never started")
            try:
                writer.close()
            except Exception as err:  # rosbags writer failures: report with the bag's name
                raise BagError(f"could not finish bag {self.out}: {type(err).__name__}: {err}") from err
            if self.storage == "mcap":
                write_mcap_chunk_crcs(self._stage / self.out.name)
            if self.out.exists():
                if not self.overwrite:
                    raise OutputExistsError(f"{self.out} appeared while recording; the bag is left at {self._stage}")
                shutil.rmtree(self.out) if self.out.is_dir() else self.out.unlink()
            os.replace(self._stage / self.out.name, self.out)
            self._stage.rmdir()
        return self.stats()

    def abort(self) -> None:
        """Drop the recording: nothing appears at the target path."""
        with self._lock:
            self._closed = True
            self._teardown()
            writer, self._writer = self._writer, None
            if writer is not None:
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 - the staged bag is deleted anyway
                    pass
            shutil.rmtree(self._stage, ignore_errors=True)

    def _teardown(self) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        for subscription in self._subscriptions.values():
            self.node.destroy_subscription(subscription)

    # ----------------------------------------------------------------- progress

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def last_stamp_ns(self, topic: str) -> int | None:
        """Receive time (ns) of the newest message on ``topic``."""
        with self._lock:
            return self._last_stamp_ns.get(topic)

    def last_header_stamp_ns(self, topic: str) -> int | None:
        """Header stamp of the newest message on ``topic`` (None before any, or without a leading Header)."""
        with self._lock:
            return self._last_header_stamp_ns.get(topic)

    def subscribed(self) -> list[str]:
        with self._lock:
            return list(self._subscriptions)

    def matched_publishers(self) -> dict[str, int]:
        """Publishers each subscribed topic is matched with (0 until DDS discovery completes)."""
        with self._lock:
            return {t: s.get_publisher_count() for t, s in self._subscriptions.items()}

    def stats(self) -> RecordStats:
        with self._lock:
            return RecordStats(
                path=self.out,
                counts={t: self._counts.get(t, 0) for t in self.topics},
                types={t: c.msgtype for t, c in self._connections.items()},
                never_seen=[t for t in self.topics if self._counts.get(t, 0) == 0],
            )

    # ----------------------------------------------------------------- graph

    def _discover(self) -> None:
        pending = [t for t in self.topics if t not in self._subscriptions]
        if not pending:
            if self._timer is not None:
                self._timer.cancel()
            return
        graph = dict(self.node.get_topic_names_and_types())
        for topic in pending:
            msgtype = self._types.get(topic) or next(iter(graph.get(topic, [])), None)
            if msgtype is not None:
                self._subscribe(topic, msgtype)

    def _qos_for(self, topic: str) -> Any:
        """Reliable unless a publisher of the topic offers only best effort (a reliable reader would never match)."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        infos = self.node.get_publishers_info_by_topic(topic)
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.qos_depth,
            reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )

    def _subscribe(self, topic: str, msgtype: str) -> None:
        msg_class = message_class(msgtype)
        if msg_class is None:
            raise BagError(f"cannot record {topic}: message type {msgtype} is not importable here")
        if msgtype not in self._typestore.fielddefs:
            raise BagError(f"cannot record {topic}: message type {msgtype} has no definition in the typestore")
        with self._lock:
            if self._closed or topic in self._subscriptions:
                return
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
            self._counts.setdefault(topic, 0)
            self._subscriptions[topic] = self.node.create_subscription(
                msg_class, topic, lambda data, name=topic: self._on_message(name, data), self._qos_for(topic), raw=True
            )

    def _on_message(self, topic: str, data: bytes) -> None:
        received_ns = time.time_ns()
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(self._connections[topic], received_ns, data)
            self._counts[topic] += 1
            self._last_stamp_ns[topic] = received_ns
            self._last_header_stamp_ns[topic] = header_stamp_from_cdr(data)


def parse_topic_types(entries: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Split ``/topic`` or ``/topic:pkg/msg/Type`` entries into topics and known types."""
    topics: list[str] = []
    types: dict[str, str] = {}
    for entry in entries:
        topic, _, msgtype = entry.partition(":")
        if not topic.startswith("/"):
            raise ConfigError(f"topic {topic!r} must be absolute (start with '/')")
        topics.append(topic)
        if msgtype:
            if msgtype.count("/") != 2:
                raise ConfigError(f"type of {topic} must look like pkg/msg/Type, got {msgtype!r}")
            types[topic] = msgtype
    return topics, types


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="bag folder to create")
    parser.add_argument("--topics", nargs="+", required=True, metavar="TOPIC[:TYPE]",
                        help="topics to record; add :pkg/msg/Type to skip waiting for discovery")
    parser.add_argument("--storage", choices=STORAGES, default="mcap")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: until Ctrl-C)")
    parser.add_argument("--max-messages", type=int, default=0, help="stop once this many messages are written (0: no limit)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")


def run(args: argparse.Namespace) -> int:
    from perception_ros.spin import interrupts_deferred

    with interrupts_deferred() as interrupted:  # a Ctrl-C while rclpy loads ends the tool, without a traceback
        import rclpy
        from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    if interrupted.is_set():
        return 0
    topics, types = parse_topic_types(args.topics)
    rclpy.init()
    node = None
    recorder: BagRecorder | None = None
    try:
        node = rclpy.create_node("bag_record")
        recorder = BagRecorder(node, args.out, topics, types=types, storage=args.storage, overwrite=args.overwrite).start()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        print(f"recording {', '.join(topics)} to {args.out} ({args.storage}); Ctrl-C to stop")
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        try:
            while deadline is None or time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
                if args.max_messages and sum(recorder.counts().values()) >= args.max_messages:
                    break
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        stats = recorder.stop()
        recorder = None
        print(f"wrote {stats.total} messages to {stats.path}")
        for topic, count in stats.counts.items():
            print(f"  {topic:<40} {count}")
        if stats.never_seen:
            print(f"  warning: nothing arrived on {', '.join(stats.never_seen)}")
        return 0
    finally:
        if recorder is not None:
            recorder.abort()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
