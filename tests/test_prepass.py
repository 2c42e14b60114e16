"""Float pre-passes: tiny graphs built here, seeded data, checks on the float function, the weight
ranges and the error of the simulated int8 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import const, make_model
from onnx import helper, numpy_helper

from edge_sdk import prepass
from edge_sdk.equalize import equalize
from edge_sdk.errors import DataError
from edge_sdk.model import Model, load_model
from edge_sdk.prepass import correct_bias, round_weights


def spread_rows(rng: np.random.Generator, shape: tuple[int, ...], axis: int = 0) -> np.ndarray:
    """Random weights whose channels along `axis` differ in range by up to 10^4."""
    w = rng.standard_normal(shape)
    scales = 10.0 ** rng.uniform(-2, 2, shape[axis])
    return (w * np.expand_dims(scales, [i for i in range(len(shape)) if i != axis])).astype(np.float32)


def pair_model(activation: str | None = "Relu", *, depthwise: bool = False, clip=(0.0, 6.0)) -> Model:
    """Conv(3x3) -> activation -> Conv(1x1), or depthwise 3x3 -> activation -> pointwise."""
    rng = np.random.default_rng(0)
    c_in, mid = (8, 8) if depthwise else (4, 8)
    w1 = spread_rows(rng, (mid, 1 if depthwise else c_in, 3, 3))
    inits = [const("W1", w1), const("B1", rng.standard_normal(mid).astype(np.float32))]
    inits += [const("W2", spread_rows(rng, (6, mid, 1, 1), axis=1)), const("B2", np.zeros(6, np.float32))]
    conv1 = helper.make_node(
        "Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], group=mid if depthwise else 1
    )
    nodes, link = [conv1], "c1"
    if activation == "Clip":
        inits += [const("lo", np.array(clip[0], np.float32)), const("hi", np.array(clip[1], np.float32))]
        nodes.append(helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="act"))
        link = "a1"
    elif activation is not None:
        nodes.append(helper.make_node(activation, ["c1"], ["a1"], name="act"))
        link = "a1"
    nodes.append(helper.make_node("Conv", [link, "W2", "B2"], ["y"], name="conv2"))
    proto = make_model(nodes, [("x", [1, c_in, 8, 8])], [("y", [1, 6, 8, 8])], inits)
    return load_model(proto, simplify=False)


def single_layer_model(kind: str) -> Model:
    """One Conv (no bias), one depthwise Conv, or one Gemm (transB=0, alpha and beta not 1)."""
    rng = np.random.default_rng(1)
    if kind == "gemm":
        inits = [const("W", spread_rows(rng, (16, 5), axis=1)), const("C", np.zeros(5, np.float32))]
        node = helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="fc", alpha=0.5, beta=2.0)
        return load_model(make_model([node], [("x", [1, 16])], [("y", [1, 5])], inits), simplify=False)
    depthwise = kind == "depthwise"
    w = spread_rows(rng, (6, 1 if depthwise else 3, 3, 3))
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1], group=6 if depthwise else 1)
    channels = 6 if depthwise else 3
    return load_model(
        make_model([node], [("x", [1, channels, 8, 8])], [("y", [1, 6, 8, 8])], [const("W", w)]), simplify=False
    )


def samples(model: Model, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Inputs with a non-zero mean and correlated values, like images after normalisation: smooth
    images (neighbouring pixels alike), or feature vectors mixed from a few latent factors."""
    rng = np.random.default_rng(seed)
    spec = model.inputs[0]
    if len(spec.shape) == 4:
        low = rng.uniform(0.0, 1.0, (count, spec.shape[1], spec.shape[2] // 2, spec.shape[3] // 2))
        x = np.kron(low, np.ones((1, 1, 2, 2))) + 0.05 * rng.standard_normal((count, *spec.shape[1:]))
    else:
        mixing = np.random.default_rng(0).standard_normal((4, spec.shape[1]))
        x = 0.5 + rng.standard_normal((count, 4)) @ mixing + 0.1 * rng.standard_normal((count, spec.shape[1]))
    return [{spec.name: sample[None].astype(np.float32)} for sample in x]


def run(model: Model | onnx.ModelProto, data: list[dict[str, np.ndarray]]) -> np.ndarray:
    proto = model.proto if isinstance(model, Model) else model
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, d)[0] for d in data])


def weights(model: Model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.proto.graph.initializer}


def fake_quant(w: np.ndarray, axis: int, *, per_channel: bool = True) -> np.ndarray:
    """onnxruntime's symmetric int8 weight quantization, written out independently."""
    reduce = tuple(i for i in range(w.ndim) if i != axis) if per_channel else None
    absmax = np.abs(w).max(axis=reduce, keepdims=True).astype(np.float64)
    scale = np.where(absmax > 0, 2 * absmax / 254, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale), -127, 127) * scale


def with_weights(model: Model, new: dict[str, np.ndarray]) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    for t in proto.graph.initializer:
        if t.name in new:
            t.CopyFrom(numpy_helper.from_array(new[t.name], t.name))
    return proto


def quantized_weights(model: Model, name: str = "W", axis: int = 0) -> onnx.ModelProto:
    """The model with weight `name` replaced by what an int8 engine computes from it."""
    return with_weights(model, {name: fake_quant(weights(model)[name], axis)})


# ---------------------------------------------------------------- cross-layer equalization


@pytest.mark.parametrize(
    ("activation", "depthwise"), [("Relu", False), ("Relu", True), (None, False), ("LeakyRelu", True)]
)
def test_equalize_keeps_the_function_and_evens_the_ranges(activation, depthwise):
    model = pair_model(activation, depthwise=depthwise)
    equalized, report = equalize(model)
    data = samples(model, 4, seed=2)
    reference = run(model, data)
    assert report.changed == 1 and report.name == "cross-layer equalization"
    assert np.abs(run(equalized, data) - reference).max() < 1e-5 * np.abs(reference).max()
    before, after = weights(model), weights(equalized)

    def ranges(w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return np.abs(w["W1"]).reshape(w["W1"].shape[0], -1).max(1), np.abs(w["W2"]).max(axis=(0, 2, 3))

    r1, r2 = ranges(before)
    e1, e2 = ranges(after)
    np.testing.assert_allclose(e1, e2, rtol=1e-4)  # one pair: both sides end at sqrt(r1 r2)
    np.testing.assert_allclose(e1, np.sqrt(r1 * r2), rtol=1e-4)
    assert e1.max() / e1.min() < r1.max() / r1.min()


def test_equalize_leaves_relu6_pairs_alone():
    model = pair_model("Clip", clip=(0.0, 6.0))
    equalized, report = equalize(model)
    assert report.changed == 0 and "1 pairs behind a bounded Clip (ReLU6) left alone" in report.detail
    for name, value in weights(model).items():
        np.testing.assert_array_equal(weights(equalized)[name], value)


def test_equalize_takes_an_unbounded_clip_like_relu():
    model = pair_model("Clip", clip=(0.0, np.inf))
    equalized, report = equalize(model)
    data = samples(model, 2, seed=3)
    assert report.changed == 1
    np.testing.assert_allclose(
        run(equalized, data), run(model, data), rtol=1e-5, atol=1e-5 * np.abs(run(model, data)).max()
    )


def test_equalize_skips_layers_that_are_not_pairs():
    """A lone Conv, its output the graph's, has nothing to pair with."""
    equalized, report = equalize(single_layer_model("conv"))
    assert report.changed == 0 and equalized.passes[-1] == report.detail


# ---------------------------------------------------------------- bias correction


@pytest.mark.parametrize("kind", ["conv", "depthwise", "gemm"])
def test_correct_bias_removes_the_mean_error_of_int8_weights(kind):
    model = single_layer_model(kind)
    axis = 1 if kind == "gemm" else 0
    count = 400 if kind == "gemm" else 16  # Gemm: one row per sample, and a mean needs many
    calibration, held_out = samples(model, count, seed=4), samples(model, count, seed=5)
    corrected, report = correct_bias(model, calibration)
    assert report.changed == 1 and report.name == "bias correction"
    reference = run(model, held_out)
    mean_axes = (0, 2, 3) if reference.ndim == 4 else 0
    error_before = np.abs((run(quantized_weights(model, axis=axis), held_out) - reference).mean(axis=mean_axes))
    error_after = np.abs((run(quantized_weights(corrected, axis=axis), held_out) - reference).mean(axis=mean_axes))
    assert error_after.mean() < 0.25 * error_before.mean()


def test_correct_bias_adds_a_bias_where_there_was_none():
    model = single_layer_model("conv")
    corrected, _ = correct_bias(model, samples(model, 4, seed=6))
    (conv,) = corrected.proto.graph.node
    assert len(conv.input) == 3 and weights(corrected)[conv.input[2]].shape == (6,)
    assert len(model.proto.graph.node[0].input) == 2


def test_correct_bias_leaves_alone_a_layer_whose_mean_comes_from_few_positions():
    model = single_layer_model("gemm")  # one row per sample: 8 samples give a mean of 8 rows
    corrected, report = correct_bias(model, samples(model, 8, seed=4))
    assert report.changed == 0 and "1 read too few positions for a steady mean" in report.detail
    assert all(np.array_equal(a, weights(model)[name]) for name, a in weights(corrected).items())


@pytest.mark.parametrize(
    ("kernel", "stride", "pads", "dilation", "groups"),
    [(3, 2, (1, 1, 1, 1), 1, 1), (5, 1, (2, 2, 2, 2), 1, 4), (3, 1, (0, 1, 1, 0), 2, 2), (1, 1, (0, 0, 0, 0), 1, 1)],
)
def test_patch_sums_equal_the_sums_of_the_patches(kernel, stride, pads, dilation, groups):
    attrs = {"kernel_shape": [kernel] * 2, "strides": [stride] * 2, "pads": list(pads), "dilations": [dilation] * 2}
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=groups, **attrs)
    layer = prepass._Layer(node, "w", None, groups, 1.0)
    x = np.random.default_rng(0).standard_normal((2, 4, 11, 9)).astype(np.float32)
    shape = (8, 4 // groups, kernel, kernel)
    patches = prepass._patches(x, layer, shape)
    total, count = prepass._patch_sums(x, layer, shape)
    assert count == patches.shape[1]
    np.testing.assert_allclose(total, patches.sum(axis=1, dtype=np.float64), rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------- weight rounding


@pytest.mark.parametrize("kind", ["conv", "depthwise", "gemm"])
def test_round_weights_beats_nearest_rounding_on_held_out_data(kind):
    model = single_layer_model(kind)
    axis = 1 if kind == "gemm" else 0
    calibration = samples(model, 200 if kind == "gemm" else 16, seed=7)  # Gemm: one row per sample
    rounded, report = round_weights(model, calibration)
    nearest, _ = correct_bias(model, calibration)
    held_out = samples(model, 16, seed=8)
    reference = run(model, held_out)
    error_nearest = np.square(run(quantized_weights(nearest, axis=axis), held_out) - reference).mean()
    error_rounded = np.square(run(quantized_weights(rounded, axis=axis), held_out) - reference).mean()
    assert report.changed == 1 and error_rounded < 0.8 * error_nearest


def test_round_weights_falls_back_to_nearest_rounding_with_fewer_samples_than_inputs():
    """A covariance from fewer samples than inputs is singular: GPTQ would fit noise."""
    model = single_layer_model("gemm")
    calibration = samples(model, 8, seed=7)
    rounded, _ = round_weights(model, calibration)
    np.testing.assert_array_equal(weights(rounded)["W"], fake_quant(weights(model)["W"], 1))


def test_round_weights_lands_on_the_engine_grid_with_the_same_scales():
    model = single_layer_model("conv")
    rounded, _ = round_weights(model, samples(model, 8, seed=9))
    before, after = weights(model)["W"], weights(rounded)["W"]
    np.testing.assert_array_equal(np.abs(after).max(axis=(1, 2, 3)), np.abs(before).max(axis=(1, 2, 3)))
    np.testing.assert_allclose(fake_quant(after, 0), after, rtol=0, atol=1e-6 * np.abs(after).max())
    assert not np.array_equal(fake_quant(before, 0), after)  # not nearest rounding


def test_round_weights_survives_onnxruntime_quantization_unchanged(tmp_path: Path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    model = single_layer_model("conv")
    calibration = samples(model, 8, seed=10)
    rounded, _ = round_weights(model, calibration)
    onnx.save(rounded.proto, tmp_path / "float.onnx")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    quantization.quantize_static(
        str(tmp_path / "float.onnx"),
        str(tmp_path / "int8.onnx"),
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
    )
    qdq = onnx.load(tmp_path / "int8.onnx")
    found = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    dequantize = next(
        n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and found[n.input[0]].dtype == np.int8
    )
    values = found[dequantize.input[0]] * found[dequantize.input[1]].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(values, weights(rounded)["W"], rtol=0, atol=1e-6 * np.abs(values).max())


def test_round_weights_per_tensor_keeps_one_scale():
    model = single_layer_model("conv")
    rounded, report = round_weights(model, samples(model, 8, seed=11), per_channel=False)
    after = weights(rounded)["W"]
    assert "per tensor" in report.detail
    assert np.abs(after).max() == np.abs(weights(model)["W"]).max()
    np.testing.assert_allclose(fake_quant(after, 0, per_channel=False), after, rtol=0, atol=1e-6 * np.abs(after).max())


def test_round_weights_gathers_covariances_within_its_memory_budget(monkeypatch):
    """Layers whose covariances do not fit together are gathered in separate passes over the data,
    with the same result; a layer wider than the whole budget is rounded to nearest."""
    model = pair_model("Relu")  # conv1 reads 4x3x3 = 36 inputs (10,368 bytes), conv2 reads 8 (512 bytes)
    calibration = samples(model, 4, seed=13)
    together = weights(round_weights(model, calibration)[0])
    monkeypatch.setattr(prepass, "_BUDGET_BYTES", 11_000)
    apart = weights(round_weights(model, iter(calibration))[0])  # a one-shot iterator is read twice
    for name, value in together.items():
        np.testing.assert_array_equal(apart[name], value)
    monkeypatch.setattr(prepass, "_BUDGET_BYTES", 1_000)
    narrow, report = round_weights(model, calibration)
    assert "1 layers too wide for GPTQ rounded to nearest" in report.detail
    np.testing.assert_array_equal(weights(narrow)["W1"], fake_quant(weights(model)["W1"], 0))
    np.testing.assert_array_equal(weights(narrow)["W2"], together["W2"])


def test_a_model_without_conv_or_gemm_passes_through():
    model = load_model(make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])]))
    for prepass_function in (correct_bias, round_weights):
        out, report = prepass_function(model, [{"x": np.ones((1, 4), np.float32)}])
        assert report.changed == 0 and out.proto.graph.node[0].op_type == "Relu"
    assert equalize(model)[1].changed == 0


# ---------------------------------------------------------------- common contract


PASSES = {
    "equalize": lambda m: equalize(m),
    "correct_bias": lambda m: correct_bias(m, samples(m, 4, seed=12)),
    "round_weights": lambda m: round_weights(m, samples(m, 4, seed=12)),
}


@pytest.mark.parametrize("name", PASSES)
def test_passes_do_not_touch_their_input_and_are_deterministic(name):
    model = pair_model("Relu", depthwise=True)
    before = model.proto.SerializeToString(deterministic=True)
    first, report = PASSES[name](model)
    second, _ = PASSES[name](model)
    assert model.proto.SerializeToString(deterministic=True) == before
    assert first.proto.SerializeToString(deterministic=True) == second.proto.SerializeToString(deterministic=True)
    assert first.proto.SerializeToString(deterministic=True) != before
    assert first.passes == (*model.passes, report.detail) and first.name == model.name
    onnx.checker.check_model(first.proto)


@pytest.mark.parametrize("prepass", [correct_bias, round_weights])
def test_data_passes_refuse_empty_or_mismatched_data(prepass):
    model = single_layer_model("conv")
    with pytest.raises(DataError, match="no calibration samples"):
        prepass(model, [])
    with pytest.raises(DataError, match=r"sample 0 does not fit the model .*input: x .*Got: 5 Expected: 3"):
        prepass(model, [{"x": np.zeros((1, 5, 8, 8), np.float32)}])
    with pytest.raises(DataError, match=r"sample 1 does not fit the model .*'x'.* missing"):
        prepass(model, [{"x": np.zeros((1, 3, 8, 8), np.float32)}, {}])
    with pytest.raises(DataError, match="does not fit the model"):
        prepass(model, [{"x": np.zeros((1, 3, 8, 8), np.int32)}])
