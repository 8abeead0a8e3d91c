"""TEST DOUBLE of `launch.substitutions` (see test/launch_double/README.md); ``perform`` resolves like launch."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from launch import perform


class LaunchConfiguration:
    """Test double: a launch argument's value by name."""

    def __init__(self, variable_name: str, default: Any = None) -> None:
        self.variable_name = variable_name
        self.default = default

    def perform(self, context: dict[str, Any]) -> Any:
        if self.variable_name in context:
            return context[self.variable_name]
        if self.default is not None:
            return perform(self.default, context)
        raise KeyError(f"launch configuration {self.variable_name!r} does not exist")

    def __repr__(self) -> str:
        return f"LaunchConfiguration({self.variable_name!r})"


class EnvironmentVariable:
    """Test double: an environment variable's value, else ``default_value``."""

    def __init__(self, name: Any, *, default_value: Any = None) -> None:
        self.name = name
        self.default_value = default_value

    def perform(self, context: dict[str, Any]) -> str:
        value = os.environ.get(str(perform(self.name, context)))
        if value is not None:
            return value
        if self.default_value is None:
            raise KeyError(f"environment variable {self.name!r} is not set and has no default")
        return str(perform(self.default_value, context))


class PathJoinSubstitution:
    """Test double: os.path.join of the resolved parts."""

    def __init__(self, substitutions: Iterable[Any]) -> None:
        self.substitutions = list(substitutions)

    def perform(self, context: dict[str, Any]) -> str:
        return os.path.join(*(str(perform(s, context)) for s in self.substitutions))
