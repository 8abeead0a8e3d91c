"""TEST DOUBLE of `launch.substitutions` (see test/launch_double/README.md)."""

from __future__ import annotations

from typing import Any


class LaunchConfiguration:
    """Test double: a reference to a launch argument by name, resolved by the test."""

    def __init__(self, variable_name: str, default: Any = None) -> None:
        self.variable_name = variable_name
        self.default = default

    def __repr__(self) -> str:
        return f"LaunchConfiguration({self.variable_name!r})"
