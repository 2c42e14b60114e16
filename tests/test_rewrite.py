"""Float rewrites (Div by a constant to Mul, written-out hard-swish to HardSwish) compute the same."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from conftest import const, make_model
from onnx import helper

from edge_sdk.model import load_model
from edge_sdk.rewrite import div_to_mul, fuse_hard_swish


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


def hard_swish_nodes(x: str, out: str, tag: str, *, div: bool = True) -> list:
    """x * relu6(x + 3) / 6 as exporters write it (or * 1/6), with Clip bounds as inputs."""
    last = (
        helper.make_node("Div", [f"m{tag}", "six"], [out], name=f"div{tag}")
        if div
        else helper.make_node("Mul", ["sixth", f"m{tag}"], [out], name=f"scale{tag}")
    )
    return [
        helper.make_node("Add", [x, "three"], [f"a{tag}"], name=f"add{tag}"),
        helper.make_node("Clip", [f"a{tag}", "zero", "six"], [f"c{tag}"], name=f"clip{tag}"),
        helper.make_node("Mul", [f"c{tag}", x], [f"m{tag}"], name=f"mul{tag}"),
        last,
    ]


HARD_SWISH_CONSTANTS = [
    const("three", np.float32(3.0)),
    const("zero", np.float32(0.0)),
    const("six", np.float32(6.0)),
    const("sixth", np.float32(1 / 6)),
]


def run(model, x):
    return ort.InferenceSession(model.proto.SerializeToString()).run(None, {"x": x})[0]


def test_written_out_hard_swish_becomes_one_node_at_opset_14_and_computes_the_same():
    nodes = hard_swish_nodes("x", "h1", "1") + hard_swish_nodes("h1", "h2", "2", div=False)
    nodes.append(helper.make_node("Mul", ["x", "hs"], ["h3"], name="hsig_mul"))
    nodes.insert(-1, helper.make_node("HardSigmoid", ["x"], ["hs"], name="hsig", alpha=1 / 6, beta=0.5))
    nodes.append(helper.make_node("Add", ["h2", "h3"], ["y"], name="sum"))
    proto = make_model(nodes, [("x", [1, 16])], [("y", [1, 16])], HARD_SWISH_CONSTANTS, opset=13)
    model = load_model(proto, simplify=False)
    fused, count = fuse_hard_swish(model)
    assert count == 3 and fused.passes[-1] == "hard-swish written out -> HardSwish: 3"
    assert [n.op_type for n in fused.proto.graph.node] == ["HardSwish", "HardSwish", "HardSwish", "Add"]
    assert [n.name for n in fused.proto.graph.node][:2] == ["div1", "scale2"], "the last node's name stays"
    assert fused.proto.opset_import[0].version == 14 and model.proto.opset_import[0].version == 13
    assert {t.name for t in fused.proto.graph.initializer} == set(), "the constants went with the pattern"
    x = np.linspace(-8, 8, 16, dtype=np.float32).reshape(1, 16)
    np.testing.assert_allclose(run(fused, x), run(model, x), rtol=1e-6, atol=1e-6)


def test_a_hard_swish_whose_inner_tensor_is_used_elsewhere_stays_written_out():
    nodes = hard_swish_nodes("x", "h", "1")
    nodes.append(helper.make_node("Add", ["h", "c1"], ["y"], name="uses_clip"))  # relu6(x + 3) is needed
    proto = make_model(nodes, [("x", [1, 4])], [("y", [1, 4])], HARD_SWISH_CONSTANTS)
    model = load_model(proto, simplify=False)
    assert fuse_hard_swish(model) == (model, 0)
