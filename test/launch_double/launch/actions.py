"""TEST DOUBLE of `launch.actions` (see test/launch_double/README.md): records arguments, checks what launch checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Action:
    """Test double of launch.Action: every action takes ``condition``."""

    def __init__(self, *, condition: Any = None) -> None:
        self.condition = condition

    def applies(self, context: dict[str, Any]) -> bool:
        return self.condition is None or self.condition.evaluate(context)


class DeclareLaunchArgument(Action):
    """Test double: a declared launch argument, its default and its choices (checked as launch checks them)."""

    def __init__(self, name: str, *, default_value: Any = None, description: str | None = None,
                 choices: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if choices is not None and len(choices) == 0:
            raise RuntimeError("Provided choices arg is empty. Use None to ignore the choice list.")
        if choices is not None and isinstance(default_value, str) and default_value not in choices:
            raise RuntimeError(f'Provided default_value "{default_value}" is not in provided choices "{choices}".')
        self.name = name
        self.default_value = default_value
        self.description = description or ""
        self.choices = choices

    def check(self, value: str) -> None:
        """What launch does when the argument is executed: a value outside ``choices`` is an error."""
        if self.choices is not None and value not in self.choices:
            raise RuntimeError(f"Argument '{self.name}' provided value '{value}' is not valid. "
                               f"Valid options are: {self.choices}")


class IncludeLaunchDescription(Action):
    """Test double: an included launch file and the arguments passed to it."""

    def __init__(self, launch_description_source: Any, *,
                 launch_arguments: Iterable[tuple[Any, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launch_description_source = launch_description_source
        self.launch_arguments = list(launch_arguments or [])


class SetEnvironmentVariable(Action):
    """Test double: an environment variable set for the processes launched after it."""

    def __init__(self, name: Any, value: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.value = value


class EmitEvent(Action):
    """Test double: an action that emits an event."""


class Shutdown(EmitEvent):
    """Test double: shuts the launch down with ``reason`` when executed."""

    def __init__(self, *, reason: str = "reason not given", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason
