"""Built like a ROS user builds it: the repository in ws/src/<repo>, `colcon build` from ws; rosdep keys resolve.

The copy holds what a clone of this working tree holds (git's tracked and
unignored files). The build runs the standard `colcon build` from the
workspace root; the only environment is what sourcing ROS gives a user,
which here is the venv's ROS wheels: AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH and
the venv's Python for CMake (a colcon defaults file, as a user's
~/.colcon/defaults.yaml would hold).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["depth_perception", "fused_perception", "model_tools", "offroad_perception_bringup", "perception_core",
            "perception_msgs", "perception_ros", "perception_tools", "seg_perception"]
COLCON = str(Path(sys.executable).parent / "colcon")  # the venv's colcon, as a user's is /usr/bin/colcon
DEPENDENCY_TAGS = ("depend", "build_depend", "buildtool_depend", "exec_depend", "test_depend", "build_export_depend",
                   "buildtool_export_depend", "doc_depend")


def _package_xmls() -> dict[str, ET.Element]:
    return {(root := ET.parse(path).getroot()).findtext("name"): root for path in sorted(ROOT.glob("src/*/package.xml"))}


def test_every_package_xml_key_resolves_in_rosdep() -> None:
    listed = {line.split()[0] for line in (ROOT / "test" / "data" / "rosdep_keys.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    packages = _package_xmls()
    assert sorted(packages) == PACKAGES
    unresolved = {name: sorted(key for tag in DEPENDENCY_TAGS for key in (e.text.strip() for e in root.findall(tag))
                               if key not in packages and key not in listed)
                  for name, root in packages.items()}
    assert not any(unresolved.values()), f"package.xml keys rosdep cannot resolve: {unresolved}"


def test_a_headless_vehicle_installs_no_rviz_and_no_training_stack() -> None:
    packages = _package_xmls()
    vehicle = {"offroad_perception_bringup", "depth_perception", "seg_perception", "fused_perception",
               "perception_ros", "perception_core", "perception_msgs"}
    closure: set[str] = set()
    todo = ["offroad_perception_bringup"]
    while todo:  # what `rosdep install` pulls in for the bringup: its run-time dependency closure
        name = todo.pop()
        for tag in ("depend", "exec_depend", "build_export_depend"):
            for key in (e.text.strip() for e in packages[name].findall(tag)):
                if key not in closure:
                    closure.add(key)
                    if key in packages:
                        todo.append(key)
    assert {k for k in closure if k in packages} == vehicle - {"offroad_perception_bringup"}
    assert not closure & {"rviz2", "python3-torch", "python3-tqdm", "python3-matplotlib", "model_tools",
                          "perception_tools", "python3-rosbags-pip"}


def _clone_into_workspace(ws: Path) -> Path:
    """The working tree as a clone would hold it, at ws/src/<repo>; big files are hard links, not copies."""
    repo = ws / "src" / "offroad_perception"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree
            continue
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.stat().st_size > 256 * 1024:
            try:
                os.link(source, target)
                continue
            except OSError:
                pass
        shutil.copy2(source, target)
    return repo


def _user_environment(ws: Path) -> dict[str, str]:
    venv = Path(sys.prefix)
    defaults = ws / "colcon_defaults.yaml"
    defaults.write_text(yaml.safe_dump({"build": {"cmake-args": [f"-DPython3_EXECUTABLE={sys.executable}",
                                                                 "-DPython3_FIND_VIRTUALENV=ONLY"]}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLCON", "AMENT", "CMAKE_PREFIX"))}
    env.update(AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv), COLCON_DEFAULTS_FILE=str(defaults),
               PYTHONPATH="")
    return env


def test_colcon_from_the_workspace_root_finds_every_package(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _clone_into_workspace(ws)
    listed = subprocess.run([COLCON, "list", "--names-only"], cwd=ws,
                            env=_user_environment(ws), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == PACKAGES


@pytest.mark.slow
def test_colcon_build_from_the_workspace_root_builds_and_installs_every_package(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _clone_into_workspace(ws)
    env = _user_environment(ws)
    built = subprocess.run([COLCON, "build", "--event-handlers", "console_direct-"], cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    for package in PACKAGES:
        assert (ws / "install" / package / "share" / "ament_index" / "resource_index" / "packages" / package).is_file()
    share = ws / "install" / "offroad_perception_bringup" / "share" / "offroad_perception_bringup"
    for relative in ("launch/perception.launch.py", "launch/stack_actions.py", "config/perception.yaml",
                     "config/fastdds.xml", "models/depth_levels_r18_int8_qdq.onnx",
                     "models/ddrnet23s_offroad_int8_qdq.onnx"):
        assert (share / relative).is_file(), f"the built bringup share lacks {relative}"
    # The built overlay is usable from anywhere: its nodes and resources come from ws/install.
    probe = ("from perception_core.resources import resolve_in_share\n"
             "import fused_perception.fused_node, perception_msgs.msg\n"
             "print(resolve_in_share('config/fastdds.xml'))\n"
             "print(fused_perception.fused_node.__file__)")
    used = subprocess.run(["bash", "-c", f"source install/setup.bash && cd / && {sys.executable} -c \"$PROBE\""],
                          cwd=ws, env={**env, "PROBE": probe}, capture_output=True, text=True, timeout=120)
    assert used.returncode == 0, used.stderr
    fastdds, module = used.stdout.split()
    assert Path(fastdds) == share / "config" / "fastdds.xml" and module.startswith(str(ws / "install"))
