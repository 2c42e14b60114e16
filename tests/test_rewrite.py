"""Float rewrites: Div by a constant becomes Mul by the reciprocal, and computes the same."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from conftest import const, make_model
from onnx import helper

from edge_sdk.model import load_model
from edge_sdk.rewrite import div_to_mul


def test_div_by_constant_becomes_mul_and_computes_the_same():
    nodes = [
        helper.make_node("Div", ["x", "six"], ["a"], name="d1"),
        helper.make_node("Div", ["a", "x"], ["y"], name="d2"),
    ]  # divisor not constant: stays
    model = load_model(
        make_model(nodes, [("x", [1, 8])], [("y", [1, 8])], [const("six", np.float32(6.0))]), simplify=False
    )
    rewritten, count = div_to_mul(model)
    assert count == 1 and [n.op_type for n in rewritten.proto.graph.node] == ["Mul", "Div"]
    assert [n.op_type for n in model.proto.graph.node] == ["Div", "Div"], "the input model is unchanged"
    assert rewritten.passes[-1] == "Div by a constant -> Mul by its reciprocal: 1"
    x = np.random.default_rng(0).uniform(1, 5, (1, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.proto.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(rewritten.proto.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_nothing_to_rewrite_returns_the_same_model():
    model = load_model(make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])]))
    assert div_to_mul(model) == (model, 0)
