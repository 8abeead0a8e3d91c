"""TEST DOUBLE of `launch_ros.substitutions`: FindPackageShare resolves through the ament index, as the real one.

The real one calls ament_index_python.get_package_share_directory, which reads
``$AMENT_PREFIX_PATH``; the double reads the same index with
perception_core.resources.package_share.
"""

from __future__ import annotations

from typing import Any

from launch import perform


class FindPackageShare:
    """Test double: ``share/<package>`` of the first prefix in AMENT_PREFIX_PATH that has the package."""

    def __init__(self, package: Any) -> None:
        self.package = package

    def perform(self, context: dict[str, Any]) -> str:
        from perception_core.resources import package_share

        return str(package_share(str(perform(self.package, context))))
