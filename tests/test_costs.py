"""MACs, parameters, bytes and peak memory against hand counts on small graphs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import const, make_model
from onnx import helper

from edge_sdk.costs import Graph, node_costs, peak_activation_memory
from edge_sdk.model import load_model


def costs_of(model):
    graph = Graph(load_model(model, simplify=False))
    return graph, {c.name: c for c in node_costs(graph)}


def test_conv_macs_params_and_bytes_match_hand_count():
    w = np.ones((16, 8, 3, 3), np.float32)
    b = np.zeros(16, np.float32)
    model = make_model(
        [helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2])],
        [("x", [1, 8, 32, 32])],
        [("y", [1, 16, 16, 16])],
        [const("W", w), const("B", b)],
    )
    _, costs = costs_of(model)
    conv = costs["conv"]
    assert conv.output_shapes == ((1, 16, 16, 16),)
    assert conv.macs == 16 * 16 * 16 * (8 * 3 * 3)  # output elements x (C_in x kh x kw)
    assert conv.params == 16 * 8 * 9 + 16
    assert conv.bytes_read == 4 * (8 * 32 * 32 + 16 * 8 * 9 + 16)
    assert conv.bytes_written == 4 * 16 * 16 * 16


def test_depthwise_and_grouped_conv_macs():
    dw = make_model(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="dw", group=32, pads=[1, 1, 1, 1])],
        [("x", [1, 32, 10, 10])],
        [("y", [1, 32, 10, 10])],
        [const("W", np.ones((32, 1, 3, 3), np.float32))],
    )
    assert costs_of(dw)[1]["dw"].macs == 32 * 10 * 10 * 9
    grouped = make_model(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="g", group=4)],
        [("x", [1, 16, 5, 5])],
        [("y", [1, 8, 5, 5])],
        [const("W", np.ones((8, 4, 1, 1), np.float32))],
    )
    assert costs_of(grouped)[1]["g"].macs == 8 * 5 * 5 * 4


def test_conv_transpose_macs_scatter_each_input():
    model = make_model(
        [helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="up", strides=[2, 2])],
        [("x", [1, 4, 6, 6])],
        [("y", [1, 3, 13, 13])],
        [const("W", np.ones((4, 3, 3, 3), np.float32))],
    )
    assert costs_of(model)[1]["up"].macs == 4 * 6 * 6 * (3 * 3 * 3)


def test_gemm_and_batched_matmul_macs():
    gemm = make_model(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc", transB=1)],
        [("x", [2, 64])],
        [("y", [2, 10])],
        [const("W", np.ones((10, 64), np.float32)), const("B", np.zeros(10, np.float32))],
    )
    _graph, costs = costs_of(gemm)
    assert costs["fc"].macs == 2 * 10 * 64
    assert costs["fc"].params == 10 * 64 + 10
    mm = make_model(
        [helper.make_node("MatMul", ["a", "b"], ["y"], name="bmm")],
        [("a", [3, 4, 5, 7]), ("b", [3, 4, 7, 6])],
        [("y", [3, 4, 5, 6])],
    )
    assert costs_of(mm)[1]["bmm"].macs == 3 * 4 * 5 * 6 * 7


def test_shared_initializer_counted_once():
    w = const("W", np.ones((4, 4), np.float32))
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="a"),
            helper.make_node("MatMul", ["h", "W"], ["y"], name="b"),
        ],
        [("x", [1, 4])],
        [("y", [1, 4])],
        [w],
    )
    _, costs = costs_of(model)
    assert costs["a"].params == 16 and costs["b"].params == 0


def test_elementwise_ops_have_no_macs():
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", [1, 8])], [("y", [1, 8])])
    assert costs_of(model)[1]["r"].macs == 0


def _relu_chain(n: int):
    names = ["x"] + [f"t{i}" for i in range(n - 1)] + ["y"]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]], name=f"r{i}") for i in range(n)]
    return make_model(nodes, [("x", [1, 1000])], [("y", [1, 1000])])


def test_peak_memory_of_a_chain_is_two_tensors():
    graph = Graph(load_model(_relu_chain(5), simplify=False))
    assert peak_activation_memory(graph).bytes == 2 * 4000


def test_peak_memory_keeps_a_skip_connection_alive():
    # x -> a -> b -> c ; y = c + x : x stays live across the branch
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ra"),
        helper.make_node("Relu", ["a"], ["b"], name="rb"),
        helper.make_node("Relu", ["b"], ["c"], name="rc"),
        helper.make_node("Add", ["c", "x"], ["y"], name="add"),
    ]
    model = make_model(nodes, [("x", [1, 1000])], [("y", [1, 1000])])
    graph = Graph(load_model(model, simplify=False))
    peak = peak_activation_memory(graph)
    assert peak.bytes == 3 * 4000  # x, the branch input and its output (or x, c and y)
    assert peak.at_node == "rb"


def test_peak_memory_with_custom_element_size():
    graph = Graph(load_model(_relu_chain(3), simplify=False))
    assert peak_activation_memory(graph, lambda t: t.elements).bytes == 2 * 1000


@pytest.mark.slow
def test_efficientnet_lite0_macs_match_torch_flop_counter(efficientnet_lite0_onnx):
    from conftest import efficientnet_lite0_torch
    from torch.utils.flop_counter import FlopCounterMode

    module, torch = efficientnet_lite0_torch()
    with FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, 3, 224, 224))
    graph = Graph(load_model(efficientnet_lite0_onnx))
    costs = node_costs(graph)
    assert sum(c.macs for c in costs) == counter.get_total_flops() // 2  # a MAC is two FLOPs
    conv_linear = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
    bn_channels = sum(m.num_features for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    linear_bias = sum(m.bias.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    # the ONNX graph has BatchNorm folded: one bias per BN channel instead of gamma and beta
    assert sum(c.params for c in costs) == conv_linear + bn_channels + linear_bias
    # published: 4.7M params, 407M MAdds (tensorflow/tpu efficientnet/lite README)
    assert abs(sum(c.params for c in costs) - 4.7e6) / 4.7e6 < 0.03
