"""QuantPlan: the target's rules, float nodes with reasons, and the refusals."""

from __future__ import annotations

import pytest
from conftest import conv_bn_relu_model, write_profile

from edge_sdk import QuantizeError, UsageError, load_model, load_target
from edge_sdk.demo import DEMO_MODEL
from edge_sdk.plan import plan
from edge_sdk.profile import Precision


def test_plan_takes_the_targets_rules():
    p = plan(load_model(DEMO_MODEL), load_target("rpi5"))
    assert p.precision is Precision.INT8 and p.target == "rpi5"
    assert p.weights.per_channel and p.weights.symmetric and not p.activations.symmetric
    assert any(f.op == "Softmax" for f in p.fixed_outputs)
    assert p.float_nodes == () and p.quantizable_nodes == 25


def test_op_the_unit_runs_only_in_float_stays_float(tmp_path):
    write_profile(tmp_path, ops='[ops.Conv]\n[ops.Relu]\nprecisions = ["fp32"]\n')
    p = plan(load_model(conv_bn_relu_model()), load_target("test-npu", [tmp_path]))
    assert [(f.op_type, f.reason) for f in p.float_nodes] == [("Relu", "Test NPU runs Relu only in fp32")]


def test_ignore_list_and_unknown_node():
    model = load_model(conv_bn_relu_model())
    name = model.proto.graph.node[0].name
    p = plan(model, load_target("rpi5"), ignore=[name])
    assert p.float_nodes[0].reason == "user's ignore list"
    with pytest.raises(UsageError, match="not a node of the model"):
        plan(model, load_target("rpi5"), ignore=["nope"])


def test_precision_the_target_does_not_support():
    with pytest.raises(UsageError, match="does not run fp16"):
        plan(load_model(DEMO_MODEL), load_target("coral-edgetpu-usb"), precision=Precision.FP16)


def test_fp32_is_not_a_quantization():
    with pytest.raises(UsageError, match="fp32 needs no quantization"):
        plan(load_model(DEMO_MODEL), load_target("rpi5"), precision=Precision.FP32)


def test_already_quantized_model_is_refused(tmp_path):
    from edge_sdk.quantize import quantize

    out = tmp_path / "q"
    quantize(DEMO_MODEL, "rpi5", "demo", engine="onnxruntime", output=out, speed_threads=())
    quantized = next(out.glob("*.onnx"))
    with pytest.raises(QuantizeError, match="already quantized"):
        plan(load_model(quantized), load_target("rpi5"))
