"""TEST DOUBLE of `launch.actions` (see test/launch_double/README.md): records arguments only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class DeclareLaunchArgument:
    """Test double: a declared launch argument and its default."""

    def __init__(self, name: str, default_value: Any = None, description: str = "", **kwargs: Any) -> None:
        self.name = name
        self.default_value = default_value
        self.description = description
        self.kwargs = kwargs


class IncludeLaunchDescription:
    """Test double: an included launch file and the arguments passed to it."""

    def __init__(self, launch_description_source: Any, launch_arguments: Iterable[tuple[Any, Any]] | None = None,
                 **kwargs: Any) -> None:
        self.launch_description_source = launch_description_source
        self.launch_arguments = list(launch_arguments or [])
        self.kwargs = kwargs
