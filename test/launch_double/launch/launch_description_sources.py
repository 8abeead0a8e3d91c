"""TEST DOUBLE of `launch.launch_description_sources` (see test/launch_double/README.md)."""

from __future__ import annotations

from typing import Any


class PythonLaunchDescriptionSource:
    """Test double: the path of an included Python launch file."""

    def __init__(self, launch_file_path: Any) -> None:
        self.location = launch_file_path
