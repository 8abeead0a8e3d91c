"""The DDS transport profile that carries camera-size frames: which file, and pointing Fast DDS at it.

With Fast DDS's default shared-memory segment, camera frames are silently
lost between processes (1280x1080 rgb8 at 10 Hz: 11 of 50 frames reached a
subscriber here; docs/bringup.md has the measurement). The bringup package
ships ``config/fastdds.xml``, whose default participant profile gives each
process a shared-memory segment that holds several camera frames. Fast DDS
(``rmw_fastrtps_cpp``, Jazzy's default RMW) reads the file named by
``FASTRTPS_DEFAULT_PROFILES_FILE`` when a process creates its first
participant, so it must be set before ``rclpy.init``, in every process of the
graph that publishes or subscribes to images (the camera driver too).

No ROS import here: tools set the variable before they import rclpy.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from perception_core.errors import ConfigError
from perception_core.resources import resolve_in_share

PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
PROFILE_IN_SHARE = "config/fastdds.xml"


def transport_profile() -> Path:
    """The installed ``config/fastdds.xml`` of the bringup package (ament index)."""
    return resolve_in_share(PROFILE_IN_SHARE)


def use_transport_profile(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Point Fast DDS at the stack's profile unless the environment already names one; returns the file in use.

    Call before ``rclpy.init``. A profile the user set is kept (their graph's
    own tuning wins); None when neither is available (no bringup installed).
    """
    env = os.environ if environ is None else environ
    if env.get(PROFILE_ENV):
        return Path(env[PROFILE_ENV])
    try:
        path = transport_profile()
    except ConfigError:
        return None
    if not path.is_file():
        return None
    env[PROFILE_ENV] = str(path)
    return path
