"""ONNX -> TFLite lowering, one converter at a time: each test builds a 1-3 node graph, runs it in
ONNX Runtime and the lowered flatbuffer in LiteRT on the same seeded input, and compares."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import const
from onnx import TensorProto, helper

from edge_sdk.errors import ExportError
from edge_sdk.model import load_model

pytest.importorskip("ai_edge_litert", reason="TFLite lowering needs ai-edge-litert")
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edge_sdk.lower.lower import Lowered, lower_to_tflite

RTOL = ATOL = 1e-5
FLOAT = TensorProto.FLOAT


# ---- harness --------------------------------------------------------------------------------------


def graph(nodes, inputs, outputs, inits=(), opset=17, *, out_type=FLOAT) -> onnx.ModelProto:
    """A model from (name, shape) float inputs; outputs are names (shapes come from inference)."""
    g = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, out_type, None) for n in outputs],
        list(inits),
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills in the output shapes


def node(op, inputs, outputs=("y",), **attrs) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), name=f"{op.lower()}_{outputs[0]}", **attrs)


def rand(seed: int, shape, low: float | None = None, high: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if low is None:
        return rng.standard_normal(shape).astype(np.float32)
    return rng.uniform(low, high, shape).astype(np.float32)


def lower(proto: onnx.ModelProto, *, nchw_io: bool = False) -> Lowered:
    return lower_to_tflite(load_model(proto), nchw_io=nchw_io)


# LiteRT's default (XNNPACK delegate) and its builtin kernels alone: XNNPACK accepts some graphs the
# builtin kernels reject (a fused activation on CONCATENATION, which it silently drops)
RESOLVERS = (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def run_tflite(lowered: Lowered, feeds: dict[str, np.ndarray], resolver=OpResolverType.AUTO) -> list[np.ndarray]:
    interp = Interpreter(model_content=lowered.flatbuffer, experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    inputs = {d["name"]: d for d in interp.get_input_details()}
    for name in lowered.input_names:
        x = feeds[name]
        if lowered.nhwc_io and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        interp.set_tensor(inputs[name]["index"], np.ascontiguousarray(x, dtype=inputs[name]["dtype"]))
    interp.invoke()
    outputs = {d["name"]: d for d in interp.get_output_details()}
    results = []
    for name in lowered.output_names:
        y = interp.get_tensor(outputs[name]["index"])
        results.append(y.transpose(0, 3, 1, 2) if lowered.nhwc_io and y.ndim == 4 else y)
    return results


def check(
    proto: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    *,
    nchw_io: bool = False,
    int8_friendly: bool = False,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> Lowered:
    """Lower `proto`, run both, assert the outputs agree; returns the lowering for structural checks."""
    onnx.checker.check_model(proto)
    model = load_model(proto)
    ops = sorted(n.op_type for n in proto.graph.node)
    assert sorted(n.op_type for n in model.proto.graph.node) == ops, "onnxslim rewrote the graph under test"
    lowered = lower_to_tflite(model, nchw_io=nchw_io, int8_friendly=int8_friendly)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    for resolver in RESOLVERS:
        got = run_tflite(lowered, feeds, resolver)
        assert len(got) == len(expected)
        for name, e, g in zip(lowered.output_names, expected, got, strict=True):
            assert g.shape == e.shape, f"{name} ({resolver.name}): shape {g.shape} != {e.shape}"
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{name} ({resolver.name})")
    return lowered


def one(op, x_shape, *, inits=(), extra_inputs=(), opset=17, seed=0, low=None, high=None, **attrs):
    """One node `op(x, *extra_inputs)` over a random x; returns (proto, feeds)."""
    model = graph([node(op, ["x", *extra_inputs], **attrs)], [("x", x_shape)], ["y"], inits, opset)
    return model, {"x": rand(seed, x_shape, low, high)}


# ---- Conv -----------------------------------------------------------------------------------------

CONV_CASES = {
    # id: (x shape, weight shape, attributes, bias)
    "plain": ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, True),
    "1x1": ((1, 6, 5, 7), (4, 6, 1, 1), {}, True),
    "depthwise": ((1, 4, 8, 8), (4, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 4}, True),
    "depthwise_multiplier2": ((1, 4, 8, 8), (8, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 4}, True),
    "grouped2": ((1, 4, 8, 8), (6, 2, 3, 3), {"pads": [1, 1, 1, 1], "group": 2}, True),
    "dilated": ((1, 3, 9, 9), (4, 3, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, True),
    "dilated_valid": ((1, 3, 9, 9), (4, 3, 3, 3), {"dilations": [2, 2]}, True),
    "stride2_symmetric_pads": ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, True),
    "stride2_same_pads": ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [0, 0, 1, 1], "strides": [2, 2]}, True),
    "asymmetric_pads": ((1, 3, 7, 6), (4, 3, 3, 2), {"pads": [2, 0, 1, 1]}, True),
    "same_upper": ((1, 3, 7, 7), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    "same_upper_stride1": ((1, 3, 6, 6), (4, 3, 4, 4), {"auto_pad": "SAME_UPPER"}, True),
    "same_lower": ((1, 3, 8, 8), (4, 3, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, True),
    "valid": ((1, 3, 8, 7), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 1]}, True),
    "no_bias": ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, False),
    "depthwise_stride2_pads": (
        (1, 4, 8, 8),
        (4, 1, 3, 3),
        {"pads": [1, 1, 1, 1], "strides": [2, 2], "group": 4},
        False,
    ),
}


@pytest.mark.parametrize("case", CONV_CASES, ids=list(CONV_CASES))
def test_conv(case):
    x_shape, w_shape, attrs, bias = CONV_CASES[case]
    inits = [const("W", rand(1, w_shape))]
    if bias:
        inits.append(const("B", rand(2, w_shape[0])))
    model, feeds = one("Conv", x_shape, inits=inits, extra_inputs=["W", "B"] if bias else ["W"], **attrs)
    lowered = check(model, feeds)
    counts = lowered.op_counts
    if case.startswith("depthwise"):
        assert counts.get("DEPTHWISE_CONV_2D") == 1 and "CONV_2D" not in counts
    elif case == "grouped2":
        assert counts.get("CONV_2D") == 2 and counts.get("SPLIT") == 1
    else:
        assert counts.get("CONV_2D") == 1
    explicit_pad = case in ("stride2_symmetric_pads", "asymmetric_pads", "depthwise_stride2_pads", "same_lower")
    assert ("PAD" in counts) == explicit_pad, counts
    assert lowered.layout_transposes == 0 and "TRANSPOSE" not in counts


# ---- ConvTranspose --------------------------------------------------------------------------------

CONV_TRANSPOSE_CASES = {
    "stride2_pads1_output_padding1": {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    "stride2_no_pads": {"strides": [2, 2]},
    "stride1_pads1": {"pads": [1, 1, 1, 1]},
}


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES)
def test_conv_transpose(case):
    inits = [const("W", rand(1, (4, 3, 3, 3))), const("B", rand(2, 3))]
    model, feeds = one(
        "ConvTranspose", (1, 4, 5, 5), inits=inits, extra_inputs=["W", "B"], **CONV_TRANSPOSE_CASES[case]
    )
    lowered = check(model, feeds)
    assert lowered.op_counts.get("TRANSPOSE_CONV") == 1 and lowered.layout_transposes == 0


def test_conv_transpose_output_padding_beyond_the_pads_is_an_error():
    """The output would be larger than the VALID transposed convolution that is cropped."""
    inits = [const("W", rand(1, (4, 3, 3, 3)))]
    model, _ = one(
        "ConvTranspose", (1, 4, 5, 5), inits=inits, extra_inputs=["W"], strides=[2, 2], output_padding=[1, 1]
    )
    with pytest.raises(ExportError, match=r"convtranspose_y.*output_padding \[1, 1\]"):
        lower(model)


# ---- Gemm / MatMul --------------------------------------------------------------------------------

GEMM_CASES = {
    "transB0": ({"transB": 0}, (8, 5), (5,)),
    "transB1": ({"transB": 1}, (5, 8), (5,)),
    "alpha_beta": ({"transB": 1, "alpha": 0.5, "beta": 2.0}, (5, 8), (5,)),
    "bias_row": ({"alpha": 1.5, "beta": 0.25}, (8, 5), (1, 5)),
    "no_bias": ({"transB": 1}, (5, 8), None),
}


@pytest.mark.parametrize("case", GEMM_CASES)
def test_gemm(case):
    attrs, b_shape, c_shape = GEMM_CASES[case]
    inits = [const("B", rand(1, b_shape))]
    if c_shape is not None:
        inits.append(const("C", rand(2, c_shape)))
    model, feeds = one("Gemm", (3, 8), inits=inits, extra_inputs=["B", "C"] if c_shape else ["B"], **attrs)
    assert check(model, feeds).op_counts == {"FULLY_CONNECTED": 1}


@pytest.mark.parametrize("x_shape", [(3, 8), (2, 4, 8)], ids=["rank2", "rank3"])
def test_matmul_const_weight(x_shape):
    model, feeds = one("MatMul", x_shape, inits=[const("W", rand(1, (8, 5)))], extra_inputs=["W"])
    assert check(model, feeds).op_counts == {"FULLY_CONNECTED": 1}


def test_matmul_batched():
    model = graph([node("MatMul", ["a", "b"])], [("a", (2, 3, 4)), ("b", (2, 4, 5))], ["y"])
    lowered = check(model, {"a": rand(0, (2, 3, 4)), "b": rand(1, (2, 4, 5))})
    assert lowered.op_counts == {"BATCH_MATMUL": 1}


# ---- binary arithmetic ----------------------------------------------------------------------------

MAP = (1, 4, 5, 6)
OPERANDS = {  # the second operand against an NHWC [1, 4, 5, 6] map
    "per_channel": (1, 4, 1, 1),
    "scalar": (),
    "chw_const": (4, 1, 1),
    "map": MAP,
}


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize(
    "operand,const_first",
    [(name, False) for name in OPERANDS] + [(name, True) for name in OPERANDS if name != "map"],
    ids=[*OPERANDS, *(f"{name}_first" for name in OPERANDS if name != "map")],
)
def test_binary_broadcast(op, operand, const_first):
    shape = OPERANDS[operand]
    b = rand(1, shape, 0.5, 2.0)  # positive: a safe divisor
    x = rand(0, MAP, 0.5, 2.0) if op == "Div" and const_first else rand(0, MAP)
    if operand == "map":
        model = graph([node(op, ["x", "b"])], [("x", MAP), ("b", MAP)], ["y"])
        feeds = {"x": x, "b": b}
    else:
        inputs = ["b", "x"] if const_first else ["x", "b"]
        model = graph([node(op, inputs)], [("x", MAP)], ["y"], [const("b", b)])
        feeds = {"x": x}
    lowered = check(model, feeds)
    assert lowered.layout_transposes == 0 and "TRANSPOSE" not in lowered.op_counts


def test_binary_lower_rank_input_against_map():
    """A non-constant [W] vector against a feature map: reshaped to rank 4 and laid out NHWC."""
    model = graph([node("Mul", ["x", "v"])], [("x", MAP), ("v", (6,))], ["y"])
    check(model, {"x": rand(0, MAP), "v": rand(1, (6,))})


@pytest.mark.parametrize(
    "op,exponent",
    [
        ("Pow", np.float32(3.0)),
        ("Pow", rand(3, (1, 4, 1, 1), 0.5, 2.0)),
        ("Pow", np.array(2)),  # an int64 exponent: ONNX allows it, TFLite's POW needs one type
        ("Max", None),
        ("Min", None),
    ],
    ids=["pow_scalar", "pow_per_channel", "pow_int_exponent", "max", "min"],
)
def test_pow_max_min(op, exponent):
    if exponent is None:
        model = graph([node(op, ["x", "b"])], [("x", MAP), ("b", MAP)], ["y"])
        feeds = {"x": rand(0, MAP), "b": rand(1, MAP)}
    else:
        model = graph([node(op, ["x", "e"])], [("x", MAP)], ["y"], [const("e", exponent)])
        feeds = {"x": rand(0, MAP, 0.5, 2.0)}
    check(model, feeds)


# ---- activations and other unary ops ---------------------------------------------------------------


def _clip(low, high):
    names = ["lo" if low is not None else "", "hi" if high is not None else ""]
    while names and not names[-1]:
        names.pop()
    inits = [const(n, np.float32(v)) for n, v in (("lo", low), ("hi", high)) if v is not None]
    return "Clip", {"extra_inputs": names, "inits": inits}


UNARY_CASES = {
    # id: (op, keyword arguments of `one`, the TFLite op it becomes)
    "relu": ("Relu", {}, "RELU"),
    "clip_0_6": (*_clip(0.0, 6.0), "RELU6"),
    "clip_-1_1": (*_clip(-1.0, 1.0), "RELU_N1_TO_1"),
    "clip_arbitrary": (*_clip(-0.5, 2.5), "MINIMUM"),
    "clip_min_only": (*_clip(-0.5, None), "MAXIMUM"),
    "clip_max_only": (*_clip(None, 0.7), "MINIMUM"),
    "leaky_relu": ("LeakyRelu", {"alpha": 0.1}, "LEAKY_RELU"),
    "prelu": ("PRelu", {"extra_inputs": ["s"], "inits": [const("s", rand(5, (4, 1, 1)))]}, "PRELU"),
    "sigmoid": ("Sigmoid", {}, "LOGISTIC"),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, "ADD"),  # relu6(6ax + 6b) / 6: XNNPACK runs it
    "hard_swish": ("HardSwish", {"opset": 14}, "HARD_SWISH"),
    "tanh": ("Tanh", {}, "TANH"),
    "gelu": ("Gelu", {"opset": 20}, "GELU"),
    "gelu_tanh": ("Gelu", {"opset": 20, "approximate": "tanh"}, "GELU"),
    "exp": ("Exp", {}, "EXP"),
    "log": ("Log", {"low": 0.1, "high": 5.0}, "LOG"),
    "sqrt": ("Sqrt", {"low": 0.0, "high": 5.0}, "SQRT"),
    "abs": ("Abs", {}, "ABS"),
    "neg": ("Neg", {}, "NEG"),
    "reciprocal": ("Reciprocal", {"low": 0.5, "high": 3.0}, "DIV"),
    "sin": ("Sin", {}, "SIN"),
    "cos": ("Cos", {}, "COS"),
    "floor": ("Floor", {}, "FLOOR"),
    "ceil": ("Ceil", {}, "CEIL"),
    "sign": ("Sign", {}, "SIGN"),
}


@pytest.mark.parametrize("case", UNARY_CASES)
def test_unary(case):
    op, kwargs, tflite_op = UNARY_CASES[case]
    model, feeds = one(op, MAP, **kwargs)
    feeds["x"] *= 1.0 if "low" in kwargs else 3.0  # a wider range than N(0, 1) where the domain allows
    lowered = check(model, feeds)
    assert tflite_op in lowered.op_counts, lowered.op_counts
    assert lowered.layout_transposes == 0


# ---- pooling --------------------------------------------------------------------------------------

POOL_CASES = {
    # id: (op, x shape, attributes)
    "max_k3s2_pads1": ("MaxPool", (1, 4, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "max_k2s2": ("MaxPool", (1, 4, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "max_same": ("MaxPool", (1, 4, 7, 7), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "max_ceil": ("MaxPool", (1, 4, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "max_ceil_pads": (
        "MaxPool",
        (1, 4, 8, 8),
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    ),
    "avg_include_pad": (
        "AveragePool",
        (1, 4, 8, 8),
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    ),
    "avg_exclude_pad": (
        "AveragePool",
        (1, 4, 8, 8),
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0},
    ),
    "avg_stride2_include_pad": (
        "AveragePool",
        (1, 4, 8, 8),
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    ),
    "avg_same_upper_include_pad": (
        "AveragePool",
        (1, 4, 7, 7),
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER", "count_include_pad": 1},
    ),
    "avg_k2s2": ("AveragePool", (1, 4, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "avg_ceil_same_size": ("AveragePool", (1, 4, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
}


@pytest.mark.parametrize("case", POOL_CASES)
def test_pool(case):
    op, x_shape, attrs = POOL_CASES[case]
    model, feeds = one(op, x_shape, **attrs)
    lowered = check(model, feeds)
    assert ("MAX_POOL_2D" if op == "MaxPool" else "AVERAGE_POOL_2D") in lowered.op_counts
    assert lowered.layout_transposes == 0


POOL_ERRORS = {
    # id: (op, x shape, attributes, what the message says)
    "ceil_window_in_end_padding": (
        "MaxPool",
        (1, 4, 9, 9),
        {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
        "ceil_mode",
    ),
    "avg_explicit_pads_exclude_pad": (
        "AveragePool",
        (1, 4, 8, 8),
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 0},
        "excludes the pad",
    ),
    "avg_ceil_changes_size": (
        "AveragePool",
        (1, 4, 8, 8),
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        "ceil_mode",
    ),
}


@pytest.mark.parametrize("case", POOL_ERRORS)
def test_pool_unsupported(case):
    """What TFLite's pooling cannot express is an ExportError, not a model that computes otherwise."""
    op, x_shape, attrs, message = POOL_ERRORS[case]
    model, _ = one(op, x_shape, **attrs)
    with pytest.raises(ExportError, match=message):
        lower(model)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(op):
    model, feeds = one(op, MAP)
    assert check(model, feeds).layout_transposes == 0


# ---- reshapes and layout --------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["Flatten", "Reshape"])
def test_flatten_of_feature_map_transposes_to_nchw_order(op):
    if op == "Flatten":
        model, feeds = one("Flatten", (1, 4, 3, 3), axis=1)
    else:
        model, feeds = one("Reshape", (1, 4, 3, 3), inits=[const("s", np.array([1, 4, 9]))], extra_inputs=["s"])
    lowered = check(model, feeds)
    assert lowered.layout_transposes == 1


@pytest.mark.parametrize("op", ["Flatten", "Reshape"])
def test_flatten_of_1x1_map_needs_no_transpose(op):
    if op == "Flatten":
        model, feeds = one("Flatten", (1, 8, 1, 1), axis=1)
    else:
        model, feeds = one("Reshape", (1, 8, 1, 1), inits=[const("s", np.array([1, -1]))], extra_inputs=["s"])
    lowered = check(model, feeds)
    assert lowered.layout_transposes == 0 and "TRANSPOSE" not in lowered.op_counts


def test_reshape_to_another_4d_shape():
    model, feeds = one("Reshape", (1, 4, 3, 6), inits=[const("s", np.array([1, 2, 6, 6]))], extra_inputs=["s"])
    check(model, feeds)


def test_squeeze_unsqueeze():
    nodes = [
        node("Squeeze", ["x", "ax2"], ["s"]),
        node("Unsqueeze", ["s", "ax0"], ["y"]),
    ]
    inits = [const("ax2", np.array([2])), const("ax0", np.array([0]))]
    model = graph(nodes, [("x", (1, 4, 1, 6))], ["s", "y"], inits, opset=13)
    check(model, {"x": rand(0, (1, 4, 1, 6))})


def test_unsqueeze_to_feature_map():
    model, feeds = one("Unsqueeze", (1, 4, 6), inits=[const("ax", np.array([2]))], extra_inputs=["ax"], opset=13)
    check(model, feeds)


def test_transpose_to_nhwc_is_no_op():
    nodes = [node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), node("Reshape", ["t", "s"])]
    model = graph(nodes, [("x", MAP)], ["y"], [const("s", np.array([1, 30, 4]))])
    lowered = check(model, {"x": rand(0, MAP)})
    assert "TRANSPOSE" not in lowered.op_counts and lowered.layout_transposes == 0


@pytest.mark.parametrize("perm", [[0, 1, 3, 2], [0, 3, 1, 2], [1, 0, 2, 3]])
def test_transpose_4d(perm):
    model, feeds = one("Transpose", MAP, perm=perm)
    check(model, feeds)


def test_transpose_rank3():
    model, feeds = one("Transpose", (2, 3, 4), perm=[0, 2, 1])
    assert check(model, feeds).op_counts == {"TRANSPOSE": 1}


# ---- Concat / Split / Slice / Gather / Pad ---------------------------------------------------------


def test_concat_on_channels():
    model = graph([node("Concat", ["a", "b", "c"], axis=1)], [("a", MAP), ("b", (1, 2, 5, 6)), ("c", MAP)], ["y"])
    lowered = check(model, {"a": rand(0, MAP), "b": rand(1, (1, 2, 5, 6)), "c": rand(2, MAP)})
    assert lowered.op_counts == {"CONCATENATION": 1}


def test_concat_with_constant_map():
    model = graph([node("Concat", ["x", "k"], axis=1)], [("x", MAP)], ["y"], [const("k", rand(3, (1, 2, 5, 6)))])
    check(model, {"x": rand(0, MAP)})


@pytest.mark.parametrize("sizes", [None, [1, 3], [2, 1, 1]], ids=["equal", "unequal2", "unequal3"])
@pytest.mark.parametrize("axis", [1, 3])
def test_split(sizes, axis):
    parts = len(sizes) if sizes else 2
    outputs = [f"y{i}" for i in range(parts)]
    inputs = ["x", "split"] if sizes else ["x"]
    inits = [const("split", np.array(sizes))] if sizes else []
    x_shape = (1, 4, 5, 4)
    model = graph([node("Split", inputs, outputs, axis=axis)], [("x", x_shape)], outputs, inits, opset=13)
    check(model, {"x": rand(0, x_shape)})


SLICE_CASES = {
    # id: (starts, ends, axes, steps)
    "channels": ([1], [3], [1], None),
    "spatial_steps": ([0, 1], [8, 7], [2, 3], [2, 3]),
    "negative_indices": ([-3, -5], [-1, 100], [1, 3], None),
    "negative_step": ([-1], [-100], [2], [-2]),
    "no_axes": ([0, 1, 1], [1, 3, 5], None, None),
    "negative_axis": ([2], [5], [-1], None),
}


@pytest.mark.parametrize("case", SLICE_CASES)
def test_slice(case):
    starts, ends, axes, steps = SLICE_CASES[case]
    inits = [const("starts", np.array(starts)), const("ends", np.array(ends))]
    names = ["x", "starts", "ends"]
    if axes is not None or steps is not None:
        inits.append(const("axes", np.array(axes if axes is not None else list(range(len(starts))))))
        names.append("axes")
    if steps is not None:
        inits.append(const("steps", np.array(steps)))
        names.append("steps")
    model = graph([node("Slice", names)], [("x", (1, 4, 8, 7))], ["y"], inits)
    check(model, {"x": rand(0, (1, 4, 8, 7))})


@pytest.mark.parametrize(
    "indices,axis",
    [(np.array([2, 0, -1]), 1), (np.array([1]), 1), (np.array(3), 1), (np.array([4, 0]), 3)],
    ids=["axis1", "axis1_single", "axis1_scalar", "axis3"],
)
def test_gather(indices, axis):
    model, feeds = one("Gather", MAP, inits=[const("i", indices)], extra_inputs=["i"], axis=axis)
    check(model, feeds)


PAD_CASES = {
    "constant_zero": ("constant", None, [0, 1, 2, 0, 0, 2, 1, 3]),
    "constant_value": ("constant", 1.5, [0, 0, 1, 2, 0, 0, 3, 1]),
    "reflect": ("reflect", None, [0, 0, 1, 2, 0, 0, 2, 1]),
}


@pytest.mark.parametrize("case", PAD_CASES)
def test_pad(case):
    mode, value, pads = PAD_CASES[case]
    inits = [const("pads", np.array(pads))]
    names = ["x", "pads"]
    if value is not None:
        inits.append(const("v", np.float32(value)))
        names.append("v")
    model = graph([node("Pad", names, mode=mode)], [("x", MAP)], ["y"], inits, opset=13)
    lowered = check(model, {"x": rand(0, MAP)})
    assert lowered.layout_transposes == 0


def test_pad_negative_is_an_error():
    model = graph([node("Pad", ["x", "p"])], [("x", MAP)], ["y"], [const("p", np.array([0, 0, -1, 1, 0, 0, 1, 0]))])
    with pytest.raises(ExportError, match="negative pads"):
        lower(model)


def test_expand():
    model, feeds = one("Expand", (4, 1, 1), inits=[const("s", np.array([1, 4, 5, 6]))], extra_inputs=["s"])
    check(model, feeds)


# ---- Resize ---------------------------------------------------------------------------------------

RESIZE_CASES = {
    # id: (attributes, scales, sizes)
    "nearest_asymmetric_floor_x2": (
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        [1, 1, 2, 2],
        None,
    ),
    "nearest_asymmetric_floor_sizes": (
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        None,
        [1, 3, 10, 12],
    ),
    "linear_half_pixel_scales": (
        {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
        [1, 1, 2, 2],
        None,
    ),
    "linear_half_pixel_sizes": ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, None, [1, 3, 7, 9]),
    "linear_align_corners_sizes": (
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        None,
        [1, 3, 9, 11],
    ),
    "linear_align_corners_scales": (
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        [1, 1, 2, 2],
        None,
    ),
    "nearest_asymmetric_default_rounding_x2": (  # round_prefer_floor of x.0 / x.5 is floor
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric"},
        [1, 1, 2, 2],
        None,
    ),
    "nearest_half_pixel_round_prefer_ceil": (
        {"mode": "nearest", "coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_ceil"},
        None,
        [1, 3, 8, 11],
    ),
    "nearest_align_corners_round_prefer_ceil": (
        {"mode": "nearest", "coordinate_transformation_mode": "align_corners", "nearest_mode": "round_prefer_ceil"},
        None,
        [1, 3, 8, 11],
    ),
    "linear_asymmetric_scales": (
        {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
        [1, 1, 2, 2],
        None,
    ),
}


@pytest.mark.parametrize("case", RESIZE_CASES)
def test_resize(case):
    attrs, scales, sizes = RESIZE_CASES[case]
    inits = [const("scales", np.array(scales, np.float32))] if scales else [const("sizes", np.array(sizes))]
    names = ["x", "", "scales"] if scales else ["x", "", "", "sizes"]
    model, feeds = one("Resize", (1, 3, 5, 6), inits=inits, extra_inputs=names[1:], opset=13, **attrs)
    lowered = check(model, feeds)
    assert lowered.layout_transposes == 0


@pytest.mark.parametrize(
    "attrs,scale,message",
    [
        ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric"}, 3, "round_prefer_floor"),
        ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "ceil"}, 2, "'ceil'"),
        ({"mode": "nearest", "coordinate_transformation_mode": "half_pixel"}, 2, "round_prefer_floor"),
        ({"mode": "linear", "antialias": 1}, 0.5, "antialias"),
    ],
    ids=["nearest_x3_round_prefer_floor", "nearest_ceil", "half_pixel_round_prefer_floor", "antialias"],
)
def test_resize_rounding_tflite_lacks_is_an_error(attrs, scale, message):
    scales = const("s", np.array([1, 1, scale, scale], np.float32))
    model, _ = one("Resize", (1, 3, 4, 6), inits=[scales], extra_inputs=["", "s"], opset=18, **attrs)
    with pytest.raises(ExportError, match=rf"resize_y.*{message}"):
        lower(model)


# ---- reductions, Softmax, LayerNormalization ------------------------------------------------------


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceSum"])
@pytest.mark.parametrize("axes", [[1], [2, 3], [-1], [1, 2]], ids=["channel", "spatial", "last", "channel_h"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("opset", [11, 13, 18])  # 11: load_model upgrades it to 13 (ReduceSum's axes become an input)
def test_reduce(op, axes, keepdims, opset):
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    if as_input:
        model, feeds = one(
            op, MAP, inits=[const("axes", np.array(axes))], extra_inputs=["axes"], opset=opset, keepdims=keepdims
        )
    else:
        model, feeds = one(op, MAP, opset=opset, axes=axes, keepdims=keepdims)
    check(model, feeds)


def test_reduce_min():
    model, feeds = one("ReduceMin", MAP, inits=[const("axes", np.array([1, 3]))], extra_inputs=["axes"], opset=18)
    check(model, feeds)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum"])
def test_reduce_all_axes(op):
    model, feeds = one(op, MAP, keepdims=0, opset=18)
    check(model, feeds)


@pytest.mark.parametrize("shape,axis", [((3, 10), -1), ((3, 10), 1), (MAP, 1), (MAP, 3), (MAP, -1)])
def test_softmax(shape, axis):
    model, feeds = one("Softmax", shape, axis=axis)
    feeds["x"] *= 3.0
    check(model, feeds)


def test_layer_norm():
    inits = [const("g", rand(1, (8,))), const("b", rand(2, (8,)))]
    model, feeds = one("LayerNormalization", (2, 5, 8), inits=inits, extra_inputs=["g", "b"], axis=-1, epsilon=1e-5)
    feeds["x"] = feeds["x"] * 2.0 + 0.5
    check(model, feeds)


def test_cast_float_int_float():
    nodes = [node("Cast", ["x"], ["i"], to=TensorProto.INT32), node("Cast", ["i"], ["y"], to=TensorProto.FLOAT)]
    model = graph(nodes, [("x", MAP)], ["y"])
    lowered = check(model, {"x": rand(0, MAP) * 5})
    assert lowered.op_counts == {"CAST": 2}


def test_cast_to_int_output():
    model = graph([node("Cast", ["x"], to=TensorProto.INT32)], [("x", (2, 5))], ["y"], out_type=TensorProto.INT32)
    lowered = check(model, {"x": rand(0, (2, 5)) * 5})
    assert lowered.op_counts == {"CAST": 1}


def test_identity():
    """Identity aliases its input; as a graph output it gets a tensor of its own name (a RESHAPE)."""
    nodes = [node("Relu", ["x"], ["r"]), node("Identity", ["r"], ["y"])]
    model = graph(nodes, [("x", MAP)], ["r", "y"])  # onnxslim keeps an Identity between two outputs
    lowered = check(model, {"x": rand(0, MAP)})
    assert lowered.op_counts == {"RELU": 1, "RESHAPE": 1}


# ---- fusion ---------------------------------------------------------------------------------------


def _conv_then(act_nodes, act_inits=()):
    inits = [const("W", rand(1, (4, 3, 3, 3))), const("B", rand(2, 4)), *act_inits]
    nodes = [node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), *act_nodes]
    return graph(nodes, [("x", (1, 3, 8, 8))], ["y"], inits), {"x": rand(0, (1, 3, 8, 8)) * 3}


@pytest.mark.parametrize(
    "act,inits,activation",
    [
        (node("Relu", ["c"]), [], "RELU"),
        (node("Clip", ["c", "lo", "hi"]), [const("lo", np.float32(0)), const("hi", np.float32(6))], "RELU6"),
        (node("Clip", ["c", "lo", "hi"]), [const("lo", np.float32(-1)), const("hi", np.float32(1))], "RELU_N1_TO_1"),
    ],
    ids=["relu", "relu6", "relu_n1_to_1"],
)
def test_activation_fuses_into_conv(act, inits, activation):
    model, feeds = _conv_then([act], inits)
    lowered = check(model, feeds)
    assert lowered.op_counts == {"CONV_2D": 1}, f"{activation} was not fused: {lowered.op_counts}"


def test_activation_not_fused_when_producer_has_other_use():
    inits = [const("W", rand(1, (4, 3, 3, 3)))]
    nodes = [node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"]), node("Add", ["c", "r"])]
    model = graph(nodes, [("x", (1, 3, 8, 8))], ["y"], inits)
    lowered = check(model, {"x": rand(0, (1, 3, 8, 8))})
    assert lowered.op_counts == {"ADD": 1, "CONV_2D": 1, "RELU": 1}


def test_activation_fuses_into_add_and_pool():
    nodes = [
        node("Add", ["a", "b"], ["s"]),
        node("Relu", ["s"], ["r"]),
        node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Clip", ["p", "lo", "hi"], ["y"]),
    ]
    inits = [const("lo", np.float32(0)), const("hi", np.float32(6))]
    model = graph(nodes, [("a", MAP), ("b", MAP)], ["y"], inits)
    lowered = check(model, {"a": rand(0, MAP) * 5, "b": rand(1, MAP) * 5})
    assert lowered.op_counts == {"ADD": 1, "MAX_POOL_2D": 1}


def test_activation_after_concat_is_not_fused():
    """TFLite's CONCATENATION takes no fused activation (the builtin kernel rejects it, XNNPACK drops it)."""
    model = graph([node("Concat", ["a", "b"], ["c"], axis=1), node("Relu", ["c"])], [("a", MAP), ("b", MAP)], ["y"])
    lowered = check(model, {"a": rand(0, MAP), "b": rand(1, MAP)})
    assert lowered.op_counts == {"CONCATENATION": 1, "RELU": 1}


def test_activation_fuses_into_grouped_conv():
    """A grouped Conv is SPLIT, a CONV_2D per group and CONCATENATION: the activation goes on each CONV_2D."""
    inits = [const("W", rand(1, (6, 2, 3, 3)) * 3), const("lo", np.float32(0)), const("hi", np.float32(6))]
    nodes = [node("Conv", ["x", "W"], ["c"], group=2, pads=[1, 1, 1, 1]), node("Clip", ["c", "lo", "hi"])]
    model = graph(nodes, [("x", (1, 4, 8, 8))], ["y"], inits)
    lowered = check(model, {"x": rand(0, (1, 4, 8, 8)) * 3})
    assert lowered.op_counts == {"CONCATENATION": 1, "CONV_2D": 2, "SPLIT": 1}


def test_hard_swish_from_hard_sigmoid():
    nodes = [node("HardSigmoid", ["c"], ["g"], alpha=1 / 6, beta=0.5), node("Mul", ["c", "g"])]
    model, feeds = _conv_then(nodes)
    lowered = check(model, feeds)
    assert lowered.op_counts == {"CONV_2D": 1, "HARD_SWISH": 1}


def test_hard_swish_from_clip():
    nodes = [
        node("Add", ["c", "three"], ["a"]),
        node("Clip", ["a", "lo", "hi"], ["r"]),
        node("Mul", ["c", "r"], ["m"]),
        node("Div", ["m", "six"]),
    ]
    inits = [const(n, np.float32(v)) for n, v in (("three", 3), ("lo", 0), ("hi", 6), ("six", 6))]
    model, feeds = _conv_then(nodes, inits)
    lowered = check(model, feeds)
    assert lowered.op_counts == {"CONV_2D": 1, "HARD_SWISH": 1}


def test_hard_swish_for_int8_is_add_mul_mul():
    """XNNPACK has no int8 HARD_SWISH; for models about to be quantized it is written as ops it has."""
    nodes = [node("HardSigmoid", ["c"], ["g"], alpha=1 / 6, beta=0.5), node("Mul", ["c", "g"])]
    model, feeds = _conv_then(nodes)
    lowered = check(model, feeds, int8_friendly=True)
    assert lowered.op_counts == {"ADD": 1, "CONV_2D": 1, "MUL": 2}


def test_division_by_a_constant_is_a_multiplication():
    model = graph([node("Div", ["x", "four"])], [("x", MAP)], ["y"], [const("four", np.float32(4))])
    lowered = check(model, {"x": rand(0, MAP)})
    assert lowered.op_counts == {"MUL": 1}


def test_activation_after_hard_swish_stays_separate():
    nodes = [
        node("HardSigmoid", ["x"], ["g"], alpha=1 / 6, beta=0.5),
        node("Mul", ["x", "g"], ["m"]),
        node("Relu", ["m"]),
    ]
    model = graph(nodes, [("x", MAP)], ["y"])
    lowered = check(model, {"x": rand(0, MAP) * 4})
    assert lowered.op_counts == {"HARD_SWISH": 1, "RELU": 1}


# ---- I/O layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("nchw_io", [False, True], ids=["nhwc_io", "nchw_io"])
def test_io_layout(nchw_io):
    inits = [const("W", rand(1, (4, 3, 3, 3))), const("W2", rand(2, (8, 4)))]
    nodes = [
        node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        node("Relu", ["c"], ["r"]),
        node("GlobalAveragePool", ["r"], ["g"]),
        node("Flatten", ["g"], ["f"]),
        node("Gemm", ["f", "W2"], ["y"], transB=1),
    ]
    model = graph(nodes, [("x", (1, 3, 8, 8))], ["r", "y"], inits)
    lowered = check(model, {"x": rand(0, (1, 3, 8, 8))}, nchw_io=nchw_io)
    assert lowered.nhwc_io is not nchw_io
    interp = Interpreter(model_content=lowered.flatbuffer)
    shapes = {d["name"]: tuple(d["shape"]) for d in [*interp.get_input_details(), *interp.get_output_details()]}
    assert shapes["x"] == ((1, 3, 8, 8) if nchw_io else (1, 8, 8, 3))
    assert shapes["r"] == ((1, 4, 8, 8) if nchw_io else (1, 8, 8, 4))
    assert lowered.op_counts.get("TRANSPOSE", 0) == (2 if nchw_io else 0)


@pytest.mark.parametrize("nchw_io", [False, True], ids=["nhwc_io", "nchw_io"])
@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2]])
def test_transpose_of_an_input_as_output_keeps_the_input_name(nchw_io, perm):
    """A Transpose that only changes layout aliases its input; the output transpose must not rename it."""
    model, feeds = one("Transpose", MAP, perm=perm)
    lowered = check(model, feeds, nchw_io=nchw_io)
    interp = Interpreter(model_content=lowered.flatbuffer)
    assert [d["name"] for d in interp.get_input_details()] == ["x"]
    assert interp.get_signature_list() == {"serving_default": {"inputs": ["x"], "outputs": ["y"]}}


def test_4d_output_in_onnx_layout_is_returned_nhwc():
    """Softmax over the last axis runs in ONNX's layout; the 4-D output is still NHWC by default."""
    model, feeds = one("Softmax", MAP, axis=-1)
    lowered = check(model, feeds)
    shapes = [tuple(d["shape"]) for d in Interpreter(model_content=lowered.flatbuffer).get_output_details()]
    assert shapes == [(1, 5, 6, 4)]


# ---- errors and determinism -----------------------------------------------------------------------


def test_unsupported_op_names_node_op_and_opset():
    model = graph(
        [helper.make_node("Einsum", ["x", "x"], ["y"], name="my_einsum", equation="ij,ij->ij")],
        [("x", (3, 4))],
        ["y"],
        opset=17,
    )
    with pytest.raises(ExportError, match=r"my_einsum.*Einsum.*opset 17"):
        lower(model)


@pytest.mark.parametrize(
    "build,value",
    [
        (
            lambda: one(
                "Resize",
                (1, 3, 5, 6),
                inits=[const("s", np.array([1, 1, 2, 2], np.float32))],
                extra_inputs=["", "s"],
                opset=13,
                mode="cubic",
            )[0],
            "cubic",
        ),
        (
            lambda: graph(
                [node("Pad", ["x", "p"], mode="edge")],
                [("x", MAP)],
                ["y"],
                [const("p", np.array([0, 0, 1, 1, 0, 0, 1, 1]))],
                opset=13,
            ),
            "edge",
        ),
    ],
    ids=["resize_cubic", "pad_edge"],
)
def test_unsupported_attribute_value_names_node_and_value(build, value):
    model = build()
    name = model.graph.node[0].name
    with pytest.raises(ExportError, match=rf"{name}.*{value}"):
        lower(model)


def test_lowering_is_deterministic():
    model, _ = _conv_then([node("HardSigmoid", ["c"], ["g"], alpha=1 / 6, beta=0.5), node("Mul", ["c", "g"])])
    loaded = load_model(model)
    assert lower_to_tflite(loaded).flatbuffer == lower_to_tflite(loaded).flatbuffer
    assert lower(model).flatbuffer == lower(model).flatbuffer


def test_erf_is_approximated_within_its_bound():
    """No TFLite ERF builtin: Abramowitz-Stegun 7.1.26, absolute error < 1.5e-7 in exact arithmetic
    (4e-7 in float32), so torch's opset-18 GELU (x * 0.5 * (1 + erf(x / sqrt 2))) lowers too."""
    nodes = [
        node("Div", ["x", "root2"], ["scaled"]),
        node("Erf", ["scaled"], ["e"]),
        node("Add", ["e", "one"], ["e1"]),
        node("Mul", ["x", "e1"], ["m"]),
        node("Mul", ["m", "half"]),
    ]
    inits = [const(n, np.float32(v)) for n, v in (("root2", np.sqrt(2)), ("one", 1.0), ("half", 0.5))]
    model = graph(nodes, [("x", (2, 64))], ["y"], inits)
    check(model, {"x": rand(0, (2, 64)) * 4}, atol=2e-6, rtol=0)
