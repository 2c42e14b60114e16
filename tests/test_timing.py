"""Where ONNX Runtime spends its time per op class, and the quantize warning that uses it."""

from __future__ import annotations

import sys

import numpy as np
from conftest import const, make_model
from onnx import helper

from edge_sdk.demo import DEMO_MODEL
from edge_sdk.model import load_model
from edge_sdk.timing import measured_class, op_class_ms


def test_profile_splits_depthwise_from_other_convolutions():
    rng = np.random.default_rng(0)
    inits = [
        const("dw", rng.standard_normal((8, 1, 3, 3)).astype(np.float32)),
        const("pw", rng.standard_normal((8, 8, 1, 1)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "dw"], ["a"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "pw"], ["b"], name="pointwise"),
        helper.make_node("Sigmoid", ["b"], ["y"], name="act"),
    ]
    model = make_model(nodes, [("x", [1, 8, 16, 16])], [("y", [1, 8, 16, 16])], inits)
    times = op_class_ms(model, {"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32)}, runs=5)
    assert {"depthwise", "conv"} <= set(times) and all(t > 0 for t in times.values())
    assert measured_class("QLinearConv") == "conv" and measured_class("QLinearConv", grouped=True) == "depthwise"
    assert measured_class("DequantizeLinear") == "quantize" and measured_class("ReorderInput") == "move"


def test_a_slower_int8_model_is_explained_per_op_class():
    quantize_module = sys.modules["edge_sdk.quantize"]  # the package exports the function under that name
    model = load_model(DEMO_MODEL)
    result = quantize_module.quantize(model, "rpi5", "demo", engine="onnxruntime", speed_threads=())
    slow = [quantize_module.Speed(1, float_ms=0.05, quantized_ms=0.5)]
    calib = quantize_module.load_calibration("demo", model)
    (warning,) = quantize_module._speed_warnings(slow, model, result.model, calib, result.plan)
    assert warning.startswith("the quantized model is slower than float in ONNX Runtime here (1 thread(s)")
    assert "ONNX Runtime's profile here (1 thread(s))" in warning or "timing noise" in warning
