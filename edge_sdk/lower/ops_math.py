"""Converters for elementwise ops: binary arithmetic with broadcasting, activations, Softmax, Cast.

A binary op over an NHWC feature map and a constant lays the constant out channels-last once, so
`x * scale[1, C, 1, 1]` becomes a MUL with a [1, 1, 1, C] constant and no transpose.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from edge_sdk.lower.context import TO_NHWC, Lowering
from edge_sdk.lower.flatbuffer import BuiltinOperator as Op
from edge_sdk.lower.flatbuffer import options, schema
from edge_sdk.lower.onnxattr import attr

Act = schema.ActivationFunctionType

_BINARY = {
    "Add": (Op.ADD, "AddOptions"),
    "Sub": (Op.SUB, "SubOptions"),
    "Mul": (Op.MUL, "MulOptions"),
    "Div": (Op.DIV, "DivOptions"),
    "Pow": (Op.POW, "PowOptions"),
    "Max": (Op.MAXIMUM, "MaximumMinimumOptions"),
    "Min": (Op.MINIMUM, "MaximumMinimumOptions"),
}
_FUSABLE_BINARY = {"Add", "Sub", "Mul", "Div"}

_UNARY = {
    "Relu": (Op.RELU, None),
    "Sigmoid": (Op.LOGISTIC, None),
    "Tanh": (Op.TANH, None),
    "Exp": (Op.EXP, "ExpOptions"),
    "Log": (Op.LOG, None),
    "Sqrt": (Op.SQRT, None),
    "Abs": (Op.ABS, "AbsOptions"),
    "Neg": (Op.NEG, "NegOptions"),
    "Sin": (Op.SIN, None),
    "Cos": (Op.COS, "CosOptions"),
    "Floor": (Op.FLOOR, None),
    "Ceil": (Op.CEIL, None),
    "Sign": (Op.SIGN, "SignOptions"),
}


def operand(ctx: Lowering, name: str, rank: int, nhwc: bool) -> int:
    """`name` as a TFLite tensor broadcastable against a rank-`rank` result in the given layout."""
    const = ctx.const(name)
    if const is not None and name not in ctx.values:
        array = const.reshape((1,) * (rank - const.ndim) + const.shape) if const.ndim < rank else const
        array = array.astype(np.float32) if array.dtype == np.float64 else array
        array = array.astype(np.int32) if array.dtype == np.int64 else array
        if const.ndim == 0 or const.size == 1:
            return ctx.constant(name, array.reshape(()) if const.ndim == 0 else array.reshape(-1))
        return ctx.constant(name, array.transpose(TO_NHWC) if nhwc else array)
    shape = ctx.shape(name)
    if not nhwc or len(shape) == 4:
        return ctx.tensor(name, nhwc=nhwc and len(shape) == 4)
    # a lower-rank tensor against an NHWC map: give it rank 4 (NCHW), then the layout
    source = ctx.tensor(name, nhwc=False)
    padded = (1,) * (4 - len(shape)) + tuple(shape)
    reshaped = ctx.scratch(f"{name}_rank4", padded)
    ctx.op(Op.RESHAPE, [source, ctx.int32s("shape", padded)], [reshaped], options("ReshapeOptions", newShape=padded))
    out = ctx.scratch(f"{name}_rank4_nhwc", tuple(padded[i] for i in TO_NHWC))
    ctx.transpose(reshaped, TO_NHWC, out)
    ctx.layout_transposes += 1
    return out


def convert_binary(ctx: Lowering, node: onnx.NodeProto) -> None:
    """ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM with broadcasting; constants laid out NHWC once; division by a
    constant becomes MUL; Relu/Relu6 fused into ADD/SUB/MUL/DIV."""
    code, kind = _BINARY[node.op_type]
    divisor = ctx.const(node.input[1]) if node.op_type == "Div" and node.input[1] not in ctx.values else None
    if divisor is not None and divisor.dtype.kind == "f" and np.all(divisor != 0):
        # x / c as x * (1/c): XNNPACK has no int8 DIV, and MUL is cheaper everywhere
        reciprocal = (1.0 / divisor.astype(np.float64)).astype(np.float32)
        ctx.consts[f"{node.input[1]}_reciprocal"] = reciprocal
        node = onnx.helper.make_node(
            "Mul", [node.input[0], f"{node.input[1]}_reciprocal"], list(node.output), name=node.name
        )
        code, kind = _BINARY["Mul"]
    shape = ctx.shape(node.output[0])
    nhwc = len(shape) == 4 and any(ctx.is_nhwc(n) for n in node.input[:2])
    inputs = [operand(ctx, n, len(shape), nhwc) for n in node.input[:2]]
    if node.op_type == "Pow" and ctx.fb.dtype_code(inputs[1]) != ctx.fb.dtype_code(inputs[0]):
        # ONNX lets the exponent be an integer; TFLite's POW needs both of one type
        exponent = ctx.scratch("exponent", ctx.fb.shape(inputs[1]), _dtype(ctx, node.output[0]))
        ctx.op(Op.CAST, [inputs[1]], [exponent], options("CastOptions"))
        inputs[1] = exponent
    out_name, act = ctx.fused_output(node) if node.op_type in _FUSABLE_BINARY else (node.output[0], Act.NONE)
    out = ctx.output(out_name, shape, nhwc=nhwc, dtype=_dtype(ctx, node.output[0]))
    opts = options(kind, fusedActivationFunction=act) if node.op_type in _FUSABLE_BINARY else options(kind)
    ctx.op(code, inputs, [out], opts)


def convert_unary(ctx: Lowering, node: onnx.NodeProto) -> None:
    """The TFLite op of the same meaning (RELU, LOGISTIC, TANH, EXP, LOG, SQRT, ABS, NEG, SIN, COS, FLOOR, CEIL,
    SIGN)."""
    code, kind = _UNARY[node.op_type]
    x = ctx.value(node.input[0])
    out = ctx.output(node.output[0], x.shape, nhwc=x.nhwc)
    ctx.op(code, [x.index], [out], options(kind) if kind else (0, None))


def convert_reciprocal(ctx: Lowering, node: onnx.NodeProto) -> None:
    """DIV of 1 by x."""
    x = ctx.value(node.input[0])
    out = ctx.output(node.output[0], x.shape, nhwc=x.nhwc)
    one = ctx.constant("one", np.asarray(1.0, np.float32))
    ctx.op(Op.DIV, [one, x.index], [out], options("DivOptions"))


def clip_bounds(ctx: Lowering, node: onnx.NodeProto) -> tuple[float, float]:
    if ctx.opset < 11 or len(node.input) == 1:
        return float(attr(node, "min", -math.inf)), float(attr(node, "max", math.inf))
    low = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else np.float32(-math.inf)
    high = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.float32(math.inf)
    if low is None or high is None:
        ctx.fail("its min and max must be constants")
    return float(np.asarray(low)), float(np.asarray(high))


def activation_of(low: float, high: float) -> int | None:
    """The TFLite fused activation equal to Clip(low, high), if there is one."""
    return {(0.0, 6.0): Act.RELU6, (0.0, math.inf): Act.RELU, (-1.0, 1.0): Act.RELU_N1_TO_1}.get((low, high))


def convert_clip(ctx: Lowering, node: onnx.NodeProto) -> None:
    """RELU6, RELU, RELU_N1_TO_1 or RELU_0_TO_1 for those bounds (or fused into the producer), else MAXIMUM and
    MINIMUM. Constant bounds."""
    low, high = clip_bounds(ctx, node)
    x = ctx.value(node.input[0])
    out = ctx.output(node.output[0], x.shape, nhwc=x.nhwc)
    single = {(0.0, 6.0): Op.RELU6, (0.0, math.inf): Op.RELU, (-1.0, 1.0): Op.RELU_N1_TO_1, (0.0, 1.0): Op.RELU_0_TO_1}
    if (low, high) in single:
        ctx.op(single[(low, high)], [x.index], [out])
        return
    lowered = ctx.scratch("max", x.stored_shape) if high < math.inf else out
    source = x.index
    if low > -math.inf:
        ctx.op(Op.MAXIMUM, [source, ctx.constant("clip_min", np.float32(low))], [lowered])
        source = lowered
    if high < math.inf:
        ctx.op(Op.MINIMUM, [source, ctx.constant("clip_max", np.float32(high))], [out])


def convert_leaky_relu(ctx: Lowering, node: onnx.NodeProto) -> None:
    """LEAKY_RELU."""
    x = ctx.value(node.input[0])
    out = ctx.output(node.output[0], x.shape, nhwc=x.nhwc)
    ctx.op(Op.LEAKY_RELU, [x.index], [out], options("LeakyReluOptions", alpha=float(attr(node, "alpha", 0.01))))


def convert_prelu(ctx: Lowering, node: onnx.NodeProto) -> None:
    """PRELU with the slope laid out NHWC."""
    x = ctx.value(node.input[0])
    slope = operand(ctx, node.input[1], len(x.shape), x.nhwc)
    out = ctx.output(node.output[0], x.shape, nhwc=x.nhwc)
    ctx.op(Op.PRELU, [x.index, slope], [out])


def convert_hard_sigmoid(ctx: Lowering, node: onnx.NodeProto) -> None:
    """max(0, min(1, alpha*x + beta)) as relu6(6*alpha*x + 6*beta) / 6: MUL, ADD with a fused RELU6,
    MUL. XNNPACK runs all three in fp32 and int8; it has no RELU_0_TO_1, whose every use would split
    the model into another delegate piece."""
    x = ctx.value(node.input[0])
    alpha, beta = float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5))
    scaled, clipped = ctx.scratch("scaled", x.stored_shape), ctx.scratch("relu6", x.stored_shape)
    ctx.op(Op.MUL, [x.index, ctx.constant("alpha6", np.float32(6 * alpha))], [scaled], options("MulOptions"))
    six_beta = ctx.constant("beta6", np.float32(6 * beta))
    ctx.op(Op.ADD, [scaled, six_beta], [clipped], options("AddOptions", fusedActivationFunction=Act.RELU6))
    sixth = ctx.constant("sixth", np.float32(1 / 6))
    ctx.op(Op.MUL, [clipped, sixth], [ctx.output(node.output[0], x.shape, nhwc=x.nhwc)], options("MulOptions"))


def hard_swish(ctx: Lowering, source: str, output: str) -> None:
    """x * relu6(x + 3) / 6: one HARD_SWISH, or for int8 models ADD (fused RELU6), MUL, MUL, which
    XNNPACK runs in int8 where it leaves an int8 HARD_SWISH to LiteRT's own kernel (a delegate split)."""
    x = ctx.value(source)
    out = ctx.output(output, x.shape, nhwc=x.nhwc)
    if not ctx.int8_friendly:
        ctx.op(Op.HARD_SWISH, [x.index], [out], options("HardSwishOptions"))
        return
    gate, product = ctx.scratch("relu6", x.stored_shape), ctx.scratch("product", x.stored_shape)
    three = ctx.constant("three", np.float32(3.0))
    ctx.op(Op.ADD, [x.index, three], [gate], options("AddOptions", fusedActivationFunction=Act.RELU6))
    ctx.op(Op.MUL, [x.index, gate], [product], options("MulOptions"))
    ctx.op(Op.MUL, [product, ctx.constant("sixth", np.float32(1 / 6))], [out], options("MulOptions"))


def convert_hard_swish(ctx: Lowering, node: onnx.NodeProto) -> None:
    """HARD_SWISH (ADD+RELU6, MUL, MUL for int8 models); x*HardSigmoid(x) and x*Clip(x+3,0,6)/6 patterns too."""
    hard_swish(ctx, node.input[0], node.output[0])


def convert_gelu(ctx: Lowering, node: onnx.NodeProto) -> None:
    """GELU, exact or tanh-approximate as the attribute says (opset 20)."""
    x = ctx.value(node.input[0])
    out = ctx.output(node.output[0], x.shape, nhwc=x.nhwc)
    ctx.op(Op.GELU, [x.index], [out], options("GeluOptions", approximate=attr(node, "approximate", "none") == "tanh"))


# Abramowitz & Stegun 7.1.26: erf(x) = sign(x) (1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-x^2)),
# t = 1 / (1 + p |x|); absolute error below 1.5e-7 over the whole real line.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def convert_erf(ctx: Lowering, node: onnx.NodeProto) -> None:
    """No TFLite builtin: the Abramowitz-Stegun 7.1.26 approximation (absolute error < 1.5e-7) from ABS,
    MUL, ADD, DIV, EXP, NEG, SIGN."""
    x = ctx.value(node.input[0])
    shape = x.stored_shape

    def const(value: float) -> int:
        return ctx.constant("erf_c", np.float32(value))

    def step(code: int, inputs: list[int], label: str, kind: str | None = None) -> int:
        out = ctx.scratch(label, shape)
        ctx.op(code, inputs, [out], options(kind) if kind else (0, None))
        return out

    magnitude = step(Op.ABS, [x.index], "abs", "AbsOptions")
    scaled = step(Op.MUL, [magnitude, const(_ERF_P)], "p_abs", "MulOptions")
    t = step(Op.DIV, [const(1.0), step(Op.ADD, [scaled, const(1.0)], "1_p_abs", "AddOptions")], "t", "DivOptions")
    poly = step(Op.MUL, [t, const(_ERF_A[4])], "poly4", "MulOptions")
    for i, a in enumerate(reversed(_ERF_A[:4])):
        poly = step(Op.ADD, [poly, const(a)], f"poly_add{i}", "AddOptions")
        poly = step(Op.MUL, [poly, t], f"poly_mul{i}", "MulOptions")
    square = step(Op.MUL, [x.index, x.index], "square", "MulOptions")
    decay = step(Op.EXP, [step(Op.NEG, [square], "neg_square", "NegOptions")], "exp", "ExpOptions")
    tail = step(Op.MUL, [poly, decay], "tail", "MulOptions")
    body = step(Op.SUB, [const(1.0), tail], "erf_abs", "SubOptions")
    sign = step(Op.SIGN, [x.index], "sign", "SignOptions")
    ctx.op(Op.MUL, [body, sign], [ctx.output(node.output[0], x.shape, nhwc=x.nhwc)], options("MulOptions"))


def convert_softmax(ctx: Lowering, node: onnx.NodeProto) -> None:
    """SOFTMAX over the last stored axis (the channel axis of a feature map); other axes only where a layout makes
    them last."""
    x = ctx.value(node.input[0])
    rank = len(x.shape)
    axis = attr(node, "axis", -1 if ctx.opset >= 13 else 1) % rank
    if ctx.opset < 13 and axis != rank - 1:
        ctx.fail("Softmax before opset 13 flattens from `axis`; only the last axis is supported")
    stored_axis = TO_NHWC.index(axis) if x.nhwc else axis
    nhwc = x.nhwc
    if stored_axis != rank - 1:  # TFLite's SOFTMAX runs over the last axis
        if rank == 4 and axis == 1:
            nhwc = True
        elif rank == 4 and axis == 3:
            nhwc = False
        else:
            ctx.fail(f"Softmax over axis {axis} of a rank-{rank} tensor is not supported (only the last axis)")
    source = ctx.tensor(node.input[0], nhwc=nhwc)
    out = ctx.output(node.output[0], x.shape, nhwc=nhwc)
    ctx.op(Op.SOFTMAX, [source], [out], options("SoftmaxOptions", beta=1.0))


def convert_cast(ctx: Lowering, node: onnx.NodeProto) -> None:
    """CAST; int64 becomes int32."""
    x = ctx.value(node.input[0])
    to = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(attr(node, "to")))
    to = np.dtype(np.int32) if to == np.int64 else to
    out = ctx.output(node.output[0], x.shape, nhwc=x.nhwc, dtype=to)
    ctx.op(Op.CAST, [x.index], [out], options("CastOptions"))


def convert_identity(ctx: Lowering, node: onnx.NodeProto) -> None:
    """No op: the output is the input."""
    ctx.values[node.output[0]] = ctx.value(node.input[0])


def _dtype(ctx: Lowering, name: str) -> np.dtype:
    dtype = ctx.dtypes.get(name, np.dtype(np.float32))
    return np.dtype(np.int32) if dtype == np.int64 else dtype


CONVERTERS: dict[str, Callable[[Lowering, onnx.NodeProto], None]] = {
    **{op: convert_binary for op in _BINARY},
    **{op: convert_unary for op in _UNARY},
    "Reciprocal": convert_reciprocal,
    "Clip": convert_clip,
    "LeakyRelu": convert_leaky_relu,
    "PRelu": convert_prelu,
    "HardSigmoid": convert_hard_sigmoid,
    "HardSwish": convert_hard_swish,
    "Gelu": convert_gelu,
    "Erf": convert_erf,
    "Softmax": convert_softmax,
    "Cast": convert_cast,
    "Identity": convert_identity,
    "Dropout": convert_identity,
}
