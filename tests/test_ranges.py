"""Activation ranges: the streaming histogram, the least-squared-error range it picks, and the
calibration cache through which ONNX Runtime's quantize_static takes them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import const, make_model
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from edge_sdk import ranges
from edge_sdk.errors import DataError
from edge_sdk.model import load_model
from edge_sdk.ranges import Histogram, RangeMethod, activation_ranges, write_calibration_cache


def fake_quant_mse(values: np.ndarray, low: float, high: float, levels: int = 255) -> float:
    """The squared error of quantizing `values` onto ONNX Runtime's asymmetric grid for [low, high]."""
    scale = (high - low) / levels
    zero = np.round(-low / scale)
    q = np.clip(np.round(values / scale) + zero, 0, levels)
    return float(np.mean(((q - zero) * scale - values) ** 2))


def histogram_of(batches) -> Histogram:
    h = Histogram()
    for batch in batches:
        h.add(np.asarray(batch, np.float32))
    return h


def test_a_rare_outlier_no_longer_sets_the_grid():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(ranges.SUBSAMPLE) for _ in range(128)]  # a million values
    batches[7][100] = 20.0  # one of them 5 times beyond the rest
    values = np.concatenate(batches)
    h = histogram_of(batches)
    low, high = h.best_range(255)
    assert h.extremes() == (pytest.approx(values.min()), 20.0)
    assert high < 8 and low < -3  # the outlier is clipped, the Gaussian's tails are kept
    assert fake_quant_mse(values, low, high) < 0.5 * fake_quant_mse(values, values.min(), values.max())


def test_non_negative_tensors_keep_zero_as_their_low_end_and_zeros_cost_nothing():
    rng = np.random.default_rng(1)
    relu = [np.maximum(rng.standard_normal(2048), 0) for _ in range(10)]  # half exact zeros
    h = histogram_of(relu)
    low, high = h.best_range(255)
    assert low == 0.0 and 0 < high <= h.maximum
    assert h.zeros == pytest.approx(sum(int((b == 0).sum()) for b in relu))


def test_a_growing_range_is_rebinned_and_keeps_every_count():
    h = histogram_of([np.linspace(-1, 1, 1001), np.linspace(-50, 80, 1001), np.linspace(0.1, 0.2, 10)])
    assert h.extremes() == (-50.0, 80.0)
    assert h.counts.sum() + h.zeros == 2012
    assert h.low <= -50 and h.high >= 80


def test_large_tensors_are_subsampled_but_their_extremes_are_exact():
    values = np.random.default_rng(2).standard_normal(ranges.SUBSAMPLE * 8).astype(np.float32)
    h = histogram_of([values])
    assert h.extremes() == (float(values.min()), float(values.max()))
    assert h.counts.sum() + h.zeros <= ranges.SUBSAMPLE + 2


def test_symmetric_grids_get_symmetric_ranges():
    values = np.random.default_rng(3).standard_normal(10000) * 2 + 1
    low, high = histogram_of([values]).best_range(255, symmetric=True)
    assert low == -high and 0 < high <= np.abs(values).max()


def test_non_finite_values_are_a_data_error():
    with pytest.raises(DataError, match="NaN or inf"):
        Histogram().add(np.array([1.0, np.nan], np.float32))


def two_layer_model():
    rng = np.random.default_rng(4)
    inits = [
        const("W1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32)),
        const("W2", rng.standard_normal((4, 8, 1, 1)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "W2"], ["y"], name="conv2"),
    ]
    return load_model(make_model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])], inits), simplify=False)


def samples(n: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def test_every_float_tensor_gets_a_range_and_minmax_matches_the_data():
    model = two_layer_model()
    data = samples(6)
    found = activation_ranges(model.proto, data, RangeMethod.MINMAX)
    assert list(found) == ["x", "c1", "r1", "y"]
    xs = np.concatenate([s["x"] for s in data])
    assert found["x"] == (pytest.approx(float(xs.min())), pytest.approx(float(xs.max())))
    assert found["r1"][0] == 0.0
    assert found["c1"] == found["r1"], "a tensor read only by a Relu takes the Relu's range"
    wide = activation_ranges(model.proto, data, RangeMethod.MSE, levels=65535)  # 16 bits: the extremes
    assert wide == found


def test_quantize_static_takes_the_ranges_from_the_cache_without_calibrating(tmp_path):
    model = two_layer_model()
    chosen = {"x": (-2.0, 3.0), "c1": (-4.0, 4.0), "r1": (0.0, 5.1), "y": (-7.0, 9.0)}
    cache = tmp_path / "ranges.json"
    write_calibration_cache(chosen, cache)
    source, out = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model.proto, source)
    quantize_static(
        source,
        out,
        None,
        calibration_cache_path=cache,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    quantized = onnx.load(str(out))
    values = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    spans = sorted(255 * float(values[n.input[1]]) for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    assert spans == pytest.approx([5.0, 5.1, 16.0], rel=1e-6)  # x, r1 (conv1's output after Relu), y


def test_inputs_of_relu_and_clip_chains_are_not_observed():
    nodes = [
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Clip", ["b", "lo", "hi"], ["c"], name="clip"),
        helper.make_node("Relu", ["c"], ["y"], name="out"),
        helper.make_node("Neg", ["x"], ["a"], name="neg"),
    ]
    inits = [const("lo", np.float32(0.0)), const("hi", np.float32(6.0))]
    proto = load_model(
        make_model([nodes[3], *nodes[:3]], [("x", [1, 4])], [("y", [1, 4])], inits), simplify=False
    ).proto
    assert ranges.clipped_inputs(proto) == {"a": "b", "b": "c", "c": "y"}
    data = [{"x": np.array([[-9.0, -1.0, 2.0, 3.0]], np.float32)}]
    found = activation_ranges(proto, data, RangeMethod.MINMAX)
    assert found["a"] == found["b"] == found["c"] == found["y"] == (0.0, 6.0)
