"""`perception-tools` command line: the ROS-side tools, one module per subcommand (imported when chosen)."""

from __future__ import annotations

import sys

from model_tools.cli import run_cli

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("perception_tools.doctor", "report what this environment can run (ROS, ONNX Runtime, QNN HTP)"),
    "replay": ("perception_tools.replay", "play a rosbag2 into the ROS graph with recorded timing (ros2 bag play stand-in)"),
    "record": ("perception_tools.recorder", "record chosen topics of the ROS graph to a rosbag2 (mcap/sqlite3)"),
}


def main(argv: list[str] | None = None) -> int:
    return run_cli("perception-tools", "ROS-side tools of the perception stack: replay, record, doctor.",
                   SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
