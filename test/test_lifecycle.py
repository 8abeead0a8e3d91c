"""Managed nodes through their real lifecycle services, as nav2_lifecycle_manager or `ros2 lifecycle set` drive them.

With ``autostart: false`` a node waits unconfigured: no model loaded, no
camera subscription. configure loads the model (and latches model_info),
activate subscribes, deactivate unsubscribes, cleanup releases the model; a
failing configure leaves it unconfigured with the reason, and can be retried.
The costmap node the same way: configure validates its parameters and creates
its publishers, activate subscribes to depth, labels and camera_info,
deactivate withdraws the latched grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inference_node_harness import LATCHED, Probe, image_msg, ros_context
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from nav_msgs.msg import OccupancyGrid
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from perception_core.testing.tiny_models import make_tiny_seg_model

pytestmark = pytest.mark.system


class LifecycleClient:
    """The manager's side: change_state / get_state service calls on a node."""

    def __init__(self, probe: Probe, node_name: str) -> None:
        self.probe = probe
        self.change = probe.node.create_client(ChangeState, f"/{node_name}/change_state")
        self.get = probe.node.create_client(GetState, f"/{node_name}/get_state")
        assert probe.spin_until(lambda: self.change.service_is_ready() and self.get.service_is_ready())

    def transition(self, transition_id: int) -> bool:
        future = self.change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert self.probe.spin_until(future.done, timeout=20.0)
        return bool(future.result().success)

    def state(self) -> str:
        future = self.get.call_async(GetState.Request())
        assert self.probe.spin_until(future.done)
        return str(future.result().current_state.label)


def test_managed_node_loads_in_configure_and_subscribes_in_activate(tmp_path: Path) -> None:
    from seg_perception.segmentation_node import SegmentationNode

    later = tmp_path / "later.onnx"  # not there at the first configure
    overrides = [Parameter("model_path", value=str(later)), Parameter("backend", value="cpu"),
                 Parameter("autostart", value=False)]
    frame = image_msg(np.full((32, 32, 3), 40, np.uint8), "rgb8", stamp_sec=3)
    with ros_context() as context:
        node = SegmentationNode(context=context, parameter_overrides=overrides)
        probe = Probe(context, node)
        labels = probe.listen(Image, "/perception/segmentation/labels")
        model_info = probe.listen(String, "/perception/segmentation/model_info", LATCHED)
        send = probe.camera()
        manager = LifecycleClient(probe, "segmentation_node")

        def subscribed() -> int:
            return probe.node.count_subscribers("/camera/image_raw")

        assert manager.state() == "unconfigured" and node.model is None and subscribed() == 0
        # A configure that fails (the model file is missing) leaves the node unconfigured, with the reason.
        assert not manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == "unconfigured" and "later.onnx: model file does not exist" in node.transition_error
        make_tiny_seg_model(later)  # e.g. the model copied onto the vehicle: the manager's retry succeeds
        assert manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == "inactive" and node.model is not None
        assert probe.spin_until(lambda: model_info)  # latched at configure
        probe.spin_until(lambda: False, every=lambda: send(frame), timeout=1.0)
        assert subscribed() == 0 and not labels  # inactive: no input, no output

        assert manager.transition(Transition.TRANSITION_ACTIVATE) and manager.state() == "active"
        assert probe.spin_until(lambda: labels, every=lambda: send(frame))
        assert subscribed() == 1

        assert manager.transition(Transition.TRANSITION_DEACTIVATE) and manager.state() == "inactive"
        assert probe.spin_until(lambda: subscribed() == 0)
        processed = node.stats.processed
        probe.spin_until(lambda: False, every=lambda: send(frame), timeout=1.0)
        assert node.stats.processed == processed

        assert manager.transition(Transition.TRANSITION_CLEANUP) and manager.state() == "unconfigured"
        assert node.model is None
        assert manager.transition(Transition.TRANSITION_CONFIGURE) and manager.transition(Transition.TRANSITION_ACTIVATE)
        before = len(labels)
        assert probe.spin_until(lambda: len(labels) > before, every=lambda: send(frame))  # a second life
        probe.close()
        node.destroy_node()


def test_plain_use_starts_active_and_a_bad_model_raises_at_construction(tmp_path: Path) -> None:
    from perception_core.errors import ModelFileError, PerceptionError
    from seg_perception.segmentation_node import SegmentationNode

    model = make_tiny_seg_model(tmp_path / "seg.onnx")
    with ros_context() as context:
        node = SegmentationNode(context=context, parameter_overrides=[
            Parameter("model_path", value=str(model)), Parameter("backend", value="cpu")])
        assert node.lifecycle_state == "active" and node.model is not None
        node.destroy_node()
        with pytest.raises(PerceptionError, match=r"missing\.onnx: model file does not exist"):
            SegmentationNode(context=context, parameter_overrides=[
                Parameter("model_path", value=str(tmp_path / "missing.onnx")), Parameter("backend", value="cpu")])
    assert issubclass(ModelFileError, PerceptionError)


def test_costmap_node_validates_in_configure_subscribes_in_activate_and_withdraws_its_grid_on_deactivate() -> None:
    from seg_perception.costmap_node import CostmapNode

    # A corridor longer than the 30 m grid: configure refuses it; corridor_length may change while unconfigured.
    overrides = [Parameter("autostart", value=False), Parameter("corridor_length", value=40.0),
                 Parameter("pose_source", value="none"), Parameter("mount_z", value=1.0),
                 Parameter("min_obstacle_area_m2", value=0.0)]
    depth = np.full((24, 32), 4.0, np.float32)  # a wall 4 m ahead of a level camera, labelled static_obstacle
    labels = np.full((24, 32), 4, np.uint8)
    info = CameraInfo(width=32, height=24, k=[20.0, 0.0, 15.5, 0.0, 20.0, 11.5, 0.0, 0.0, 1.0])
    with ros_context() as context:
        node = CostmapNode(context=context, parameter_overrides=overrides)
        probe = Probe(context, node)
        grids = probe.listen(OccupancyGrid, "/perception/costmap", LATCHED)
        depth_pub = probe.publisher(Image, "/perception/depth/image")
        labels_pub = probe.publisher(Image, "/perception/segmentation/labels")
        info_pub = probe.publisher(CameraInfo, "/camera/camera_info")
        stamp = [10]

        def send() -> None:
            stamp[0] += 1
            info_pub.publish(info)
            depth_pub.publish(image_msg(depth, "32FC1", stamp_sec=stamp[0]))
            labels_pub.publish(image_msg(labels, "mono8", stamp_sec=stamp[0]))

        def inputs() -> int:
            return sum(probe.node.count_subscribers(t) for t in (
                "/perception/depth/image", "/perception/segmentation/labels", "/camera/camera_info"))

        manager = LifecycleClient(probe, "costmap_node")
        assert manager.state() == "unconfigured" and inputs() == 0
        assert probe.node.count_publishers("/perception/costmap") == 0

        assert not manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == "unconfigured" and "corridor_length (40.0 m)" in node.transition_error
        params = AsyncParameterClient(probe.node, "costmap_node")
        assert probe.spin_until(params.services_are_ready)
        future = params.set_parameters([Parameter("corridor_length", value=10.0)])
        assert probe.spin_until(future.done) and future.result().results[0].successful
        assert manager.transition(Transition.TRANSITION_CONFIGURE) and manager.state() == "inactive"
        assert probe.spin_until(lambda: probe.node.count_publishers("/perception/costmap") == 1)
        probe.spin_until(lambda: False, every=send, timeout=1.0)
        assert inputs() == 0 and not grids and node.stats.processed == 0  # inactive: no input, no grid

        assert manager.transition(Transition.TRANSITION_ACTIVATE) and manager.state() == "active"
        assert probe.spin_until(lambda: inputs() == 3)
        assert probe.spin_until(lambda: any(100 in g.data for g in grids), every=send)

        assert manager.transition(Transition.TRANSITION_DEACTIVATE) and manager.state() == "inactive"
        assert probe.spin_until(lambda: inputs() == 0)
        assert probe.spin_until(lambda: all(v == -1 for v in grids[-1].data)), "the last grid is withdrawn"
        late: list[OccupancyGrid] = []  # a subscriber that joins now (Nav2's StaticLayer restarting) gets it too
        probe.node.create_subscription(OccupancyGrid, "/perception/costmap", late.append, LATCHED)
        assert probe.spin_until(lambda: late) and all(v == -1 for v in late[-1].data)
        processed = node.stats.processed
        probe.spin_until(lambda: False, every=send, timeout=1.0)
        assert node.stats.processed == processed

        assert manager.transition(Transition.TRANSITION_CLEANUP) and manager.state() == "unconfigured"
        assert probe.spin_until(lambda: probe.node.count_publishers("/perception/costmap") == 0)
        assert manager.transition(Transition.TRANSITION_CONFIGURE) and manager.transition(Transition.TRANSITION_ACTIVATE)
        before = len(grids)
        assert probe.spin_until(lambda: len(grids) > before and 100 in grids[-1].data, every=send)  # a second life
        probe.close()
        node.destroy_node()


def test_costmap_node_plain_use_starts_active_and_a_bad_configuration_raises_at_construction() -> None:
    from perception_core.errors import ConfigError
    from seg_perception.costmap_node import CostmapNode

    with ros_context() as context:
        node = CostmapNode(context=context)
        assert node.lifecycle_state == "active" and node.config is not None
        node.destroy_node()
        with pytest.raises(ConfigError, match=r"mount_z \(-0.5 m\) puts the camera at or below the ground"):
            CostmapNode(context=context, parameter_overrides=[Parameter("mount_z", value=-0.5)])
