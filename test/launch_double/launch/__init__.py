"""TEST DOUBLE of ROS 2 `launch` (not installable here): records a launch description and resolves it; runs nothing.

See test/launch_double/README.md. Only the names the workspace's launch files
use exist, with the real signatures (ros2/launch, jazzy branch):
LaunchDescription; actions.DeclareLaunchArgument (with ``choices``),
IncludeLaunchDescription, SetEnvironmentVariable, Shutdown;
conditions.IfCondition / UnlessCondition; substitutions.LaunchConfiguration,
EnvironmentVariable, PathJoinSubstitution;
launch_description_sources.PythonLaunchDescriptionSource. Substitutions and
conditions have ``perform(context)`` / ``evaluate(context)`` like the real
ones, where ``context`` is a plain dict of launch configurations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class LaunchDescription:
    """Test double: keeps the entities in order."""

    def __init__(self, initial_entities: Iterable[Any] | None = None) -> None:
        self.entities = list(initial_entities or [])

    def add_action(self, action: Any) -> None:
        self.entities.append(action)


def perform(value: Any, context: dict[str, Any]) -> Any:
    """Resolve a substitution, a list of them (concatenated, as launch does) or plain text."""
    if hasattr(value, "perform"):
        return value.perform(context)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) or hasattr(v, "perform") for v in value):
        return "".join(str(perform(v, context)) for v in value)
    return value
