"""Parameter declaration with descriptors, one-line start-up errors, run-time changes with checks.

- ``declare`` gives every parameter a description and, for numbers, a range
  (``int_range`` / ``float_range``), optional ``choices`` and ``read_only``.
  A value of the wrong type or outside its range or choices, from a params
  file or ``-p``, raises ``ConfigError`` naming the node, the parameter, the
  value and what was expected; the entry points print it as one line and exit 1.
- ``RuntimeParameters`` lets a node accept changes of selected parameters while
  it runs (``ros2 param set``): each (or each group bound by rules between its
  members) has an optional check that can refuse a value with a reason, and an
  apply function called once the value is set.
  Ranges and read-only flags are enforced by rclpy from the descriptors before
  the checks run.
- ``unknown_parameters`` lists the keys a params file or ``-p`` gave the node
  that it never declared (a typo, or a section meant for another node).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from perception_core.errors import ConfigError

_EXPECTED = {bool: "true or false", int: "an integer", float: "a floating-point number", str: "a string"}


def _describe_type(value: Any) -> str:
    for kind, name in (("bool", "a boolean"), ("int", "an integer"), ("float", "a floating-point number"),
                       ("str", "a string")):
        if type(value).__name__ == kind:
            return name
    return f"a {type(value).__name__}"


def declare(node: Node, name: str, default: Any, description: str, *, read_only: bool = False,
            int_range: tuple[int, int] | None = None, float_range: tuple[float, float] | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """Declare a parameter with a descriptor and return its value; ConfigError names a bad value.

    Raises:
        ConfigError: the value given at start-up has the wrong type, is out of range or not one of ``choices``.
    """
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        descriptor.additional_constraints = f"one of {', '.join(choices)}"
    if int_range:
        descriptor.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    if float_range:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float_range[0], to_value=float_range[1])]
    where = f"parameter {name}"  # the entry point's line names the node: "DepthNode: error: parameter ..."
    try:
        value = node.declare_parameter(name, default, descriptor).value
    except InvalidParameterTypeException:
        given = _given_value(node, name)
        expected = _EXPECTED.get(type(default), f"a {type(default).__name__}")
        hint = f" (write {float(given)!r})" if isinstance(default, float) and type(given) is int else ""
        raise ConfigError(f"{where}={given!r} is {_describe_type(given)}; expected {expected}{hint}") from None
    except InvalidParameterValueException:
        given = _given_value(node, name)
        bounds = int_range or float_range
        raise ConfigError(f"{where}={given!r} is outside its range [{bounds[0]}, {bounds[1]}]" if bounds
                          else f"{where}={given!r} is not a valid value") from None
    if choices and value not in choices:
        raise ConfigError(f"{where}={value!r} is not one of {', '.join(choices)}")
    return value


def _given_value(node: Node, name: str) -> Any:
    """The start-up value the node was given for ``name`` (params file, ``-p`` or constructor overrides)."""
    override = getattr(node, "_parameter_overrides", {}).get(name)  # rclpy keeps them there; no public accessor
    return override.value if override is not None else None


def unknown_parameters(node: Node) -> list[str]:
    """Parameter names the node was given at start-up but never declared (sorted)."""
    given = getattr(node, "_parameter_overrides", {})  # rclpy keeps them there; no public accessor
    return sorted(name for name in given if not node.has_parameter(name))


class RuntimeParameters:
    """The parameters of a node that may change while it runs, each with a check and an apply function.

    Register after the parameters are declared. A check returns ``None`` to
    accept a value or a reason to refuse it (``ros2 param set`` shows the
    reason); ``apply`` runs after rclpy has stored the accepted value.
    Parameters bound by rules between them (a corridor that must fit the grid)
    form a group (``add_group``): its check sees every value one request sets,
    so one request may change several of them together, and its apply runs once.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._checks: dict[str, Callable[[Any], str | None]] = {}
        self._appliers: dict[str, Callable[[Any], None]] = {}
        self._groups: list[tuple[frozenset[str], Callable[[dict[str, Any]], str | None] | None,
                                 Callable[[dict[str, Any]], None]]] = []
        node.add_on_set_parameters_callback(self._check)
        node.add_post_set_parameters_callback(self._apply)

    @property
    def names(self) -> list[str]:
        return sorted([*self._appliers, *(name for names, _, _ in self._groups for name in names)])

    def _require_changeable(self, name: str) -> None:
        if not self._node.has_parameter(name):
            raise ConfigError(f"{self._node.get_name()}: run-time parameter {name} is not declared")
        if self._node.describe_parameter(name).read_only:
            raise ConfigError(f"{self._node.get_name()}: parameter {name} is read-only; it cannot change at run time")

    def add(self, name: str, apply: Callable[[Any], None], check: Callable[[Any], str | None] | None = None) -> None:
        self._require_changeable(name)
        self._appliers[name] = apply
        if check is not None:
            self._checks[name] = check

    def add_group(self, names: Iterable[str], apply: Callable[[dict[str, Any]], None],
                  check: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        """Parameters checked and applied together: ``check`` and ``apply`` get {name: new value} of the
        group's parameters that one request sets."""
        group = frozenset(names)
        for name in sorted(group):
            self._require_changeable(name)
        self._groups.append((group, check, apply))

    def _check(self, parameters: list[Any]) -> SetParametersResult:
        for parameter in parameters:
            check = self._checks.get(parameter.name)
            reason = check(parameter.value) if check is not None else None
            if reason:
                return SetParametersResult(successful=False, reason=f"{parameter.name}={parameter.value!r}: {reason}")
        for names, check, _ in self._groups:
            changes = {p.name: p.value for p in parameters if p.name in names}
            reason = check(changes) if changes and check is not None else None
            if reason:
                given = ", ".join(f"{name}={value!r}" for name, value in changes.items())
                return SetParametersResult(successful=False, reason=f"{given}: {reason}")
        return SetParametersResult(successful=True)

    def _apply(self, parameters: list[Any]) -> None:
        for parameter in parameters:
            apply = self._appliers.get(parameter.name)
            if apply is not None:
                apply(parameter.value)
                self._node.get_logger().info(f"parameter {parameter.name} changed to {parameter.value!r}")
        for names, _, apply_group in self._groups:
            changes = {p.name: p.value for p in parameters if p.name in names}
            if changes:
                apply_group(changes)
                for name, value in changes.items():
                    self._node.get_logger().info(f"parameter {name} changed to {value!r}")
