"""tflite_layer_errors: per-layer SQNR of a .tflite in LiteRT against the float ONNX model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import const, make_model
from onnx import helper

from edge_sdk.calibration import load_calibration
from edge_sdk.errors import DataError, ExportError, UsageError
from edge_sdk.export import export_tflite
from edge_sdk.lower.lower import lower_to_tflite
from edge_sdk.model import Model, load_model
from edge_sdk.quantize import VERIFY_SAMPLES
from edge_sdk.tflite_layers import tflite_layer_errors

pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert")
DEMO = Path(__file__).parents[1] / "edge_sdk" / "assets" / "demo_mnist.onnx"
# Conv+Relu lower to one CONV_2D (no tensor for "conv1"); Flatten only relabels (no entry)
RESIDUAL_LAYERS = [
    ("relu1", "Relu"),
    ("conv2", "Conv"),
    ("sum", "Add"),
    ("pool", "GlobalAveragePool"),
    ("logits", "Gemm"),
]


def residual_model(channels: int = 8, height: int = 10, width: int = 12) -> onnx.ModelProto:
    """Conv -> Relu -> Conv, added to the Relu's output -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [
        const("w1", rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3),
        const("b1", rng.standard_normal(channels).astype(np.float32) * 0.1),
        const("w2", rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.2),
        const("b2", rng.standard_normal(channels).astype(np.float32) * 0.1),
        const("wg", rng.standard_normal((4, channels)).astype(np.float32)),
        const("bg", rng.standard_normal(4).astype(np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["image", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1]),
        n("Relu", ["conv1"], ["relu1"]),
        n("Conv", ["relu1", "w2", "b2"], ["conv2"], pads=[1, 1, 1, 1]),
        n("Add", ["relu1", "conv2"], ["sum"]),
        n("GlobalAveragePool", ["sum"], ["pool"]),
        n("Flatten", ["pool"], ["flat"]),
        n("Gemm", ["flat", "wg", "bg"], ["logits"], transB=1),
    ]
    return make_model(nodes, [("image", [1, 3, height, width])], [("logits", [1, 4])], inits)


def samples(model: Model, count: int = 8, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{s.name: rng.standard_normal(s.shape).astype(np.float32) for s in model.inputs} for _ in range(count)]


@pytest.fixture(scope="module")
def residual() -> Model:
    return load_model(residual_model())


@pytest.fixture(scope="module")
def residual_int8(residual: Model) -> bytes:
    pytest.importorskip("ai_edge_quantizer", reason="needs ai-edge-quantizer")
    calibration = samples(residual, 16, seed=2)
    return export_tflite(residual, "rpi5", precision="int8", calibration=calibration, speed_threads=()).flatbuffer


@pytest.mark.parametrize("size", [(8, 10, 12), (8, 8, 8)], ids=["rectangular", "cube"])
def test_fp32_layers_match_onnx_runtime_in_onnx_layout(size: tuple[int, int, int]):
    model = load_model(residual_model(*size))
    layers = tflite_layer_errors(lower_to_tflite(model).flatbuffer, model, samples(model))
    assert [(layer.tensor, layer.op_type) for layer in layers] == RESIDUAL_LAYERS
    assert all(layer.sqnr_db > 80 for layer in layers), layers  # a tensor read in the wrong layout: ~0 dB


def test_nchw_output_of_an_nchw_io_model_is_not_transposed():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    w = const("w", rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
    model = load_model(make_model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 8, 8, 8])], [w]))  # C == H == W
    lowered = lower_to_tflite(model, nchw_io=True)
    layers = tflite_layer_errors(lowered.flatbuffer, model, samples(model))
    assert [layer.tensor for layer in layers] == ["y"] and layers[0].sqnr_db > 80


def test_int8_layers_are_finite_and_in_execution_order(residual: Model, residual_int8: bytes):
    layers = tflite_layer_errors(residual_int8, residual, samples(residual))
    assert [(layer.tensor, layer.op_type) for layer in layers] == RESIDUAL_LAYERS
    assert all(20 < layer.sqnr_db < 60 for layer in layers), layers


def test_int8_io_gives_the_float_io_numbers(residual: Model, residual_int8: bytes):
    calibration = samples(residual, 16, seed=2)
    exported = export_tflite(
        residual, "rpi5", precision="int8", calibration=calibration, int8_io=True, speed_threads=()
    )
    assert exported.io_dtype == "int8"
    int8_io = tflite_layer_errors(exported.flatbuffer, residual, samples(residual))
    float_io = tflite_layer_errors(residual_int8, residual, samples(residual))
    assert [layer.tensor for layer in int8_io] == [layer.tensor for layer in float_io]
    for got, want in zip(int8_io, float_io, strict=True):
        assert got.sqnr_db == pytest.approx(want.sqnr_db, abs=0.01)


def test_demo_int8_output_layer_is_the_fidelity_tables_output():
    pytest.importorskip("ai_edge_quantizer", reason="needs ai-edge-quantizer")
    model = load_model(DEMO)
    result = export_tflite(model, "rpi5", precision="int8", calibration="demo", speed_threads=())
    verified = list(load_calibration("demo", model).take(VERIFY_SAMPLES))  # what export verifies on
    layers = tflite_layer_errors(result.flatbuffer, model, verified)
    convs = sum(node.op_type == "Conv" for node in model.proto.graph.node)
    assert [layer.op_type for layer in layers] == ["Clip"] * convs + ["GlobalAveragePool", "Gemm"]
    assert all(math.isfinite(layer.sqnr_db) and 20 < layer.sqnr_db < 60 for layer in layers), layers
    assert layers[-1].tensor == "logits"
    assert layers[-1].sqnr_db == pytest.approx(result.fidelity.outputs[0].sqnr_db, abs=0.5)


def test_limit_reads_only_that_many_samples(residual: Model, residual_int8: bytes):
    data = samples(residual)
    first = tflite_layer_errors(residual_int8, residual, data[:1])
    assert tflite_layer_errors(residual_int8, residual, iter(data), limit=1) == first
    with pytest.raises(UsageError, match="limit=0"):
        tflite_layer_errors(residual_int8, residual, data, limit=0)


def test_no_samples_is_a_data_error(residual: Model):
    with pytest.raises(DataError, match="no samples"):
        tflite_layer_errors(lower_to_tflite(residual).flatbuffer, residual, [])


def test_tflite_of_another_model_matches_nothing(residual: Model):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    other = load_model(make_model(nodes, [("x", [1, 4])], [("y", [1, 4])]))
    with pytest.raises(ExportError, match="named like"):
        tflite_layer_errors(lower_to_tflite(other).flatbuffer, residual, [{"image": rng.standard_normal((1, 3))}])
