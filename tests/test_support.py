"""Placement: one test per support rule, plus fallback and partitioning behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import const, make_model, write_profile
from onnx import helper

from edge_sdk import UsageError
from edge_sdk.costs import Graph
from edge_sdk.model import load_model
from edge_sdk.profile import Precision
from edge_sdk.support import Where, count_partitions, decide, place, rule_text
from edge_sdk.targets import load_target


def target_with(tmp_path, ops: str, partitioning: str = "multi"):
    write_profile(tmp_path, "rules", ops=ops, partitioning=partitioning)
    return load_target("rules", [tmp_path])


def conv_graph(*, k=3, stride=1, dilation=(1, 1), group=1, cin=8, cout=8, size=16):
    w = np.ones((cout, cin // group, k, k), np.float32)
    node = helper.make_node(
        "Conv", ["x", "W"], ["y"], name="conv", strides=[stride, stride], dilations=list(dilation), group=group
    )
    oh, ow = ((size - (k - 1) * d - 1) // stride + 1 for d in dilation)
    model = make_model([node], [("x", [1, cin, size, size])], [("y", [1, cout, oh, ow])], [const("W", w)])
    graph = Graph(load_model(model, simplify=False))
    return graph.nodes[0], graph


def check(tmp_path, rule: str, node_graph, precision=Precision.INT8):
    node, graph = node_graph
    return decide(node, graph, target_with(tmp_path, rule), precision)


def test_op_not_in_list_falls_back_with_reason(tmp_path):
    ok, reason = check(tmp_path, "[ops.Relu]\n", conv_graph())
    assert not ok and reason == "Conv is not in the op list of Test NPU"


def test_op_without_limits_runs(tmp_path):
    assert check(tmp_path, "[ops.Conv]\n", conv_graph()) == (True, "runs on Test NPU")


def test_precision_rule(tmp_path):
    ok, reason = check(tmp_path, '[ops.Conv]\nprecisions = ["int8"]\n', conv_graph(), Precision.FP32)
    assert not ok and "only in int8, not fp32" in reason


def test_kernel_max(tmp_path):
    assert check(tmp_path, "[ops.Conv]\nkernel_max = [3, 3]\n", conv_graph(k=3))[0]
    ok, reason = check(tmp_path, "[ops.Conv]\nkernel_max = [3, 3]\n", conv_graph(k=5))
    assert not ok and "kernel 5x5 is larger than 3x3" in reason


def test_kernel_area_max(tmp_path):
    ok, reason = check(tmp_path, "[ops.Conv]\nkernel_area_max = 16\n", conv_graph(k=5))
    assert not ok and "kernel area 25 is more than 16" in reason


def test_stride_max(tmp_path):
    assert check(tmp_path, "[ops.Conv]\nstride_max = [3, 3]\n", conv_graph(stride=3))[0]
    ok, reason = check(tmp_path, "[ops.Conv]\nstride_max = [3, 3]\n", conv_graph(stride=4))
    assert not ok and "stride 4x4 is larger than 3x3" in reason


def test_dilation_max(tmp_path):
    ok, reason = check(tmp_path, "[ops.Conv]\ndilation_max = [2, 2]\n", conv_graph(dilation=(3, 3)))
    assert not ok and "dilation 3x3 is larger than 2x2" in reason


def test_dilation_equal(tmp_path):
    assert check(tmp_path, "[ops.Conv]\ndilation_equal = true\n", conv_graph(dilation=(2, 2)))[0]
    ok, reason = check(tmp_path, "[ops.Conv]\ndilation_equal = true\n", conv_graph(dilation=(1, 2)))
    assert not ok and "differs between height and width" in reason


def test_grouped(tmp_path):
    rule = "[ops.Conv]\ngrouped = false\n"
    assert check(tmp_path, rule, conv_graph(group=8))[0]  # depthwise is allowed
    ok, reason = check(tmp_path, rule, conv_graph(group=2))
    assert not ok and "group=2, 8 input channels" in reason


def test_channels_max(tmp_path):
    ok, reason = check(tmp_path, "[ops.Conv]\nchannels_max = 4\n", conv_graph(cout=8))
    assert not ok and "8 channels, more than 4" in reason


def test_weights_abs_sum_max(tmp_path):
    # all-ones weights quantize to 127 each: 8 x 9 x 127 = 9144 per output channel
    assert check(tmp_path, "[ops.Conv]\nweights_abs_sum_max = 9144\n", conv_graph())[0]
    ok, reason = check(tmp_path, "[ops.Conv]\nweights_abs_sum_max = 9000\n", conv_graph())
    assert not ok and "9144 is more than 9000" in reason


def _single(op, inputs, outputs, inits=(), **attrs):
    node = helper.make_node(
        op, [n for n, _ in inputs] + [i.name for i in inits], [n for n, _ in outputs], name="n", **attrs
    )
    graph = Graph(load_model(make_model([node], inputs, outputs, inits), simplify=False))
    return graph.nodes[0], graph


def test_max_dims(tmp_path):
    ok, reason = check(
        tmp_path, "[ops.Relu]\nmax_dims = 3\n", _single("Relu", [("x", [2, 3, 4, 5])], [("y", [2, 3, 4, 5])])
    )
    assert not ok and "2x3x4x5, more than 3 dims > 1" in reason
    assert check(tmp_path, "[ops.Relu]\nmax_dims = 3\n", _single("Relu", [("x", [1, 3, 4, 5])], [("y", [1, 3, 4, 5])]))[
        0
    ]


def test_reduce_axes_spatial(tmp_path):
    rule = '[ops.ReduceMean]\nreduce_axes = "spatial"\n'
    assert check(tmp_path, rule, _single("ReduceMean", [("x", [1, 8, 4, 4])], [("y", [1, 8, 1, 1])], axes=[2, 3]))[0]
    ok, reason = check(tmp_path, rule, _single("ReduceMean", [("x", [1, 8, 4, 4])], [("y", [1, 1, 4, 4])], axes=[1]))
    assert not ok and "axes [1], not only height and width [2, 3]" in reason


def test_reduce_axes_from_input_in_opset_18(tmp_path):
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="n")
    model = make_model(
        [node], [("x", [1, 8, 4, 4])], [("y", [1, 1, 4, 4])], [const("axes", np.array([1], np.int64))], opset=18
    )
    graph = Graph(load_model(model, simplify=False))
    ok, reason = decide(
        graph.nodes[0], graph, target_with(tmp_path, '[ops.ReduceMean]\nreduce_axes = "spatial"\n'), Precision.INT8
    )
    assert not ok and "axes [1]" in reason


def test_batch_axis(tmp_path):
    rule = "[ops.Concat]\nbatch_axis = false\n"
    ok, reason = check(tmp_path, rule, _single("Concat", [("a", [1, 4]), ("b", [1, 4])], [("y", [2, 4])], axis=0))
    assert not ok and "batch axis" in reason
    assert check(tmp_path, rule, _single("Concat", [("a", [1, 4]), ("b", [1, 4])], [("y", [1, 8])], axis=-1))[0]


def test_modes(tmp_path):
    rule = '[ops.Resize]\nmodes = ["nearest"]\n'
    scales = const("scales", np.array([1, 1, 2, 2], np.float32))
    roi = const("roi", np.array([], np.float32))
    ok, reason = check(
        tmp_path, rule, _single("Resize", [("x", [1, 2, 4, 4])], [("y", [1, 2, 8, 8])], [roi, scales], mode="linear")
    )
    assert not ok and "mode 'linear' is not one of nearest" in reason


def test_constant_weights(tmp_path):
    rule = "[ops.MatMul]\nconstant_weights = true\n"
    ok, reason = check(tmp_path, rule, _single("MatMul", [("a", [1, 4]), ("b", [4, 2])], [("y", [1, 2])]))
    assert not ok and "input 'b' is computed at run time" in reason


def test_perms(tmp_path):
    rule = "[ops.Transpose]\nperms = [[0, 2, 1, 3]]\n"
    assert check(tmp_path, rule, _single("Transpose", [("x", [1, 2, 3, 4])], [("y", [1, 3, 2, 4])], perm=[0, 2, 1, 3]))[
        0
    ]
    ok, reason = check(
        tmp_path, rule, _single("Transpose", [("x", [1, 2, 3, 4])], [("y", [1, 3, 4, 2])], perm=[0, 2, 3, 1])
    )
    assert not ok and "permutation [0, 2, 3, 1]" in reason


def test_note_is_shown_with_the_reason(tmp_path):
    ok, reason = check(tmp_path, '[ops.Conv]\nkernel_max = [1, 1]\nnote = "see vendor doc"\n', conv_graph())
    assert not ok and reason.endswith("(see vendor doc)")


def test_rule_text_comes_from_the_checks(tmp_path):
    target = target_with(tmp_path, '[ops.Conv]\nstride_max = [3, 3]\ngrouped = false\nprecisions = ["int8"]\n')
    assert rule_text(target.ops.rules["Conv"]) == (
        "stride at most 3x3; grouped convolution only when depthwise (group = input channels); precisions int8"
    )
    assert rule_text(target_with(tmp_path, "[ops.Relu]\n").ops.rules["Relu"]) == "no limits"


def _chain_graph():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r1"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="s"),
        helper.make_node("Relu", ["b"], ["c"], name="r2"),
        helper.make_node("Relu", ["c"], ["y"], name="r3"),
    ]
    return Graph(load_model(make_model(nodes, [("x", [1, 4])], [("y", [1, 4])]), simplify=False))


def test_multi_partitioning_returns_to_the_unit(tmp_path):
    placements = place(_chain_graph(), target_with(tmp_path, "[ops.Relu]\n"), Precision.INT8)
    assert [p.where for p in placements] == [Where.UNIT, Where.FALLBACK, Where.UNIT, Where.UNIT]
    assert count_partitions(placements) == (3, 2)


def test_single_partitioning_sends_everything_after_the_first_refusal_to_the_cpu(tmp_path):
    placements = place(_chain_graph(), target_with(tmp_path, "[ops.Relu]\n", "single"), Precision.INT8)
    assert [p.where for p in placements] == [Where.UNIT, Where.FALLBACK, Where.FALLBACK, Where.FALLBACK]
    assert "comes after 's'" in placements[2].reason
    assert count_partitions(placements) == (2, 1)


def test_largest_partitioning_delegates_only_the_longest_run(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r1"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="s"),
        helper.make_node("Relu", ["b"], ["c"], name="r2"),
        helper.make_node("Relu", ["c"], ["y"], name="r3"),
    ]
    graph = Graph(load_model(make_model(nodes, [("x", [1, 4])], [("y", [1, 4])]), simplify=False))
    placements = place(graph, target_with(tmp_path, "[ops.Relu]\n", "largest"), Precision.INT8)
    assert [p.where for p in placements] == [Where.FALLBACK, Where.FALLBACK, Where.UNIT, Where.UNIT]
    assert "largest partition (2 nodes, 'r2' to 'r3')" in placements[0].reason
    assert count_partitions(placements) == (2, 1)


def test_fallback_none_makes_nodes_unsupported(tmp_path):
    path = write_profile(tmp_path, "nofb", ops="[ops.Relu]\n")
    path.write_text(path.read_text().replace('fallback = "cpu"', 'fallback = "none"'))
    placements = place(_chain_graph(), load_target("nofb", [tmp_path]), Precision.INT8)
    assert placements[1].where is Where.UNSUPPORTED


def test_precision_the_target_does_not_run(tmp_path):
    with pytest.raises(UsageError, match="does not run fp16; it supports int8, fp32"):
        place(_chain_graph(), target_with(tmp_path, "[ops.Relu]\n"), Precision.FP16)
