"""TEST DOUBLE of `launch_ros.actions`: ``Node(...)`` records its keyword arguments and starts nothing.

It accepts exactly the keyword arguments the real ``Node`` accepts (its own,
then ExecuteProcess's and ExecuteLocal's, ros2/launch_ros and ros2/launch,
jazzy), so a misspelt one fails here as it would under ``ros2 launch``.
"""

from __future__ import annotations

from typing import Any

from launch.actions import Action

NODE_ARGUMENTS = {"executable", "package", "name", "namespace", "exec_name", "parameters", "remappings",
                  "ros_arguments", "arguments"}
EXECUTE_PROCESS_ARGUMENTS = {"prefix", "cwd", "env", "additional_env"}
EXECUTE_LOCAL_ARGUMENTS = {"shell", "sigterm_timeout", "sigkill_timeout", "emulate_tty", "output", "output_format",
                           "cached_output", "log_cmd", "on_exit", "respawn", "respawn_delay", "respawn_max_retries"}


class Node(Action):
    """Test double: the package, executable, name, parameters and remappings a launch file asked for."""

    def __init__(self, *, executable: Any, condition: Any = None, **kwargs: Any) -> None:
        super().__init__(condition=condition)
        unknown = set(kwargs) - NODE_ARGUMENTS - EXECUTE_PROCESS_ARGUMENTS - EXECUTE_LOCAL_ARGUMENTS
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {sorted(unknown)}")
        self.kwargs = {"executable": executable, **kwargs}
