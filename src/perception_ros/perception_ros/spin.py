"""Console entry points of the nodes: the jazzy init / spin / shutdown pattern in one place."""

from __future__ import annotations

import sys
from typing import Any

from perception_core.errors import PerceptionError


def run_node(node_class: type[Any], args: list[str] | None = None) -> int:
    """Init, spin, clean shutdown; a start-up error exits non-zero with one line naming the node class."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = node_class()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except PerceptionError as err:
        print(f"{node_class.__name__}: error: {err}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
