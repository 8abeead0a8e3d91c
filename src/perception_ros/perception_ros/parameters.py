"""Parameter declaration with descriptors (description, ranges, read-only, choices)."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from perception_core.errors import ConfigError


def declare(node: Node, name: str, default: Any, description: str, *, read_only: bool = False,
            int_range: tuple[int, int] | None = None, float_range: tuple[float, float] | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """Declare a parameter with a descriptor and return its value (validated against ``choices``)."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        descriptor.additional_constraints = f"one of {', '.join(choices)}"
    if int_range:
        descriptor.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    if float_range:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float_range[0], to_value=float_range[1])]
    value = node.declare_parameter(name, default, descriptor).value
    if choices and value not in choices:
        raise ConfigError(f"parameter {name}={value!r} is not one of {choices}")
    return value
