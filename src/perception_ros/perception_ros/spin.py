"""Console entry points: init, spin and a clean shutdown in one place, for one node or several.

Ctrl-C (SIGINT to the process group, as a terminal or ``ros2 launch`` sends
it) and SIGTERM end the process with exit code 0 and no traceback, whenever
they arrive: while Python imports rclpy, OpenCV and ONNX Runtime, while a
model loads, or while a frame is processed. Node classes are imported inside
the guarded region, which is why entry points name them by string. A start-up
failure (a ``PerceptionError``: missing model, bad parameter) prints one line
naming the node class and exits 1.

rclpy's own signal handlers are not installed: they shut the context down from
their own thread while the main thread tears the nodes down, a race that ended
in a traceback ("rcl_shutdown already called") or a segfault here. Nor does a
signal ever raise KeyboardInterrupt: raised inside rclpy's C++ calls it
surfaced as a RuntimeError ("Unable to convert call argument"), and raised
while ``import rclpy`` initialised its pybind11 extension it surfaced as an
ImportError ("initialization failed", seen in CI). So the first thing
``run_nodes`` does, before it imports anything heavy, is make a signal only set
a flag; the main thread checks it after each import and node, spins with a
short timeout, sees it between callbacks (after the frame in hand, or after the
model that is loading) and tears everything down in order, alone.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from perception_core.errors import PerceptionError

SPIN_PERIOD_S = 0.1


def _node_class(spec: Any) -> type[Any]:
    if isinstance(spec, str):
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)
    return spec


def _label(spec: Any) -> str:
    return spec.rpartition(":")[2] if isinstance(spec, str) else spec.__name__


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """Make SIGINT and SIGTERM only set ``stop``; returns the handlers they had. Main thread only (ValueError)."""
    return {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[threading.Event]:
    """Inside the block SIGINT and SIGTERM only set the yielded flag; leaving it restores the previous handlers.

    For the command-line tools, which stop on KeyboardInterrupt once they run: their start-up (``import
    rclpy``, whose extension turns a KeyboardInterrupt into an ImportError; module docstring) must not be cut
    in two. The caller checks the flag after the block and ends quietly. Outside the main thread (where signal
    handlers cannot be set) the flag stays clear and the block runs as is.
    """
    stop = threading.Event()
    try:
        previous = _stop_on_signals(stop)
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_node(node: Any, args: list[str] | None = None) -> int:
    """One node (a class or ``"module:Class"``): init, spin, clean shutdown; returns the exit code."""
    return run_nodes([node], args, label=_label(node))


def run_nodes(nodes: Sequence[Any], args: list[str] | None = None, *, label: str = "perception-stack",
              multi_threaded: bool = False, on_started: Callable[[list[Any]], None] | None = None) -> int:
    """Several nodes in one executor (a composed process); ``on_started`` runs once all exist.

    For a process's entry point: it takes over SIGINT and SIGTERM. Exit codes: 0 after Ctrl-C / SIGTERM /
    rclpy shutdown, 1 after a PerceptionError at start-up.
    """
    instances: list[Any] = []
    executor: Any = None
    code = 0
    stop = threading.Event()
    _stop_on_signals(stop)  # from here on a signal only asks to stop (module docstring)
    try:
        import rclpy
        from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        if stop.is_set():
            return code  # interrupted while importing rclpy: nothing to tear down (the finally still runs)
        try:
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
            executor = MultiThreadedExecutor() if multi_threaded else SingleThreadedExecutor()
            for spec in nodes:
                if stop.is_set():
                    break
                instance = _node_class(spec)()
                instances.append(instance)
                executor.add_node(instance)
            if on_started is not None and not stop.is_set():
                on_started(instances)
            while rclpy.ok() and not stop.is_set():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)  # back in Python often enough to see the flag
        except ExternalShutdownException:
            pass
    except PerceptionError as err:
        print(f"{label}: error: {err}", file=sys.stderr)
        code = 1
    finally:
        _shut_down(executor, instances)  # leaves SIGINT/SIGTERM ignored: the process is about to end
    return code


def _shut_down(executor: Any, instances: list[Any]) -> None:
    """Tear down once. From here to the process's exit a further Ctrl-C is ignored rather than printed as a
    traceback (the process is already ending; launch still escalates to SIGTERM and SIGKILL if it hangs)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import rclpy
    except ImportError:
        return
    if executor is not None:
        executor.shutdown()
    for instance in instances:
        try:
            instance.destroy_node()
        except Exception:  # noqa: BLE001  (the signal handler may have shut the context down already)
            pass
    rclpy.try_shutdown()
