"""The range correction: fitting a known bias back, interpolating between cameras, applying it only where it
belongs, and its file's errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from perception_core.errors import ConfigError
from perception_core.range_correction import (
    CameraCurve,
    RangeCorrection,
    fit_camera_curve,
    load_range_correction,
    load_range_correction_for,
    save_range_correction,
)

SHA = "ab" * 32
FLAT, STEEP = CameraCurve((2.0, 10.0), (1.0, 1.0)), CameraCurve((2.0, 10.0), (1.0, 1.2))


def _grid(**changes: object) -> RangeCorrection:
    """2 x 2 cameras: focal ratios 1 and 4, height ratios 1 and 2; the bias grows with focal length only."""
    fields = {"focal_ratios": (1.0, 4.0), "height_ratios": (1.0, 2.0), "curves": ((FLAT, FLAT), (STEEP, STEEP)),
              "model_sha256": SHA}
    fields.update(changes)
    return RangeCorrection(**fields)


def test_a_range_dependent_bias_is_fitted_back_from_noisy_pairs() -> None:
    rng = np.random.default_rng(3)
    predicted = rng.uniform(0.5, 15.0, 400_000)
    truth = predicted * (1.0 + 0.006 * predicted) * np.exp(rng.normal(0.0, 0.05, predicted.size))
    curve, _ = fit_camera_curve(predicted, truth, np.arange(0.0, 16.0, 1.0), 1000)
    depths = np.asarray(curve.depths_m)
    assert len(depths) == 15
    np.testing.assert_allclose(curve.factors, 1.0 + 0.006 * depths, atol=0.004)
    corrected = predicted * curve.at(predicted)
    far = predicted > 10
    assert abs(np.median(truth[far] / corrected[far]) - 1.0) < 0.003 < abs(np.median(truth[far] / predicted[far]) - 1.0)


def test_sparse_and_implausible_bins_are_left_out() -> None:
    predicted = np.concatenate([np.full(5000, 2.5), np.full(5000, 5.5), np.full(50, 8.5)])
    truth = np.concatenate([np.full(5000, 2.5 * 3.0), np.full(5000, 5.5 * 1.02), np.full(50, 8.5)])
    curve, _ = fit_camera_curve(predicted, truth, np.arange(0.0, 10.0, 1.0), 1000)
    assert curve.depths_m == (5.5,) and curve.factors == pytest.approx((1.02,))
    with pytest.raises(ConfigError, match="no bin of predicted depth holds 100000 pixels"):
        fit_camera_curve(predicted, truth, np.arange(0.0, 10.0, 1.0), 100_000)


def test_a_bias_is_corrected_only_beyond_the_dead_band_and_the_drives_spread_is_recorded() -> None:
    """Far (8-9 m) every drive reads 6 % +- 1 % too near: corrected by 6 % less the 2 % dead band. Near (2-3 m)
    the drives disagree (-3 % to +4 %): their 0.5 % mean bias is within the dead band, so it is left alone."""
    rng = np.random.default_rng(5)
    near_bias, far_bias = [0.97, 1.04, 0.99, 1.02, 0.98, 1.03], [1.05, 1.07, 1.06, 1.05, 1.07, 1.06]
    predicted, truth, drive = [], [], []
    for index, (near, far) in enumerate(zip(near_bias, far_bias, strict=True)):
        for lo, bias in ((2.0, near), (8.0, far)):
            d = rng.uniform(lo, lo + 1.0, 3000)
            predicted.append(d)
            truth.append(d * bias * np.exp(rng.normal(0.0, 0.02, d.size)))
            drive.append(np.full(d.size, index))
    curve, bins = fit_camera_curve(np.concatenate(predicted), np.concatenate(truth), np.arange(0.0, 10.0, 1.0), 1000,
                                   np.concatenate(drive), dead_band=0.02)
    near_bin, far_bin = bins
    assert near_bin["spread"] == pytest.approx(np.std(near_bias, ddof=1), abs=0.003)
    assert near_bin["factor"] == 1.0 and curve.factors[0] == 1.0
    assert far_bin["raw_factor"] == pytest.approx(1.06, abs=0.003)
    assert far_bin["factor"] == pytest.approx(far_bin["raw_factor"] - 0.02)
    assert curve.factors[1] == pytest.approx(far_bin["factor"])


def test_apply_scales_finite_depth_only_and_holds_the_ends() -> None:
    depth = np.array([1.0, 6.0, 20.0, np.nan, np.inf, -np.inf, 0.0], np.float32)
    out = _grid().apply(depth, 4.0, 1.0)
    np.testing.assert_allclose(out[:3], [1.0, 6.0 * 1.1, 20.0 * 1.2], rtol=1e-6)
    assert np.isnan(out[3]) and out[4] == np.inf and out[5] == -np.inf and out[6] == 0.0


def test_between_cameras_the_factors_are_bilinear_in_the_logs_of_the_ratios() -> None:
    grid = _grid()
    depth = np.array([10.0])
    assert grid.factors_at(depth, 2.0, 1.0)[0] == pytest.approx(1.1)  # half-way in log from 1 to 4
    assert grid.factors_at(depth, 2.0, math.sqrt(2.0))[0] == pytest.approx(1.1)  # the height axis adds nothing here
    assert grid.factors_at(depth, 4.0 ** 0.25, 1.5)[0] == pytest.approx(1.05)
    assert grid.factors_at(depth, 4.3, 1.0)[0] == pytest.approx(1.2)  # just beyond the edge: the edge's curve
    one = _grid(focal_ratios=(2.0,), height_ratios=(1.0,), curves=((STEEP,),))
    assert one.factors_at(depth, 2.1, 1.05)[0] == pytest.approx(1.2)


def test_it_refuses_another_model_or_a_camera_off_the_grid_and_names_why() -> None:
    grid = _grid()
    assert grid.model_refusal(SHA) is None and grid.camera_refusal(2.0, 1.5) is None
    assert grid.camera_refusal(4.0 * 1.09, 1.0 / 1.09) is None  # within 0.1 in log of the grid's edge
    assert grid.model_refusal("cd" * 32) == "measured for model abababababab, running cdcdcdcdcdcd"
    assert grid.model_refusal("") == "measured for model abababababab, running (no hash)"
    assert grid.camera_refusal(4.0 * 1.2, 1.5) == ("measured for other cameras (focal ratio 1.000-4.000, this camera "
                                                    "4.800, more than 0.1 apart in log)")
    assert grid.camera_refusal(2.0, 0.5).startswith("measured for other cameras (height ratio 1.000-2.000")
    one = _grid(focal_ratios=(2.0,), height_ratios=(1.0,), curves=((STEEP,),))
    assert one.camera_refusal(2.0, 1.3).startswith("measured for other cameras (height ratio 1.000, this camera 1.300")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: CameraCurve((2.0, 2.0), (1.0, 1.0)), "depths_m must be positive and increasing"),
    (lambda: CameraCurve((2.0,), (1.0, 1.0)), "equal-length lists"),
    (lambda: CameraCurve((2.0, 3.0), (1.0, -1.0)), "factors must be positive"),
    (lambda: CameraCurve((2.0, 2.1), (1.2, 1.0)), "may not reorder depths"),
    (lambda: _grid(focal_ratios=(4.0, 1.0)), "focal_ratios must be positive and increasing"),
    (lambda: _grid(curves=((FLAT,), (STEEP,))), "curves must be 2 x 2"),
])
def test_an_inconsistent_correction_is_refused(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_the_file_round_trips_and_its_problems_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    grid = _grid(source={"seeds": [1, 2]})
    save_range_correction(grid, path)
    assert load_range_correction(path) == grid
    with pytest.raises(ConfigError, match=f"range correction {tmp_path / 'missing.yaml'}: cannot read it"):
        load_range_correction(tmp_path / "missing.yaml")
    path.write_text("curves: []\n")
    with pytest.raises(ConfigError, match=f"range correction {path}: field 'format' must be"):
        load_range_correction(path)
    path.write_text("format: perception_core.range_correction/2\nfocal_ratios: [1]\n")
    with pytest.raises(ConfigError, match="missing field\\(s\\) model_sha256, height_ratios, curves"):
        load_range_correction(path)
    path.write_text(f"format: perception_core.range_correction/2\nmodel_sha256: {SHA}\nfocal_ratios: [1]\n"
                    "height_ratios: [1]\ncurves: [[{depths_m: [1, x], factors: [1, 1]}]]\n")
    with pytest.raises(ConfigError, match="is missing or not a number"):
        load_range_correction(path)
    path.write_text(f"format: perception_core.range_correction/2\nmodel_sha256: {SHA}\nfocal_ratios: [1]\n"
                    "height_ratios: [1]\ncurves: [[{depths_m: [1, 2], factors: [1, 1]}], []]\n")
    with pytest.raises(ConfigError, match=f"{path}: range correction: curves must be 1 x 1"):
        load_range_correction(path)
    path.write_text(": [")
    with pytest.raises(ConfigError, match="not YAML"):
        load_range_correction(path)


def test_a_folder_gives_the_file_measured_for_the_running_model(tmp_path: Path) -> None:
    fp32, int8 = _grid(), _grid(model_sha256="cd" * 32, curves=((STEEP, STEEP), (STEEP, STEEP)))
    save_range_correction(fp32, tmp_path / "fp32.yaml")
    save_range_correction(int8, tmp_path / "int8.yaml")
    assert load_range_correction_for(tmp_path, SHA) == (fp32, "")
    assert load_range_correction_for(tmp_path, "cd" * 32) == (int8, "")
    assert load_range_correction_for(tmp_path, "ef" * 32) == (
        None, f"none of the 2 correction file(s) in {tmp_path} was measured for model efefefefefef")
    assert load_range_correction_for(tmp_path / "int8.yaml", SHA) == (int8, "")  # a file: its model checked later
    (tmp_path / "broken.yaml").write_text("format: perception_core.range_correction/2\n")
    with pytest.raises(ConfigError, match=f"range correction {tmp_path / 'broken.yaml'}: missing field"):
        load_range_correction_for(tmp_path, SHA)


def test_another_export_of_the_same_weights_at_the_same_input_is_the_same_model(tmp_path: Path) -> None:
    """Two machines' exports of one checkpoint differ in their graph's hash (folded weights' last bits): the
    correction measured on one applies to the other by the weights' hash and input shape, and nowhere else."""
    from perception_core.model_metadata import ModelMetadata

    weights = "12" * 32
    grid = _grid(weights_sha256=weights, input_shape=(1, 3, 768, 896))

    def exported(content: str, weights_sha256: str = weights, shape: tuple[int, ...] = (1, 3, 768, 896)):
        return ModelMetadata(task="depth", input_name="rgb", input_shape=list(shape), output_names=["depth"],
                             content_sha256=content,
                             extra={"weights_sha256": weights_sha256} if weights_sha256 else {})

    assert grid.model_refusal(exported(SHA)) is None  # the graph it was measured on
    assert grid.model_refusal(exported("cd" * 32)) is None  # another export of those weights
    assert grid.model_refusal(exported("cd" * 32, shape=(1, 3, 544, 640))) == (
        "measured for model abababababab (weights 121212121212 at [1, 3, 768, 896]), running cdcdcdcdcdcd "
        "(weights 121212121212 at [1, 3, 544, 640])")  # the same weights at another input size behave otherwise
    assert grid.model_refusal(exported("cd" * 32, weights_sha256="34" * 32)) is not None
    assert grid.model_refusal(exported("cd" * 32, weights_sha256="")) is not None  # an export without the hash
    assert _grid().model_refusal(exported("cd" * 32)) is not None  # a correction that names no weights
    # The file keeps both, and a folder's file is found by them.
    save_range_correction(grid, tmp_path / "fp32.yaml")
    loaded = load_range_correction(tmp_path / "fp32.yaml")
    assert (loaded.weights_sha256, loaded.input_shape) == (weights, (1, 3, 768, 896))
    assert load_range_correction_for(tmp_path, exported("ef" * 32))[0] == loaded
