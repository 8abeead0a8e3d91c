"""Timing of the costmap's inputs, on an injectable clock so that it is tested without wall-clock DDS tests.

- ``ExactStampPairer``: depth and labels of one camera frame meet by stamp.
- ``DepthLabelSync``: what to build and when. With depth, labels wait for
  the depth of their own frame; only when the depth stream has been silent
  for ``depth_timeout_s`` since labels started waiting do those labels go to
  the flat-ground fallback (flagged by the caller). See docs/costmap.md.
- ``StalenessWatchdog``: which inputs (or the output) have been silent for
  longer than a set time, so that the node stops asserting free space.

The clock is any callable returning seconds (``time.monotonic`` by default);
tests pass a fake clock and step it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from perception_core.errors import ConfigError

ItemT = TypeVar("ItemT")


class ExactStampPairer(Generic[ItemT]):
    """Pairs messages of two streams by identical stamp, keeping only the latest few of each.

    A small stand-in for message_filters' exact-time synchronizer (not
    installable here). When a pair completes, it and everything older on both
    streams is dropped, so a late frame can never be paired after a newer one.
    Each waiting message keeps its arrival time, so a caller can give up on a
    partner after a timeout (``waiting`` + ``take``) without breaking that order.

    With ``max_skew_ns`` > 0, a message whose exact partner is not waiting pairs
    with the nearest waiting stamp of the other stream within that skew. Each
    stream delivers stamps in increasing order, so a waiting stamp other than
    ours means one stream already moved past the other's frame: the exact
    partner can no longer come. This keeps an overloaded host, where each
    latest-frame-wins node skips different frames, from starving the pairing.
    """

    def __init__(self, streams: tuple[str, str] = ("depth", "labels"), capacity: int = 3, max_skew_ns: int = 0) -> None:
        if capacity < 1:
            raise ConfigError(f"pairing buffer capacity must be >= 1, got {capacity}")
        if max_skew_ns < 0:
            raise ConfigError(f"pairing max skew must be >= 0 ns, got {max_skew_ns}")
        self.streams = streams
        self.capacity = capacity
        self.max_skew_ns = int(max_skew_ns)
        self.approximate_pairs = 0  # pairs made within max_skew_ns rather than by identical stamp
        # stream -> stamp_ns -> (message, arrival time in seconds), in arrival order
        self._pending: dict[str, OrderedDict[int, tuple[ItemT, float]]] = {name: OrderedDict() for name in streams}
        self.dropped = 0  # messages discarded without ever being paired or taken

    def add(self, stream: str, stamp_ns: int, item: ItemT, arrival: float | None = None) -> dict[str, ItemT] | None:
        """Add one message; return {stream: item} for both streams when its partner is waiting.

        ``arrival`` is when the message arrived (seconds on the caller's clock, default
        ``time.monotonic()``); ``waiting`` reports it back.
        """
        queue = self._queue(stream)
        other = self.streams[1] if stream == self.streams[0] else self.streams[0]
        if stamp_ns in self._pending[other]:
            pair = {stream: item, other: self._pending[other].pop(stamp_ns)[0]}
            self._drop_older(stamp_ns)
            return pair
        near = [s for s in self._pending[other] if abs(s - stamp_ns) <= self.max_skew_ns] if self.max_skew_ns else []
        if near:
            partner = min(near, key=lambda s: (abs(s - stamp_ns), -s))  # nearest; on a tie, the newer frame
            pair = {stream: item, other: self._pending[other].pop(partner)[0]}
            self._drop_older(max(stamp_ns, partner))
            self.approximate_pairs += 1
            return pair
        if stamp_ns in queue:
            self.dropped += 1  # a duplicate stamp replaces the older message
        queue[stamp_ns] = (item, time.monotonic() if arrival is None else float(arrival))
        queue.move_to_end(stamp_ns)
        while len(queue) > self.capacity:
            queue.popitem(last=False)
            self.dropped += 1
        return None

    def take(self, stream: str, stamp_ns: int) -> ItemT:
        """Remove and return a waiting message, to be used without its partner (e.g. after a timeout).

        Like a completed pair, everything older on both streams is dropped (counted).
        """
        queue = self._queue(stream)
        if stamp_ns not in queue:
            raise KeyError(f"no message with stamp {stamp_ns} is waiting on stream {stream!r}")
        item = queue.pop(stamp_ns)[0]
        self._drop_older(stamp_ns)
        return item

    def pending(self, stream: str) -> list[int]:
        """Stamps waiting for a partner on ``stream`` (oldest first)."""
        return list(self._queue(stream))

    def waiting(self, stream: str) -> list[tuple[int, float]]:
        """(stamp, arrival time) of the messages waiting for a partner on ``stream`` (in arrival order)."""
        return [(stamp, arrival) for stamp, (_, arrival) in self._queue(stream).items()]

    def _queue(self, stream: str) -> OrderedDict[int, tuple[ItemT, float]]:
        if stream not in self._pending:
            raise ValueError(f"unknown stream {stream!r}; expected one of {self.streams}")
        return self._pending[stream]

    def _drop_older(self, stamp_ns: int) -> None:
        for queue in self._pending.values():
            for old in [s for s in queue if s < stamp_ns]:
                del queue[old]
                self.dropped += 1


@dataclass(frozen=True)
class Work(Generic[ItemT]):
    """One costmap to build: labels with their depth, or without (flat-ground fallback)."""

    labels: ItemT
    depth: ItemT | None
    stamp_ns: int


class DepthLabelSync(Generic[ItemT]):
    """Decides which (labels, depth) pairs to build and when labels give up on depth.

    ``use_depth`` false: every labels message is built flat-ground on arrival.
    Otherwise labels wait in the pairer; a depth message with their stamp (or
    within ``max_skew_ns`` once their own can no longer come) completes them.
    ``poll`` (call it every ``poll_period_s``) sends to flat-ground the waiting
    labels during whose wait no depth message arrived at all, once
    ``depth_timeout_s`` has passed since the first of them started waiting,
    unless ``flat_ground_fallback`` is off. Any depth message ends the
    silence. Labels that saw depth arrive while they waited (their own partner
    was skipped) are never sent flat-ground: the pairer drops them (counted).
    """

    def __init__(self, *, use_depth: bool = True, depth_timeout_s: float = 2.0, flat_ground_fallback: bool = True,
                 capacity: int = 3, max_skew_ns: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        if not depth_timeout_s > 0:
            raise ConfigError(f"costmap parameter depth_timeout_s must be > 0 s, got {depth_timeout_s}")
        self.use_depth = use_depth
        self.depth_timeout_s = float(depth_timeout_s)
        self.flat_ground_fallback = flat_ground_fallback
        self.clock = clock
        self.pairer: ExactStampPairer[ItemT] = ExactStampPairer(("depth", "labels"), capacity, max_skew_ns)
        self.last_depth_time: float | None = None  # clock time of the newest depth message
        # When the first labels still waiting (since the newest depth message or pair) arrived.
        self.labels_waiting_since: float | None = None

    @property
    def poll_period_s(self) -> float:
        return max(0.01, min(0.1, self.depth_timeout_s / 4))

    def on_depth(self, stamp_ns: int, msg: ItemT) -> list[Work[ItemT]]:
        now = self.clock()
        self.last_depth_time = now
        self.labels_waiting_since = None  # the depth stream is alive: waiting labels get their full timeout again
        if not self.use_depth:
            return []
        pair = self.pairer.add("depth", stamp_ns, msg, now)
        return [] if pair is None else [Work(pair["labels"], pair["depth"], stamp_ns)]

    def on_labels(self, stamp_ns: int, msg: ItemT) -> list[Work[ItemT]]:
        if not self.use_depth:
            return [Work(msg, None, stamp_ns)]
        now = self.clock()
        pair = self.pairer.add("labels", stamp_ns, msg, now)
        if pair is not None:
            self.labels_waiting_since = None
            return [Work(pair["labels"], pair["depth"], stamp_ns)]
        if self.labels_waiting_since is None:
            self.labels_waiting_since = now
        return []

    def poll(self) -> list[Work[ItemT]]:
        """Flat-ground work for labels whose depth stream went silent (oldest first); [] otherwise."""
        if not (self.use_depth and self.flat_ground_fallback) or self.labels_waiting_since is None:
            return []
        if self.clock() - self.labels_waiting_since <= self.depth_timeout_s:
            return []
        unanswered = sorted(stamp for stamp, arrival in self.pairer.waiting("labels")
                            if self.last_depth_time is None or arrival > self.last_depth_time)
        work = []
        for stamp in unanswered:  # oldest stamp first: taking one drops older ones (counted), never newer
            if stamp in self.pairer.pending("labels"):
                work.append(Work(self.pairer.take("labels", stamp), None, stamp))
        return work

    def depth_silent(self) -> bool:
        """Whether labels are waiting and no depth arrived for longer than depth_timeout_s."""
        return (self.labels_waiting_since is not None
                and self.clock() - self.labels_waiting_since > self.depth_timeout_s)


class StalenessWatchdog:
    """Seconds since each named stream was last seen; a stream never seen counts from the watchdog's start."""

    def __init__(self, timeout_s: float, streams: Iterable[str], clock: Callable[[], float] = time.monotonic) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"costmap parameter stale_timeout_s must be > 0 s, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.clock = clock
        start = clock()
        self._last: dict[str, float] = dict.fromkeys(streams, start)
        self._seen: set[str] = set()

    def mark(self, stream: str) -> None:
        if stream not in self._last:
            raise ValueError(f"unknown stream {stream!r}; watching {sorted(self._last)}")
        self._last[stream] = self.clock()
        self._seen.add(stream)

    def silent(self) -> dict[str, float]:
        """Streams silent for longer than the timeout, with their silence in seconds."""
        now = self.clock()
        return {name: now - last for name, last in self._last.items() if now - last > self.timeout_s}

    def describe(self, silent: dict[str, float]) -> str:
        """One line naming the silent streams, e.g. 'depth silent 2.1 s, labels never received (3.0 s)'."""
        parts = []
        for name, seconds in silent.items():
            parts.append(f"{name} silent {seconds:.1f} s" if name in self._seen
                         else f"{name} never received ({seconds:.1f} s)")
        return ", ".join(parts)
