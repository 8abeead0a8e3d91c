"""Depth network shapes, codec round trips on torch tensors, and loss values on known inputs."""

from __future__ import annotations

import math

import pytest
import torch

from model_tools.models.depth_net import DepthExportModule, DepthModelConfig, build_depth_net
from model_tools.tasks.depth import (
    DepthLossConfig,
    DistillConfig,
    depth_edge_weight,
    depth_loss,
    distill_loss,
    label_weight_table,
    log_gradient_loss,
    range_weight_map,
)
from perception_core.depth_codec import compose_depth, decompose_depth, integer_step
from perception_core.errors import ConfigError

TINY = {"width": 8, "decoder_channels": [4, 8, 8, 16, 16], "levels": 32, "input_height": 64, "input_width": 96}


@pytest.mark.parametrize("kind,levels", [("sigmoid", 256), ("levels", 256), ("levels", 16)])
def test_codec_round_trip_on_torch_is_exact_within_float_resolution(kind: str, levels: int) -> None:
    max_depth = 15.0
    depth = torch.cat([torch.linspace(0, max_depth, 10001), torch.arange(0, 16, dtype=torch.float32) * integer_step(max_depth, kind, levels)])
    depth = depth.clamp(max=max_depth)
    integer, fractional = decompose_depth(depth, max_depth, kind, levels)
    step = integer_step(max_depth, kind, levels)
    assert float(fractional.min()) >= 0.0
    assert float(fractional.max()) < step + 1e-5
    assert torch.allclose(compose_depth(integer, fractional, max_depth), depth, atol=2e-6 * max_depth)
    # Integer values sit exactly on the head's grid (floor, not round).
    k = integer * max_depth / step
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert torch.all(k.round() * step <= depth + 1e-5)


@pytest.mark.parametrize("kind", ["sigmoid", "levels"])
def test_forward_returns_four_scales_in_training_and_scale_zero_in_eval(kind: str) -> None:
    net = build_depth_net({**TINY, "kind": kind})
    x = torch.randn(2, 3, 64, 96)
    out = net.train()(x)
    channels = 32 if kind == "levels" else 1
    for s in range(4):
        assert out[("integer", s)].shape == (2, channels, 64 // 2**s, 96 // 2**s)
        frac = out[("fractional", s)]
        assert frac.shape == (2, 1, 64 // 2**s, 96 // 2**s)
        assert float(frac.min()) >= 0 and float(frac.max()) <= net.step
    net.eval()
    assert set(net(x)) == {("integer", 0), ("fractional", 0)}
    depth = DepthExportModule(net, "composed")(x)
    integer, fractional = DepthExportModule(net, "separate")(x)
    assert torch.allclose(depth, integer * 15.0 + fractional)
    if kind == "levels":  # ArgMax / (levels-1): values on the level grid
        assert torch.allclose(integer * 31, (integer * 31).round(), atol=1e-5)


def test_resnet34_is_selectable_and_bigger() -> None:
    r18 = sum(p.numel() for p in build_depth_net({**TINY, "kind": "sigmoid"}).parameters())
    r34 = sum(p.numel() for p in build_depth_net({**TINY, "kind": "sigmoid", "encoder": "resnet34"}).parameters())
    assert r34 > r18


@pytest.mark.parametrize(
    "field,value,match",
    [("encoder", "resnet50", "model.encoder"), ("kind", "bins", "model.kind"), ("padding", "circular", "model.padding"),
     ("input_height", 100, "input height = 100"), ("levels", 8, "levels=8")],
)
def test_bad_model_config_names_the_field(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_depth_net({**TINY, field: value})


def _constant_outputs(integer: torch.Tensor | float, frac: float, channels: int, hw: tuple[int, int]) -> dict:
    out = {}
    for s in range(4):
        h, w = hw[0] // 2**s, hw[1] // 2**s
        if isinstance(integer, torch.Tensor):
            out[("integer", s)] = integer.view(1, -1, 1, 1).expand(1, channels, h, w).clone()
        else:
            out[("integer", s)] = torch.full((1, channels, h, w), integer)
        out[("fractional", s)] = torch.full((1, 1, h, w), frac)
    return out


def test_sigmoid_loss_value_on_known_input_ignores_invalid_pixels() -> None:
    cfg = DepthModelConfig(kind="sigmoid", max_depth=15.0, input_height=32, input_width=32)
    gt = torch.full((1, 1, 32, 32), 5.5)
    gt[..., :8, :] = 0.0  # invalid
    out = _constant_outputs(6 / 15, 0.25, 1, (32, 32))
    out[("integer", 0)][..., :8, :] = 1.0  # garbage where GT is invalid must not count
    total, parts = depth_loss(out, gt, cfg, DepthLossConfig())
    assert float(parts["integer"]) == pytest.approx(1 / 15, abs=1e-6)  # |6/15 - 5/15|
    assert float(parts["fractional"]) == pytest.approx(0.25, abs=1e-6)  # |0.25 - 0.5| / 1 m
    assert float(parts["depth"]) == pytest.approx(0.75, abs=1e-5)  # |6.25 - 5.5|
    assert float(total) == pytest.approx(1 / 15 + 10 * 0.25 + 0.5 * 0.75, abs=1e-5)
    weighted, _ = depth_loss(out, gt, cfg, DepthLossConfig(w_integer=2.0, w_fractional=0.0, w_depth=1.0))
    assert float(weighted) == pytest.approx(2 / 15 + 0.75, abs=1e-5)


def test_levels_loss_value_on_known_input() -> None:
    cfg = DepthModelConfig(kind="levels", levels=16, max_depth=15.0, input_height=32, input_width=32)
    step = 1.0
    gt = torch.full((1, 1, 32, 32), 7.25)
    uniform = _constant_outputs(0.0, 0.25 * step, 16, (32, 32))
    _, parts = depth_loss(uniform, gt, cfg, DepthLossConfig())
    assert float(parts["integer"]) == pytest.approx(math.log(16), abs=1e-5)  # CE of uniform logits
    assert float(parts["fractional"]) == pytest.approx(0.0, abs=1e-6)
    assert float(parts["depth"]) == pytest.approx(abs(0.5 * 15 + 0.25 - 7.25), abs=1e-4)  # soft integer = mean level
    logits = torch.full((16,), -50.0)
    logits[7] = 50.0
    sharp = _constant_outputs(logits, 0.25, 16, (32, 32))
    total, parts = depth_loss(sharp, gt, cfg, DepthLossConfig())
    assert float(total) == pytest.approx(0.0, abs=1e-4)


def test_class_weights_make_each_term_the_label_weighted_mean() -> None:
    """Obstacle pixels weighted 3: each term is (sum of w * error) / (sum of w) over valid pixels."""
    cfg = DepthModelConfig(kind="sigmoid", max_depth=15.0, input_height=32, input_width=32)
    gt = torch.full((1, 1, 32, 32), 5.5)
    gt[..., :8, :] = 0.0  # invalid: weight 0 whatever its label
    out = _constant_outputs(6 / 15, 0.25, 1, (32, 32))
    out[("fractional", 0)][..., 16:, :] = 0.5  # error 0 on the lower half
    table = label_weight_table({"static_obstacle": 3.0})
    assert table is not None and table.shape == (256,)
    label = torch.zeros(1, 32, 32, dtype=torch.long)  # smooth_ground, weight 1
    label[..., 16:, :] = 4  # static_obstacle, weight 3
    label[..., :8, :] = 4
    loss_cfg = DepthLossConfig(scales=1)
    _, plain = depth_loss(out, gt, cfg, loss_cfg)
    _, weighted = depth_loss(out, gt, cfg, loss_cfg, table[label].unsqueeze(1))
    # rows 8..15 (8 rows, w 1) err 0.25, rows 16..31 (16 rows, w 3) err 0
    assert float(plain["fractional"]) == pytest.approx(0.25 * 8 / 24, abs=1e-6)
    assert float(weighted["fractional"]) == pytest.approx(0.25 * 8 / (8 + 3 * 16), abs=1e-6)
    ones = torch.ones(1, 1, 32, 32)
    _, unit = depth_loss(out, gt, cfg, loss_cfg, ones)
    assert all(float(unit[k]) == pytest.approx(float(plain[k]), abs=1e-7) for k in plain)
    assert label_weight_table({}) is None
    assert float(table[255]) == 1.0 and float(table[0]) == 1.0 and float(table[4]) == 3.0


def test_log_gradient_loss_is_blind_to_scale_and_scores_a_staircase_against_its_ramp() -> None:
    """Ground receding 2 % a row: a depth right up to a global scale costs 0; a staircase of 4-row steps through
    the same depths costs the ramp's log step on each flat pair and 3 of them at each jump."""
    ratio = 1.02
    rows = 4.0 * ratio ** torch.arange(16, dtype=torch.float64)
    target = rows.view(1, 1, 16, 1).expand(1, 1, 16, 3).float()
    ones = torch.ones_like(target)
    in_range = torch.ones_like(target, dtype=torch.bool)
    assert float(log_gradient_loss(target * 1.3, target, ones, in_range, 0.1)) == pytest.approx(0.0, abs=1e-6)
    stairs = target[..., ::4, :].repeat_interleave(4, dim=-2)  # rows 0-3 read row 0's depth, 4-7 row 4's, ...
    g = math.log(ratio)
    # Per column: 12 flat row pairs (error g each) and 3 jumps (the staircase climbs 4g where the target climbs g: 3g);
    # column pairs cost 0. Pairs: 15 row pairs in each of 3 columns, 2 column pairs in each of 16 rows.
    expected = (12 * g + 3 * 3 * g) * 3 / (15 * 3 + 2 * 16)
    assert float(log_gradient_loss(stairs, target, ones, in_range, 0.1)) == pytest.approx(expected, rel=1e-4)
    # A pair with an invalid (weight 0) or out-of-range pixel does not count.
    weight = ones.clone()
    weight[..., 5, :] = 0.0
    far = in_range.clone()
    far[..., 9, :] = False
    removed_pairs = (4 * 3 + 2 * 2)  # rows 4-5, 5-6, 8-9, 9-10 in 3 columns; rows 5 and 9's 2 column pairs each
    jumps_left = 3  # rows 3-4, 7-8 and 11-12: none touches row 5 or 9
    flat_left = 12 - 4  # the flat pairs 4-5, 5-6, 8-9, 9-10 are gone
    expected = (flat_left * g + jumps_left * 3 * g) * 3 / (15 * 3 + 2 * 16 - removed_pairs)
    assert float(log_gradient_loss(stairs, target, weight, far, 0.1)) == pytest.approx(expected, rel=1e-4)


def test_the_gradient_term_adds_to_the_loss_only_when_weighted() -> None:
    cfg = DepthModelConfig(kind="sigmoid", max_depth=15.0, input_height=32, input_width=32)
    gt = torch.linspace(3.0, 9.0, 32).view(1, 1, 32, 1).expand(1, 1, 32, 32).contiguous()
    out = _constant_outputs(6 / 15, 0.25, 1, (32, 32))
    plain_total, plain = depth_loss(out, gt, cfg, DepthLossConfig(scales=1))
    assert "gradient" not in plain
    total, parts = depth_loss(out, gt, cfg, DepthLossConfig(scales=1, w_gradient=5.0))
    assert float(parts["gradient"]) > 0.0  # a flat prediction of a receding ground
    assert float(total) == pytest.approx(float(plain_total) + 5.0 * float(parts["gradient"]), rel=1e-5)
    with pytest.raises(ConfigError, match="w_gradient"):
        from model_tools.tasks.depth import parse_depth_sections
        from model_tools.training.config import config_from_dict

        parse_depth_sections(config_from_dict({"task": "depth", "loss": {"w_gradient": -1.0}}))


def test_class_weights_with_an_unknown_class_name_fail() -> None:
    with pytest.raises(ConfigError, match="unknown classes"):
        label_weight_table({"boulder": 2.0})


def test_depth_edge_weight_marks_the_pixels_either_side_of_a_depth_step() -> None:
    """A drop-off seen as a step from 5 m to 10 m between columns 9 and 10: columns 8..11 (radius 1) weigh 4."""
    depth = torch.full((1, 1, 6, 20), 5.0)
    depth[..., 10:] = 10.0
    weight = depth_edge_weight(depth, 4.0, 0.15, 1)
    assert weight.shape == depth.shape
    expected = torch.ones(20)
    expected[8:12] = 4.0
    assert torch.equal(weight[0, 0], expected.expand(6, 20))
    # Radius 0: the two pixels of the step itself; metres or canonical units alike (a ratio).
    tight = depth_edge_weight(depth * 0.37, 4.0, 0.15, 0)[0, 0, 0]
    assert torch.nonzero(tight != 1.0).flatten().tolist() == [9, 10]


def test_depth_edge_weight_ignores_smooth_ground_and_invalid_neighbours() -> None:
    # Ground receding by 10 % a row (below the 15 % jump), sky (0, NaN, inf) above it: no edge anywhere.
    rows = torch.tensor([0.0, float("nan"), float("inf"), 8.0, 8.0 / 1.1, 8.0 / 1.21, 8.0 / 1.331, 8.0 / 1.4641])
    depth = rows.view(1, 1, 8, 1).expand(1, 1, 8, 5).contiguous()
    assert torch.equal(depth_edge_weight(depth, 3.0, 0.15, 2), torch.ones_like(depth))
    # The same rows with a 20 % step between the last two: the step's rows and two more either side.
    depth[..., 7, :] = 8.0 / 1.331 / 1.2
    rows_weighted = (depth_edge_weight(depth, 3.0, 0.15, 2)[0, 0, :, 0] == 3.0).nonzero().flatten().tolist()
    assert rows_weighted == [4, 5, 6, 7]


def test_edge_and_class_weights_multiply_in_the_depth_task(tmp_path) -> None:
    from model_tools.tasks.depth import DepthTask
    from model_tools.training.config import load_config

    config = load_config(None, ["task=depth", "model.kind=levels", "loss.edge_weight=2.0", "loss.edge_radius_px=0",
                                "loss.class_weights={static_obstacle: 3.0}"])
    task = DepthTask(config)
    depth = torch.full((1, 1, 4, 6), 5.0)
    depth[..., 3:] = 7.0  # a step between columns 2 and 3
    label = torch.zeros(1, 4, 6, dtype=torch.long)
    label[:, :2] = 4  # static_obstacle in rows 0-1
    weight = task._pixel_weight({"depth": depth, "label": label})[0, 0]
    expected = torch.ones(4, 6)
    expected[:2] = 3.0
    expected[:, 2:4] *= 2.0
    assert torch.equal(weight, expected)
    with pytest.raises(ConfigError, match=r"loss\.edge_weight"):
        DepthTask(load_config(None, ["task=depth", "loss.edge_jump=0"]))


def test_relief_weight_marks_the_ground_off_the_vehicles_plane_of_real_frames_flipped_or_not(tmp_path) -> None:
    """Synthetic frames of cameras with roll, on terrain: the map weights exactly the ground pixels whose true point
    lies more than the band off the plane (as the evaluation measures it, in float64), and a mirrored item, whose
    roll the batch does not carry, gets the mirrored map."""
    from pathlib import Path

    import numpy as np

    from model_tools.data.synth import CameraRanges, read_frame_rig, write_synthetic_folder
    from model_tools.tasks.depth import RELIEF_KEYS, DepthTask, relief_weight_map
    from model_tools.training.config import TrainConfig
    from perception_core.costmap import class_map_from_ontology
    from perception_core.geometry import camera_optical_pose
    from perception_core.metrics.costmap import pixel_points

    ranges = CameraRanges(160, 128, roll_deg=(3.0, 5.0))
    write_synthetic_folder(tmp_path, ranges, 3, seed=21, split="val", progress=False)
    model = {**TINY, "input_height": 128, "input_width": 160, "camera": "canonical_focal_height",
             "canonical_focal_px": 100.0, "canonical_height_m": 0.8}
    task = DepthTask(TrainConfig(task="depth", model=model, data={"root": str(tmp_path), "max_val_samples": 0},
                                 loss={"relief_weight": 4.0}))
    dataset = task.eval_dataset("val")
    surface = torch.from_numpy(class_map_from_ontology().surface.copy())
    relief_frames = 0
    for item in (dataset[i] for i in range(len(dataset))):
        depth, label = item["depth"].float(), item["label"].long()
        rig = read_frame_rig(tmp_path / "val", Path(item["path"]).stem)  # the frame's own camera, unflipped
        assert abs(rig.mount[3]) > math.radians(2.9), "the camera is rolled: the mirrored camera differs"
        truth_depth = np.where(depth.numpy()[0] > 0, depth.numpy()[0], np.nan).astype(np.float64)
        mount = camera_optical_pose(*rig.mount)
        k = rig.K  # the input size is the frame's: no resize
        heights = pixel_points(truth_depth, k, mount)[:, 2].reshape(truth_depth.shape)
        ground = surface.numpy()[label.numpy()] & np.isfinite(heights)
        with np.errstate(invalid="ignore"):
            want = ground & (np.abs(heights) > 0.3)
        batch = {key: item[key][None] for key in ("depth", "label", "camera_height_m", *RELIEF_KEYS)}
        got = relief_weight_map(batch, surface, 4.0, 0.3)[0, 0].numpy()
        near_band = np.abs(np.abs(np.nan_to_num(heights)) - 0.3) < 1e-4  # float32 vs float64 at the band's edge
        assert np.array_equal((got == 4.0) & ~near_band, want & ~near_band)
        assert set(np.unique(got)) <= {1.0, 4.0}
        relief_frames += int(want.sum() > 20)
        mirrored = dict(batch, depth=batch["depth"].flip(-1), label=batch["label"].flip(-1))
        got_mirrored = relief_weight_map(mirrored, surface, 4.0, 0.3)[0, 0].flip(-1).numpy()
        assert np.array_equal((got_mirrored == 4.0) & ~near_band, want & ~near_band)
    assert relief_frames >= 2, "the frames hold ground off the plane (hills, ditches)"


def test_relief_weight_needs_a_camera_aware_model_and_a_positive_band() -> None:
    from model_tools.tasks.depth import DepthTask
    from model_tools.training.config import load_config

    with pytest.raises(ConfigError, match=r"loss\.relief_weight needs each frame's camera"):
        DepthTask(load_config(None, ["task=depth", "loss.relief_weight=3.0"]))
    with pytest.raises(ConfigError, match=r"loss\.relief_band_m"):
        DepthTask(load_config(None, ["task=depth", "loss.relief_band_m=0"]))


def test_range_weight_grows_with_the_true_depth_and_is_clipped() -> None:
    """Power 2, 4 m reference, ceiling 8: 1 m -> 1/8 (clipped from 1/16), 2 m -> 1/4, 4 m -> 1, 8 m -> 4,
    12 m -> 8 (clipped from 9); invalid depth (NaN, 0, inf) weighs 1."""
    depth = torch.tensor([1.0, 2.0, 4.0, 8.0, 12.0, float("nan"), 0.0, float("inf")]).view(1, 1, 1, 8)
    weight = range_weight_map(depth, 2.0, 4.0, 8.0)[0, 0, 0]
    assert torch.allclose(weight, torch.tensor([0.125, 0.25, 1.0, 4.0, 8.0, 1.0, 1.0, 1.0]))
    # Power 1 with a ceiling of 2: linear between 2 m and 8 m.
    assert torch.allclose(range_weight_map(depth[..., :5], 1.0, 4.0, 2.0)[0, 0, 0],
                          torch.tensor([0.5, 0.5, 1.0, 2.0, 2.0]))


def test_range_weight_weighs_a_far_pixel_more_in_the_task(tmp_path) -> None:
    """A 2 m obstacle pixel and a 12 m ground pixel: with the range weight the far one weighs 8, the near one a
    quarter of its class weight; without it (and without class weights) there is no pixel weight at all."""
    from model_tools.tasks.depth import DepthTask
    from model_tools.training.config import load_config

    on = DepthTask(load_config(None, ["task=depth", "model.kind=levels", "loss.range_weight_power=2",
                                      "loss.class_weights={static_obstacle: 3.0}"]))
    depth = torch.tensor([[2.0, 12.0]]).view(1, 1, 1, 2)
    label = torch.tensor([[[4, 0]]])  # static_obstacle, then ground
    weight = on._pixel_weight({"depth": depth, "label": label})[0, 0, 0]
    assert torch.allclose(weight, torch.tensor([3.0 * 0.25, 8.0]))
    off = DepthTask(load_config(None, ["task=depth", "model.kind=levels"]))
    assert off._pixel_weight({"depth": depth, "label": label}) is None
    with pytest.raises(ConfigError, match=r"loss\.range_weight_power"):
        DepthTask(load_config(None, ["task=depth", "loss.range_weight_power=-1"]))
    with pytest.raises(ConfigError, match=r"loss\.range_weight_max"):
        DepthTask(load_config(None, ["task=depth", "loss.range_weight_max=0.5"]))


def _depth_loss_autograd_reference(out: dict, gt: torch.Tensor, model_cfg: DepthModelConfig,
                                   loss_cfg: DepthLossConfig) -> tuple[torch.Tensor, dict]:
    """The levels loss as it was before the fused cross-entropy + expectation: plain autograd ops."""
    import torch.nn.functional as F  # noqa: N812 - torch convention

    from perception_core.depth_codec import depth_to_level

    gt = gt.float()
    parts = {"integer": gt.new_zeros(()), "fractional": gt.new_zeros(()), "depth": gt.new_zeros(())}
    for s in range(loss_cfg.scales):
        int_out, frac = out[("integer", s)], out[("fractional", s)].float()
        size = tuple(int_out.shape[-2:])
        gt_s = gt if tuple(gt.shape[-2:]) == size else F.interpolate(gt, size=size, mode="nearest")
        valid = torch.isfinite(gt_s) & (gt_s > 0)
        safe = torch.where(valid, gt_s, torch.zeros_like(gt_s)).clamp(max=model_cfg.max_depth)
        _, frac_t = decompose_depth(safe, model_cfg.max_depth, "levels", model_cfg.levels)
        n_valid = valid.sum().clamp(min=1)
        target = depth_to_level(safe, model_cfg.max_depth, "levels", model_cfg.levels).long()[:, 0]
        target = torch.where(valid[:, 0], target, torch.full_like(target, -100))
        l_int = F.cross_entropy(int_out.float(), target, ignore_index=-100, reduction="sum") / n_valid
        probs = torch.softmax(int_out.float(), dim=1)
        ks = torch.arange(model_cfg.levels, dtype=probs.dtype, device=probs.device).view(1, -1, 1, 1)
        soft = (probs * ks).sum(dim=1, keepdim=True) / float(model_cfg.levels - 1)
        l_frac = ((frac - frac_t).abs() * valid).sum() / n_valid / model_cfg.step
        l_depth = ((soft * model_cfg.max_depth + frac - safe).abs() * valid).sum() / n_valid
        parts = {"integer": parts["integer"] + l_int / loss_cfg.scales,
                 "fractional": parts["fractional"] + l_frac / loss_cfg.scales,
                 "depth": parts["depth"] + l_depth / loss_cfg.scales}
    total = loss_cfg.w_integer * parts["integer"] + loss_cfg.w_fractional * parts["fractional"] + loss_cfg.w_depth * parts["depth"]
    return total, parts


@pytest.mark.parametrize("dtype,channels_last,seed", [(torch.float32, False, 0), (torch.float32, True, 1),
                                                      (torch.bfloat16, True, 2), (torch.float16, False, 3)])
def test_levels_loss_and_gradients_equal_the_plain_autograd_computation(dtype: torch.dtype, channels_last: bool,
                                                                        seed: int) -> None:
    # The fused cross-entropy + expectation must give the old loss and gradients on any logits: random logits
    # (wide spread, so softmaxes are both flat and sharp), random depths with invalid (0, NaN, inf) and
    # beyond-range pixels, odd sizes, both memory layouts, bf16 logits as autocast gives them.
    gen = torch.Generator().manual_seed(seed)
    cfg = DepthModelConfig(kind="levels", levels=64, max_depth=15.0, input_height=32, input_width=32)
    b, h, w = 3, 24, 40
    gt = torch.rand(b, 1, h, w, generator=gen) * 18.0
    gt[torch.rand(b, 1, h, w, generator=gen) < 0.2] = 0.0
    gt[0, 0, 0, :5] = float("nan")
    gt[1, 0, 1, :5] = float("inf")
    gt[2, 0, 2, :4] = torch.tensor([7.0, 3.0, 15.0, 0.2])  # exact multiples of the step and the range's ends
    for loss_cfg in (DepthLossConfig(), DepthLossConfig(w_integer=2.0, w_fractional=3.0, w_depth=1.5, scales=2)):
        leaves, out = [], {}
        for s in range(4):
            logits = (torch.randn(b, 64, h // 2**s, w // 2**s, generator=gen) * 4.0).to(dtype)
            if channels_last:
                logits = logits.contiguous(memory_format=torch.channels_last)
            frac = (torch.rand(b, 1, h // 2**s, w // 2**s, generator=gen) * cfg.step).to(dtype)
            leaves += [logits.requires_grad_(), frac.requires_grad_()]
            out[("integer", s)], out[("fractional", s)] = logits, frac
        total, parts = depth_loss(out, gt, cfg, loss_cfg)
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
        ref_total, ref_parts = _depth_loss_autograd_reference(out, gt, cfg, loss_cfg)
        ref_grads = torch.autograd.grad(ref_total, leaves, allow_unused=True)
        tol = 1e-6  # the loss is fp32 whatever the logits' dtype
        assert float(total) == pytest.approx(float(ref_total), rel=tol)
        for key in ("integer", "fractional", "depth"):
            assert float(parts[key]) == pytest.approx(float(ref_parts[key]), rel=tol, abs=tol)
        for grad, ref in zip(grads, ref_grads, strict=True):
            if ref is None:  # a scale that carries no loss
                assert grad is None
                continue
            assert grad.dtype == ref.dtype and grad.shape == ref.shape
            # half-precision gradients: the same fp32 gradient rounded to bf16/fp16 (tiny ones to fp16
            # subnormals), so a rounding step apart; fp32 ones agree to float rounding
            err = float((grad.double() - ref.double()).norm() / ref.double().norm().clamp(min=1e-30))
            assert err < (1e-5 if dtype == torch.float32 else 4e-3), err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernels of the levels loss run on CUDA")
@pytest.mark.parametrize("channels_last", [True, False])
def test_levels_loss_triton_kernels_equal_the_plain_autograd_computation_on_cuda(channels_last: bool) -> None:
    # The training step's shapes and dtype (256 levels, bf16 logits from autocast), at a small size.
    pytest.importorskip("triton")
    gen = torch.Generator().manual_seed(5)
    cfg = DepthModelConfig(kind="levels", levels=256, max_depth=15.0, input_height=64, input_width=96)
    b, h, w = 4, 64, 96
    gt = torch.rand(b, 1, h, w, generator=gen) * 17.0
    gt[torch.rand(b, 1, h, w, generator=gen) < 0.15] = 0.0
    gt, leaves, out = gt.cuda(), [], {}
    for s in range(4):
        logits = (torch.randn(b, 256, h // 2**s, w // 2**s, generator=gen) * 3.0).to(torch.bfloat16).cuda()
        if channels_last:
            logits = logits.contiguous(memory_format=torch.channels_last)
        frac = (torch.rand(b, 1, h // 2**s, w // 2**s, generator=gen) * cfg.step).cuda()
        leaves += [logits.requires_grad_(), frac.requires_grad_()]
        out[("integer", s)], out[("fractional", s)] = logits, frac
    total, parts = depth_loss(out, gt, cfg, DepthLossConfig())
    grads = torch.autograd.grad(total, leaves)
    ref_total, ref_parts = _depth_loss_autograd_reference(out, gt, cfg, DepthLossConfig())
    ref_grads = torch.autograd.grad(ref_total, leaves)
    assert float(total) == pytest.approx(float(ref_total), rel=1e-5)
    for key in ("integer", "fractional", "depth"):
        assert float(parts[key]) == pytest.approx(float(ref_parts[key]), rel=1e-5)
    for grad, ref in zip(grads, ref_grads, strict=True):
        assert grad.dtype == ref.dtype and grad.shape == ref.shape and torch.isfinite(grad).all()
        err = float((grad.double() - ref.double()).norm() / ref.double().norm())
        assert err < 4e-3, err  # the same fp32 gradient rounded to bf16 (fp32 for the fractional head)


def test_distill_loss_is_zero_against_itself_and_positive_otherwise() -> None:
    cfg = DepthModelConfig(**{**TINY, "kind": "levels"})
    net = build_depth_net(cfg).train()
    x = torch.randn(1, 3, 64, 96)
    a = net(x, with_features=True)
    zero, parts = distill_loss(a, a, cfg, DistillConfig(w_feature=1.0), 4)
    assert float(zero) == pytest.approx(0.0, abs=1e-5) and float(parts["distill_feature"]) == 0.0
    b = net(torch.randn(1, 3, 64, 96), with_features=True)
    assert float(distill_loss(a, b, cfg, DistillConfig(w_feature=1.0), 4)[0]) > 0


def test_fake_quant_keeps_gradients_and_quantises_to_8_bits() -> None:
    from model_tools.models.depth_net import fake_quant

    x = torch.linspace(-1, 3, 1000, requires_grad=True)
    q = fake_quant(x, 8)
    assert len(torch.unique(q.detach())) <= 256
    assert float((q - x).abs().max()) <= 4 / 255 / 2 + 1e-6
    q.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


@pytest.mark.parametrize(
    "fields,match",
    [({"camera": "pinhole"}, "model.camera"), ({"camera": "canonical_focal"}, "canonical_focal_px = 0.0 must be > 0"),
     ({"camera": "canonical_focal_height", "canonical_focal_px": 180.0}, "canonical_height_m = 0.0 must be > 0"),
     ({"canonical_focal_px": 180.0}, "canonical_focal_px = 180.0 must be > 0 exactly when")],
)
def test_camera_fields_are_validated(fields: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_depth_net({**TINY, **fields})


def test_camera_scale_turns_metres_into_canonical_depth_per_item() -> None:
    from model_tools.tasks.depth import camera_scale

    cfg = DepthModelConfig(camera="canonical_focal_height", canonical_focal_px=180.0, canonical_height_m=0.8,
                           input_height=32, input_width=32)
    batch = {"focal_px": torch.tensor([360.0, 180.0]), "camera_height_m": torch.tensor([0.8, 2.0])}
    scale = camera_scale(batch, cfg, torch.device("cpu"))
    assert scale.shape == (2, 1, 1, 1)
    torch.testing.assert_close(scale.view(-1), torch.tensor([2.0, 2.5]))
    focal_only = DepthModelConfig(camera="canonical_focal", canonical_focal_px=180.0, input_height=32, input_width=32)
    torch.testing.assert_close(camera_scale(batch, focal_only, torch.device("cpu")).view(-1), torch.tensor([2.0, 1.0]))
    assert camera_scale({}, DepthModelConfig(input_height=32, input_width=32), torch.device("cpu")) == 1.0
    with pytest.raises(ConfigError, match="no per-frame camera_height_m"):
        camera_scale({"focal_px": batch["focal_px"]}, cfg, torch.device("cpu"))


def test_frame_cameras_and_evaluation_use_each_frames_camera(tmp_path) -> None:
    """A folder of two cameras: the items carry each frame's focal length at the input and its height, and the
    evaluation scales a prediction of canonical depth back to metres with them."""
    from torch.utils.data import DataLoader

    from model_tools.data.synth import CameraRanges, camera_for, frame_seed, write_synthetic_folder
    from model_tools.tasks.depth import DepthTask, FrameCameras, evaluate_depth
    from model_tools.training.config import TrainConfig

    ranges = CameraRanges(64, 48)
    write_synthetic_folder(tmp_path, ranges, 2, seed=3, split="val", progress=False)
    model = {**TINY, "camera": "canonical_focal_height", "canonical_focal_px": 20.0, "canonical_height_m": 1.0}
    cfg = DepthModelConfig(**model)
    task = DepthTask(TrainConfig(task="depth", model=model, data={"root": str(tmp_path), "max_val_samples": 0}))
    dataset = task.eval_dataset("val")
    assert isinstance(dataset, FrameCameras)
    items = [dataset[i] for i in range(2)]
    for i, item in enumerate(items):
        rig = camera_for(ranges, frame_seed(3, i, "val"))
        want = math.sqrt(rig.fx * 96 / 64 * rig.fy * 64 / 48)  # whole-frame resize 64x48 -> 96x64, per axis
        assert float(item["focal_px"]) == pytest.approx(want, rel=1e-6)
        assert float(item["camera_height_m"]) == pytest.approx(rig.mount_height)

    class Canonical(torch.nn.Module):
        """Stands in for the network: predicts each item's GT in canonical metres (GT / scale)."""

        def __init__(self) -> None:
            super().__init__()
            self.config = cfg
            self.targets = [item["depth"] / (item["focal_px"] / 20.0 * item["camera_height_m"]) for item in items]

        def predict_depth(self, x: torch.Tensor, camera: torch.Tensor | None = None) -> torch.Tensor:
            return torch.stack(self.targets)

    net = build_depth_net(cfg)
    stand_in = Canonical()
    net.predict_depth = stand_in.predict_depth  # the evaluation scales it back to metres: a perfect score
    metrics = evaluate_depth(net, DataLoader(dataset, batch_size=2), 0.1, 15.0, torch.device("cpu"), 20.0)
    assert metrics["abs_rel"] == pytest.approx(0.0, abs=1e-6) and metrics["a1"] == 1.0


def test_the_camera_modulation_starts_as_the_identity_and_trains_from_weights_without_it(tmp_path) -> None:
    """A run with model.camera_input from weights of a model without it starts with that model's outputs
    for every camera (the modulation's last layer is zero), and a gradient reaches the modulation."""
    from model_tools.tasks.depth import DepthTask
    from model_tools.training.config import TrainConfig

    camera = {"camera": "canonical_focal_height", "canonical_focal_px": 20.0, "canonical_height_m": 1.0}
    torch.manual_seed(0)
    plain = build_depth_net({**TINY, **camera}).eval()
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    task = DepthTask(TrainConfig(task="depth", model={**TINY, **camera, "camera_input": True,
                                                      "init_weights": str(tmp_path / "plain.pt")}))
    aware = task.build_model().eval()
    x = torch.randn(2, 3, 64, 96)
    cameras = torch.tensor([[0.1, 0.0], [0.9, 1.0]])
    torch.testing.assert_close(aware.predict_depth(x, cameras), plain.predict_depth(x))
    aware.train()
    out = aware(x, scales=(0,), camera=cameras)
    (out[("fractional", 0)].sum() + out[("integer", 0)].float().sum()).backward()
    assert float(aware.camera_modulation.out.weight.grad.abs().sum()) > 0


def test_the_training_camera_vector_is_the_runtimes_camera_input() -> None:
    """camera_vector (training, torch) and pipelines.camera_features (runtime, numpy) agree for one camera."""
    import numpy as np

    from model_tools.tasks.depth import camera_vector
    from perception_core.model_metadata import ModelMetadata
    from perception_core.pipelines import camera_features, input_focal_px

    cfg = DepthModelConfig(camera="canonical_focal_height", canonical_focal_px=180.0, canonical_height_m=0.8,
                           camera_input=True, input_height=384, input_width=640)
    k, hw, height = [[900.0, 0, 640.0], [0, 880.0, 540.0], [0, 0, 1]], (1080, 1280), 1.9
    batch = {"focal_px": torch.tensor([input_focal_px(k, hw, (384, 640))]), "camera_height_m": torch.tensor([height])}
    meta = ModelMetadata(task="depth", input_name="rgb", input_shape=[1, 3, 384, 640], output_names=["depth"],
                         max_depth=15.0, integer_head_kind="levels", levels=256, depth_outputs="composed",
                         depth_camera="canonical_focal_height", canonical_focal_px=180.0, canonical_height_m=0.8,
                         camera_input="camera")
    np.testing.assert_allclose(camera_vector(batch, cfg, torch.device("cpu")).numpy(),
                               camera_features(meta, k, hw, height), rtol=1e-5)
    assert camera_vector(batch, DepthModelConfig(input_height=32, input_width=32), torch.device("cpu")) is None
