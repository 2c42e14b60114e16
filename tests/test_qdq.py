"""QDQ graph passes: redundant activations folded into QuantizeLinear, unfused compute nodes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from conftest import const
from onnx import TensorProto, helper

from edge_sdk.qdq import remove_redundant_activations, unfused_compute_nodes


def _qdq_conv_clip(clip_max: float, q_scale: float) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(DQ weights) -> Clip(0, clip_max) -> Q(uint8, scale) -> DQ -> y"""
    rng = np.random.default_rng(0)
    wq = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    inits = [
        const("wq", wq),
        const("ws", np.full(4, 0.01, np.float32)),
        const("wz", np.zeros(4, np.int8)),
        const("xs", np.float32(0.02)),
        const("xz", np.uint8(128)),
        const("lo", np.float32(0.0)),
        const("hi", np.float32(clip_max)),
        const("ys", np.float32(q_scale)),
        const("yz", np.uint8(0)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
        helper.make_node("Conv", ["xd", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="clip"),
        helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def test_clip_covered_by_the_quantize_range_is_removed_and_output_unchanged():
    model = _qdq_conv_clip(6.0, 6.0 / 255)
    assert unfused_compute_nodes(model) == ["conv"]
    folded, removed = remove_redundant_activations(model)
    assert removed == 1 and "Clip" not in {n.op_type for n in folded.graph.node}
    assert unfused_compute_nodes(folded) == []
    x = np.random.default_rng(1).uniform(-3, 3, (1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(folded, x), _run(model, x))
    assert "Clip" in {n.op_type for n in model.graph.node}, "the input model is not modified"


def test_clip_narrower_than_the_quantize_range_is_kept():
    folded, removed = remove_redundant_activations(_qdq_conv_clip(6.0, 12.0 / 255))
    assert removed == 0 and "Clip" in {n.op_type for n in folded.graph.node}
