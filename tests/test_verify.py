"""verify: float vs quantized ONNX models, quantized for real by ONNX Runtime and NNCF."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import const, make_model
from onnx import helper
from onnxruntime import quantization as ort_quant

from edge_sdk.errors import DataError, QuantizeError, UsageError
from edge_sdk.model import load_model
from edge_sdk.verify import is_quantized, match_tensors, run_outputs, verify

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "edge_sdk" / "assets" / "demo_mnist.onnx"
DEMO_DATA = REPO / "calibration" / "demo"


@pytest.fixture(scope="module")
def nncf():
    """NNCF with its telemetry off. NNCF_CI (nncf/definitions.py, read in nncf/telemetry/wrapper.py)
    swaps NNCF's telemetry object for a stub that sends nothing; CI=true makes openvino_telemetry
    (openvino_telemetry/utils/opt_in_checker.py, disable_in_ci) decline consent at import, so it
    writes no client id under ~/intel either. Both are read once, when nncf is first imported."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NNCF_CI", "1")
        env.setenv("CI", "true")
        return pytest.importorskip("nncf", reason="nncf is not installed (pip install nncf)")


def small_classifier() -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> Flatten -> Gemm: five classes from a 3x16x16 image."""
    rng = np.random.default_rng(0)
    inits = [
        const("W1", (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)),
        const("B1", (rng.standard_normal(4) * 0.1).astype(np.float32)),
        const("W2", (rng.standard_normal((5, 4 * 8 * 8)) * 0.1).astype(np.float32)),
        const("B2", np.zeros(5, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W2", "B2"], ["y"], name="fc", transB=1),
    ]
    return make_model(nodes, [("x", [1, 3, 16, 16])], [("y", [1, 5])], inits)


def samples(count: int, seed: int, shape=(1, 3, 16, 16), name: str = "x") -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


class Reader(ort_quant.CalibrationDataReader):
    def __init__(self, data: list[dict[str, np.ndarray]]):
        self.items = iter(data)

    def get_next(self):
        return next(self.items, None)


def quantize_ort(model: onnx.ModelProto, calibration: list, tmp_path: Path) -> onnx.ModelProto:
    source, target = tmp_path / "float.onnx", tmp_path / "qdq_ort.onnx"
    onnx.save(model, source)
    ort_quant.quantize_static(
        str(source),
        str(target),
        Reader(calibration),
        quant_format=ort_quant.QuantFormat.QDQ,
        per_channel=True,
        calibrate_method=ort_quant.CalibrationMethod.MinMax,
        activation_type=ort_quant.QuantType.QInt8,
        weight_type=ort_quant.QuantType.QInt8,
    )
    return onnx.load(target)


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    return small_classifier()


@pytest.fixture(scope="module")
def ort_model(float_model, tmp_path_factory) -> onnx.ModelProto:
    return quantize_ort(float_model, samples(32, seed=0), tmp_path_factory.mktemp("ort"))


@pytest.fixture(scope="module")
def nncf_model(float_model, nncf) -> onnx.ModelProto:
    return nncf.quantize(float_model, nncf.Dataset(samples(32, seed=0)), subset_size=32)


def test_identical_models_are_exact(float_model):
    fidelity = verify(float_model, float_model, samples(8, seed=1), per_layer=True)
    (out,) = fidelity.outputs
    assert fidelity.samples == 8
    assert out.sqnr_db == math.inf and fidelity.worst_sqnr_db == math.inf
    assert out.cosine == pytest.approx(1.0) and out.max_abs_error == 0.0 and out.top1_agreement == 1.0
    assert all(layer.sqnr_db == math.inf for layer in fidelity.layers)
    as_dict = json.loads(json.dumps(fidelity.to_dict(), allow_nan=False))
    assert as_dict["outputs"][0]["sqnr_db"] is None and as_dict["layers"][0]["sqnr_db"] is None


def test_ort_qdq_model_is_close_but_not_exact(float_model, ort_model):
    fidelity = verify(ort_model, float_model, samples(40, seed=2))
    (out,) = fidelity.outputs
    assert 15.0 < out.sqnr_db < 60.0
    assert 0.98 < out.cosine < 1.0
    # logits beyond the calibrated output range are clipped, so the worst error is a visible share
    largest = np.abs(run_outputs(float_model, samples(40, seed=2))["y"]).max()
    assert 0.0 < out.max_abs_error < 0.5 * largest
    assert out.top1_agreement is not None and out.top1_agreement >= 0.9
    assert out.accuracy_float is None and out.accuracy_quant is None
    assert fidelity.layers == ()


def test_nncf_qdq_model_is_close_but_not_exact(float_model, nncf_model):
    (out,) = verify(nncf_model, float_model, samples(40, seed=2)).outputs
    assert 15.0 < out.sqnr_db < 60.0 and 0.98 < out.cosine < 1.0
    assert out.top1_agreement is not None and out.top1_agreement >= 0.9


def weight_qdq_classifier(scale: float | None) -> tuple[onnx.ModelProto, np.ndarray]:
    """y = x @ W, or with `scale` y = x @ DequantizeLinear(round(W / scale)); returns the model and
    the weights it effectively uses."""
    weights = np.random.default_rng(3).standard_normal((6, 3)).astype(np.float32)
    if scale is None:
        node = helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")
        return make_model([node], [("x", [1, 6])], [("y", [1, 3])], [const("W", weights)]), weights
    quantized = np.clip(np.round(weights / scale), -127, 127).astype(np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["W_q", "W_scale"], ["W_dq"], name="W_dequantize"),
        helper.make_node("MatMul", ["x", "W_dq"], ["y"], name="matmul"),
    ]
    inits = [const("W_q", quantized), const("W_scale", np.float32(scale))]
    return make_model(nodes, [("x", [1, 6])], [("y", [1, 3])], inits), quantized.astype(np.float32) * scale


def test_metrics_match_a_hand_computation():
    reference, w_ref = weight_qdq_classifier(None)
    quantized, w_q = weight_qdq_classifier(0.5)
    data = samples(60, seed=4, shape=(1, 6))
    labels = np.random.default_rng(5).integers(0, 3, 60)
    x = np.concatenate([d["x"] for d in data]).astype(np.float64)
    ref, got = x @ w_ref, x @ w_q
    agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
    assert 0.0 < agree < 1.0  # the coarse scale flips some decisions, so the share is a real test

    (out,) = verify(quantized, reference, data, labels=labels).outputs

    assert out.top1_agreement == pytest.approx(agree)
    assert out.accuracy_float == pytest.approx(np.mean(ref.argmax(1) == labels))
    assert out.accuracy_quant == pytest.approx(np.mean(got.argmax(1) == labels))
    assert out.sqnr_db == pytest.approx(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)), abs=1e-3)
    cosines = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert out.cosine == pytest.approx(np.mean(cosines), abs=1e-6)
    assert out.max_abs_error == pytest.approx(np.max(np.abs(ref - got)), abs=1e-5)
    # ONNX Runtime's fused kernels (here DQ -> MatMul) round differently from the graph as written
    (fused,) = verify(quantized, reference, data, labels=labels, optimized=True).outputs
    assert 15.0 < fused.sqnr_db < out.sqnr_db + 1.0 and fused.top1_agreement is not None


def test_labels_must_cover_every_sample(float_model):
    with pytest.raises(DataError, match="3 labels for 5 rows of output 'y'"):
        verify(float_model, float_model, samples(5, seed=6), labels=np.zeros(3, np.int64))


def test_ort_per_layer_errors_follow_float_order(float_model, ort_model):
    # ORT folds the Relu into the Conv (the Conv now writes 'r1'), so float 'c1' has no twin and
    # 'y', a graph output, keeps its name on the DequantizeLinear that ends the graph.
    assert match_tensors(float_model, ort_model) == {
        "r1": "r1_DequantizeLinear_Output",
        "p1": "p1_DequantizeLinear_Output",
        "y": "y",
    }
    fidelity = verify(ort_model, float_model, samples(20, seed=7), per_layer=True)
    assert [(layer.tensor, layer.op_type) for layer in fidelity.layers] == [
        ("r1", "Relu"),
        ("p1", "MaxPool"),
        ("y", "Gemm"),
    ]
    assert all(20.0 < layer.sqnr_db < 80.0 for layer in fidelity.layers)


def test_nncf_per_layer_errors_follow_float_order(float_model, nncf_model):
    # NNCF keeps every float node and puts QuantizeLinear_<t>_1 -> DequantizeLinear_<t>_1 after
    # the tensors it quantizes; the Conv output and the MaxPool output are read unquantized.
    assert match_tensors(float_model, nncf_model) == {"c1": "c1", "r1": "dq_output_r1_1", "p1": "p1", "y": "y"}
    fidelity = verify(nncf_model, float_model, samples(20, seed=7), per_layer=True)
    assert [(layer.tensor, layer.op_type) for layer in fidelity.layers] == [
        ("c1", "Conv"),
        ("r1", "Relu"),
        ("p1", "MaxPool"),
        ("y", "Gemm"),
    ]
    assert all(20.0 < layer.sqnr_db < 80.0 for layer in fidelity.layers)


def test_a_different_model_is_a_one_line_error(float_model, ort_model):
    other = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 3, 8, 8])], [("y", [1, 3, 8, 8])])
    with pytest.raises(QuantizeError, match=r"inputs \(x 1x3x8x8 float32\) differ .* \(x 1x3x16x16 float32\)") as err:
        verify(other, float_model, samples(2, seed=8))
    assert "\n" not in str(err.value)
    renamed = onnx.ModelProto()
    renamed.CopyFrom(ort_model)
    renamed.graph.output[0].name = "logits"
    with pytest.raises(QuantizeError, match=r"outputs \(logits 1x5\) differ from the reference's \(y 1x5\)"):
        verify(renamed, float_model, samples(2, seed=8))


def test_bad_data_is_a_data_error(float_model):
    with pytest.raises(DataError, match="no samples"):
        verify(float_model, float_model, [])
    with pytest.raises(DataError, match=r"sample 0 has inputs \(image\); the model takes \(x\)"):
        verify(float_model, float_model, samples(1, seed=9, name="image"))
    with pytest.raises(DataError, match="input 'x' is uint8, the model takes float32"):
        verify(float_model, float_model, [{"x": np.zeros((1, 3, 16, 16), np.uint8)}])
    with pytest.raises(DataError, match=r"input 'x' has shape \(1, 3, 8, 8\), the model takes 1x3x16x16"):
        verify(float_model, float_model, samples(1, seed=9, shape=(1, 3, 8, 8)))
    with pytest.raises(DataError, match="NaN or inf"):
        verify(float_model, float_model, [{"x": np.full((1, 3, 16, 16), np.nan, np.float32)}])


def test_is_quantized(float_model, ort_model, tmp_path):
    assert not is_quantized(float_model)
    assert is_quantized(ort_model)
    source, target = tmp_path / "float.onnx", tmp_path / "dynamic.onnx"
    onnx.save(weight_qdq_classifier(None)[0], source)
    ort_quant.quantize_dynamic(str(source), str(target), weight_type=ort_quant.QuantType.QInt8)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in onnx.load(target).graph.node}
    assert is_quantized(onnx.load(target))


def test_is_quantized_nncf(nncf_model):
    assert is_quantized(nncf_model)


def test_run_outputs_concatenates_samples(float_model):
    outputs = run_outputs(float_model, samples(7, seed=10))
    assert list(outputs) == ["y"] and outputs["y"].shape == (7, 5) and outputs["y"].dtype == np.float32
    again = run_outputs(float_model.SerializeToString(), samples(7, seed=10), ["r1", "y"])
    np.testing.assert_array_equal(outputs["y"], again["y"])
    assert again["r1"].shape == (7, 4, 16, 16) and again["r1"].min() >= 0.0
    with pytest.raises(UsageError, match="no tensor 'logits'"):
        run_outputs(float_model, samples(1, seed=10), ["logits"])


def test_paths_are_accepted(float_model, ort_model, tmp_path):
    onnx.save(float_model, tmp_path / "f.onnx")
    onnx.save(ort_model, tmp_path / "q.onnx")
    by_path = verify(tmp_path / "q.onnx", str(tmp_path / "f.onnx"), samples(4, seed=11))
    by_proto = verify(ort_model, float_model, samples(4, seed=11))
    assert by_path == by_proto


def demo_inputs(split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(DEMO_DATA / f"{split}.npz", allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    return ((images.astype(np.float32) / 255.0 - 0.1307) / 0.3081).astype(np.float32), labels


def test_demo_model_quantized_by_ort(tmp_path):
    model = load_model(DEMO_MODEL)
    calibration, _ = demo_inputs("calib")
    quantized = quantize_ort(model.proto, [{"input": x[None]} for x in calibration], tmp_path)
    images, labels = demo_inputs("eval")
    data = [{"input": x[None]} for x in images]

    fidelity = verify(quantized, model, data, labels=labels)

    (out,) = fidelity.outputs
    assert fidelity.samples == 1000
    assert out.accuracy_float == pytest.approx(0.986, abs=0.001)  # calibration/demo.toml float_accuracy
    # measured: 35.6 dB, agreement 0.997, accuracy 0.987 (onnxruntime 1.32)
    assert out.accuracy_quant is not None and out.accuracy_quant > out.accuracy_float - 0.01
    assert out.top1_agreement is not None and out.top1_agreement > 0.98
    assert 25.0 < out.sqnr_db < 60.0
    layers = verify(quantized, model, data[:50], per_layer=True).layers
    assert [layer.op_type for layer in layers] == ["Clip"] * 11 + ["GlobalAveragePool", "Gemm"]
    assert all(math.isfinite(layer.sqnr_db) and layer.sqnr_db > 20.0 for layer in layers)
