"""Where installed resources are: the ament index, read without importing ROS.

An ament package ``pkg`` installed under a prefix leaves a marker file
``<prefix>/share/ament_index/resource_index/packages/<pkg>`` and its data in
``<prefix>/share/<pkg>``; the prefixes are listed in ``$AMENT_PREFIX_PATH``
(set by ``install/setup.bash`` or ``/opt/ros/jazzy/setup.bash``). This is what
``ament_index_python.get_package_share_directory`` reads; reading it here keeps
the core free of ROS imports.
"""

from __future__ import annotations

import os
from pathlib import Path

from perception_core.errors import ConfigError

BRINGUP_PACKAGE = "offroad_perception_bringup"


def package_share(package: str) -> Path:
    """``share/<package>`` of the first prefix in ``$AMENT_PREFIX_PATH`` that has the package."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in prefixes:
        if (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / package).is_file():
            return Path(prefix) / "share" / package
    raise ConfigError(f"package {package!r} is not in the ament index (AMENT_PREFIX_PATH has {len(prefixes)} "
                      "prefixes); source install/setup.bash of the workspace that built it")


def resolve_in_share(path: str | os.PathLike[str], package: str = BRINGUP_PACKAGE) -> Path:
    """An absolute path as is; a relative one inside ``share/<package>`` (never the current directory)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else package_share(package) / candidate
