"""Managed (lifecycle) nodes that also run as plain nodes: the stack's one lifecycle machinery.

Nav2-style bring-up drives nodes through ``configure`` -> ``activate`` with a
lifecycle manager; a plain ``ros2 run`` or a test just constructs the node and
expects it to work. ``ManagedNode`` is an ``rclpy.lifecycle.LifecycleNode``
with a read-only ``autostart`` parameter (default true) that does both:

- ``autostart: true``: ``start()`` (the last line of the subclass constructor)
  configures and activates the node at once, so it behaves like a plain node; a
  configure failure raises its ``PerceptionError``, which the entry point turns
  into one line and exit code 1.
- ``autostart: false``: the node waits, unconfigured, for a lifecycle manager
  (``nav2_lifecycle_manager``, ``ros2 lifecycle set``, launch_ros events).

Either way ``start()`` first lists the start-up keys (params file, ``-p``) the
node never declared, in a warning and in ``unknown_parameters``.

How a node adopts it (the inference nodes and the costmap node do):

1. subclass ``ManagedNode``; declare parameters in ``__init__`` (so ``ros2
   param`` and params files see them before configure), end ``__init__`` with
   ``self.start()``;
2. ``configure_node()``: read parameters, load models or files, create
   publishers; raise ``PerceptionError`` to fail the transition (logged as one
   line; the node stays unconfigured and can be configured again);
3. ``activate_node()``: create the inputs with ``self.create_input_subscription``
   and ``self.create_input_timer``; ``deactivate`` destroys them all, so a
   deactivated node takes no frames; ``deactivate_node()`` (optional) then
   withdraws what a consumer would otherwise keep trusting (the costmap
   publishes an unknown grid over its latched one);
4. ``cleanup_node()``: drop what configure made (models, publishers).

Publishers stay plain rclpy publishers: an inactive node has no inputs, so it
publishes nothing per frame (only what configure latched, such as model info).
"""

from __future__ import annotations

from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from perception_core.errors import ConfigError, PerceptionError
from perception_ros.parameters import declare, unknown_parameters


class ManagedNode(LifecycleNode):
    """A lifecycle node whose subclasses fill in four hooks; ``autostart`` makes it a plain node."""

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.autostart = declare(self, "autostart", True,
                                 "configure and activate at start-up (false: wait for a lifecycle manager)",
                                 read_only=True)
        self.transition_error: str = ""  # the last failed transition's reason, for entry points and diagnostics
        self.unknown_parameters: list[str] = []  # start-up keys the node never declared (set by start())
        self._inputs: list[Any] = []
        self._input_timers: list[Any] = []
        self._configured = False
        self._autostarting = False
        self._transition_exception: BaseException | None = None

    # ------------------------------------------------------------------ hooks for subclasses

    def configure_node(self) -> None:
        """Load what the node needs and create its publishers; raise PerceptionError to refuse."""

    def activate_node(self) -> None:
        """Create the inputs (``create_input_subscription`` / ``create_input_timer``)."""

    def deactivate_node(self) -> None:
        """After the inputs are gone: withdraw outputs a consumer would keep trusting (optional)."""

    def cleanup_node(self) -> None:
        """Release what ``configure_node`` made."""

    # ------------------------------------------------------------------ inputs that deactivate removes

    def create_input_subscription(self, *args: Any, **kwargs: Any) -> Any:
        subscription = self.create_subscription(*args, **kwargs)
        self._inputs.append(subscription)
        return subscription

    def create_input_timer(self, *args: Any, **kwargs: Any) -> Any:
        timer = self.create_timer(*args, **kwargs)
        self._input_timers.append(timer)
        return timer

    def _destroy_inputs(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        for timer in self._input_timers:
            self.destroy_timer(timer)
        self._inputs.clear()
        self._input_timers.clear()

    # ------------------------------------------------------------------ plain-node start

    def start(self) -> None:
        """Last line of the subclass constructor: report unknown keys; with ``autostart``, configure + activate."""
        unknown = self.unknown_parameters = unknown_parameters(self)
        if unknown:
            self.get_logger().warning(f"ignoring unknown parameter(s) {', '.join(unknown)}: not declared by "
                                      f"{self.get_name()} (a typo, or a section meant for another node?)")
        if not self.autostart:
            self.get_logger().info("autostart is false: waiting for a lifecycle manager to configure and activate")
            return
        self._autostarting = True  # a failure is raised to the entry point, which prints it as the one line
        try:
            for name, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
                if trigger() != TransitionCallbackReturn.SUCCESS:
                    if isinstance(self._transition_exception, PerceptionError):
                        raise self._transition_exception  # its own type: BackendError, ModelFileError, ...
                    raise ConfigError(self.transition_error or f"{self.get_name()}: {name} failed")
        finally:
            self._autostarting = False

    @property
    def lifecycle_state(self) -> str:
        """Label of the current state: unconfigured, inactive, active, finalized."""
        return str(self._state_machine.current_state[1])

    # ------------------------------------------------------------------ rclpy lifecycle callbacks

    def _run_hook(self, transition: str, hook: Any) -> TransitionCallbackReturn:
        """Run a hook; a PerceptionError fails the transition with one line (rclpy would swallow it silently).

        The line is logged for a lifecycle manager's user; under autostart the entry point prints it instead.
        """
        try:
            hook()
        except PerceptionError as err:
            self.transition_error = str(err)
            self._transition_exception = err
            if not self._autostarting:
                self.get_logger().error(f"{transition} failed: {err}")
            return TransitionCallbackReturn.FAILURE
        except Exception as err:  # noqa: BLE001  (a bug: rclpy would swallow it into a silent ERROR transition)
            self.transition_error = f"{type(err).__name__}: {err}"
            self._transition_exception = err
            self.get_logger().error(f"{transition} failed with an unexpected {type(err).__name__}: {err}")
            return TransitionCallbackReturn.ERROR
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.transition_error, self._transition_exception = "", None
        result = self._run_hook("configure", self.configure_node)
        if result != TransitionCallbackReturn.SUCCESS:
            reason, exception = self.transition_error, self._transition_exception
            self._run_hook("clean-up after the failed configure", self.cleanup_node)
            self.transition_error, self._transition_exception = reason, exception
        self._configured = result == TransitionCallbackReturn.SUCCESS
        return result

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.transition_error, self._transition_exception = "", None
        result = self._run_hook("activate", self.activate_node)
        if result != TransitionCallbackReturn.SUCCESS:
            self._destroy_inputs()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_inputs()
        return self._run_hook("deactivate", self.deactivate_node)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configured = False
        return self._run_hook("cleanup", self.cleanup_node)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_inputs()
        if self._configured:
            self._configured = False
            return self._run_hook("shutdown", self.cleanup_node)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_inputs()
        self._configured = False
        self._run_hook("error recovery", self.cleanup_node)
        return TransitionCallbackReturn.SUCCESS
