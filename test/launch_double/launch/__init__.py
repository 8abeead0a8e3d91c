"""TEST DOUBLE of ROS 2 `launch` (not installable here): records a launch description, runs nothing.

See test/launch_double/README.md. Only the names the workspace's launch files
use exist: LaunchDescription, actions.DeclareLaunchArgument,
actions.IncludeLaunchDescription, substitutions.LaunchConfiguration,
launch_description_sources.PythonLaunchDescriptionSource.
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
