"""`make demo`: placeholder until the replay/demo issue lands.

It proves the environment runs ROS 2 nodes with the project's messages.
"""

from __future__ import annotations

import sys

from model_tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["doctor", "--ros-roundtrip"]))
