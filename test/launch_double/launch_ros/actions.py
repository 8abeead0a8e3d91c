"""TEST DOUBLE of `launch_ros.actions`: ``Node(...)`` records its keyword arguments and starts nothing."""

from __future__ import annotations

from typing import Any


class Node:
    """Test double: the package, executable, name, parameters and remappings a launch file asked for."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
