# Source this to use the built workspace: venv + colcon overlay + loopback DDS.
# shellcheck shell=bash
_ws_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
. "$_ws_root/.venv/bin/activate"
export AMENT_PREFIX_PATH=$_ws_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
# colcon's setup.bash reads unset variables; keep it quiet under `set -u`.
set +u
# shellcheck disable=SC1091
. "$_ws_root/install/setup.bash"
# DDS discovery stays on this host; each shell gets its own domain unless set.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( $$ % 200 + 1 ))}
# The stack's Fast DDS transport profile (camera-size frames need a larger shared-memory segment), unless set.
export FASTRTPS_DEFAULT_PROFILES_FILE=${FASTRTPS_DEFAULT_PROFILES_FILE:-$_ws_root/config/fastdds.xml}
unset _ws_root
