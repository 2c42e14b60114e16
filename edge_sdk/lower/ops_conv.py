"""Converters for the compute ops: Conv (plain, depthwise, grouped, dilated), ConvTranspose, Gemm, MatMul.

Weights are constants laid out for TFLite here, once: OIHW -> OHWI for CONV_2D, -> 1HWO for
DEPTHWISE_CONV_2D, (in, out) -> (out, in) for FULLY_CONNECTED.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from edge_sdk.lower.context import Lowering
from edge_sdk.lower.flatbuffer import BuiltinOperator as Op
from edge_sdk.lower.flatbuffer import Padding, options, schema
from edge_sdk.lower.onnxattr import attr, ints


def spatial_padding(
    ctx: Lowering, node: onnx.NodeProto, in_hw: tuple[int, int], kernel: tuple[int, int]
) -> tuple[int, list[int] | None]:
    """TFLite's SAME or VALID when the ONNX pads equal one of them, else VALID plus explicit pads
    [top, left, bottom, right] for a PAD op in front."""
    strides = ints(node, "strides", [1, 1])
    dilations = ints(node, "dilations", [1, 1])
    auto_pad = attr(node, "auto_pad", "NOTSET")
    same = []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        same.append((total // 2, total - total // 2))
    if auto_pad == "SAME_UPPER":
        return Padding.SAME, None
    if auto_pad == "VALID":
        return Padding.VALID, None
    if auto_pad == "SAME_LOWER":
        pads = [same[0][1], same[1][1], same[0][0], same[1][0]]
    else:
        pads = ints(node, "pads", [0, 0, 0, 0])
    if not any(pads):
        return Padding.VALID, None
    if pads == [same[0][0], same[1][0], same[0][1], same[1][1]]:
        return Padding.SAME, None
    return Padding.VALID, pads


def pad_nhwc(ctx: Lowering, source: int, pads: list[int], value: float = 0.0) -> int:
    """Explicit PAD (or PADV2 for a non-zero value) of an NHWC tensor; pads are [top, left, bottom, right]."""
    n, h, w, c = ctx.fb.shape(source)
    top, left, bottom, right = pads
    out = ctx.scratch("pad", (n, h + top + bottom, w + left + right, c))
    paddings = ctx.int32s("paddings", [[0, 0], [top, bottom], [left, right], [0, 0]])
    if value == 0.0:
        ctx.op(Op.PAD, [source, paddings], [out], options("PadOptions"))
    else:
        fill = ctx.constant("pad_value", np.asarray([value], dtype=np.float32))
        ctx.op(Op.PADV2, [source, paddings, fill], [out], options("PadV2Options"))
    return out


def convert_conv(ctx: Lowering, node: onnx.NodeProto) -> None:
    """CONV_2D; DEPTHWISE_CONV_2D when group == channels; SPLIT + CONV_2D per group + CONCATENATION when grouped. 2-D
    only, constant weights; pads become SAME/VALID or a PAD in front; Relu/Relu6 fused."""
    weight = ctx.require_const(node.input[1], "weight").astype(np.float32)
    if weight.ndim != 4:
        ctx.fail(f"only 2-D convolutions are supported (weight of rank {weight.ndim})")
    out_c, in_per_group, kh, kw = weight.shape
    bias = _bias(ctx, node, out_c)
    x = ctx.tensor(node.input[0], nhwc=True)
    _, h, w, in_c = ctx.fb.shape(x)
    padding, pads = spatial_padding(ctx, node, (h, w), (kh, kw))
    if pads is not None:
        x = pad_nhwc(ctx, x, pads)
    group = attr(node, "group", 1)
    out_name, act = ctx.fused_output(node)
    out = ctx.output(out_name, ctx.shape(node.output[0]), nhwc=True)
    strides, dilations = ints(node, "strides", [1, 1]), ints(node, "dilations", [1, 1])
    common = {
        "padding": padding,
        "strideH": strides[0],
        "strideW": strides[1],
        "dilationHFactor": dilations[0],
        "dilationWFactor": dilations[1],
        "fusedActivationFunction": act,
    }
    if group == 1:
        w_t = ctx.constant(f"{node.input[1]}_ohwi", weight.transpose(0, 2, 3, 1))
        ctx.op(Op.CONV_2D, [x, w_t, ctx.constant(f"{node.name}_bias", bias)], [out], options("Conv2DOptions", **common))
    elif group == in_c and in_per_group == 1:
        w_t = ctx.constant(f"{node.input[1]}_1hwo", weight.transpose(1, 2, 3, 0))
        opts = options("DepthwiseConv2DOptions", depthMultiplier=out_c // in_c, **common)
        ctx.op(Op.DEPTHWISE_CONV_2D, [x, w_t, ctx.constant(f"{node.name}_bias", bias)], [out], opts)
    else:
        _grouped_conv(ctx, x, weight, bias, group, out, common)


def _grouped_conv(ctx: Lowering, x: int, weight: np.ndarray, bias: np.ndarray, group: int, out: int, common) -> None:
    """A grouped convolution as SPLIT, one CONV_2D per group and CONCATENATION: every TFLite runtime
    runs these, where native grouped CONV_2D is missing from several delegates."""
    n, h, w, in_c = ctx.fb.shape(x)
    out_shape = ctx.fb.shape(out)
    per_out = weight.shape[0] // group
    pieces = [ctx.scratch(f"group{g}_in", (n, h, w, in_c // group)) for g in range(group)]
    ctx.op(Op.SPLIT, [ctx.int32s("axis3", [3]), x], pieces, options("SplitOptions", numSplits=group))
    results = []  # the activation is fused into each group's CONV_2D: CONCATENATION takes none
    for g, piece in enumerate(pieces):
        w_g = weight[g * per_out : (g + 1) * per_out].transpose(0, 2, 3, 1)
        b_g = bias[g * per_out : (g + 1) * per_out]
        result = ctx.scratch(f"group{g}_out", (*out_shape[:3], per_out))
        inputs = [piece, ctx.constant(f"group{g}_w", w_g), ctx.constant(f"group{g}_b", b_g)]
        ctx.op(Op.CONV_2D, inputs, [result], options("Conv2DOptions", **common))
        results.append(result)
    ctx.op(Op.CONCATENATION, results, [out], options("ConcatenationOptions", axis=3))


def convert_conv_transpose(ctx: Lowering, node: onnx.NodeProto) -> None:
    """TRANSPOSE_CONV (VALID, with bias), then SLICE for the pads. 2-D, ungrouped, undilated, constant weights;
    output_padding at most the end pads."""
    weight = ctx.require_const(node.input[1], "weight").astype(np.float32)
    if weight.ndim != 4 or attr(node, "group", 1) != 1:
        ctx.fail("only 2-D, ungrouped transposed convolutions are supported")
    if ints(node, "dilations", [1, 1]) != [1, 1]:
        ctx.fail(f"dilations {ints(node, 'dilations', [1, 1])} are not supported; TFLite's TRANSPOSE_CONV has none")
    _, out_c, kh, kw = weight.shape
    strides = ints(node, "strides", [1, 1])
    x = ctx.tensor(node.input[0], nhwc=True)
    n, h, w, _ = ctx.fb.shape(x)
    full = (n, (h - 1) * strides[0] + kh, (w - 1) * strides[1] + kw, out_c)  # VALID output, cropped below
    out_name, act = ctx.fused_output(node)
    target = ctx.shape(node.output[0])
    top, left = _transpose_crop(node, full, target)
    if top + target[2] > full[1] or left + target[3] > full[2]:
        ctx.fail(f"output_padding {ints(node, 'output_padding', [0, 0])} larger than the end pads is not supported")
    out = ctx.output(out_name, target, nhwc=True)
    needs_crop = (full[1], full[2]) != (target[2], target[3])
    raw = ctx.scratch("full", full) if needs_crop else out
    inputs = [
        ctx.int32s(f"{node.name}_shape", full),
        ctx.constant(f"{node.input[1]}_ohwi", weight.transpose(1, 2, 3, 0)),
        x,
        ctx.constant(f"{node.name}_bias", _bias(ctx, node, out_c)),
    ]
    opts = options(
        "TransposeConvOptions",
        padding=Padding.VALID,
        strideH=strides[0],
        strideW=strides[1],
        fusedActivationFunction=act if not needs_crop else schema.ActivationFunctionType.NONE,
    )
    ctx.op(Op.TRANSPOSE_CONV, inputs, [raw], opts)
    if needs_crop:
        if act != schema.ActivationFunctionType.NONE:
            ctx.fail("a fused activation after a cropped ConvTranspose is not supported")
        begin = ctx.int32s("begin", [0, top, left, 0])
        size = ctx.int32s("size", [n, target[2], target[3], out_c])
        ctx.op(Op.SLICE, [raw, begin, size], [out], options("SliceOptions"))


def _transpose_crop(node: onnx.NodeProto, full: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, int]:
    pads = ints(node, "pads", [0, 0, 0, 0])
    if attr(node, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        total_h, total_w = full[1] - target[2], full[2] - target[3]
        lower = attr(node, "auto_pad", "") == "SAME_LOWER"
        return ((total_h + 1) // 2, (total_w + 1) // 2) if lower else (total_h // 2, total_w // 2)
    return pads[0], pads[1]


def convert_gemm(ctx: Lowering, node: onnx.NodeProto) -> None:
    """FULLY_CONNECTED with alpha folded into the weights and beta into the bias. Constant B, transA = 0, C a vector
    or scalar."""
    b = ctx.require_const(node.input[1], "B (weight)").astype(np.float32)
    if attr(node, "transA", 0):
        ctx.fail("transA=1 is not supported")
    weight = (b if attr(node, "transB", 0) else b.T) * np.float32(attr(node, "alpha", 1.0))
    n = weight.shape[0]
    c = ctx.const(node.input[2]) if len(node.input) > 2 else None
    if len(node.input) > 2 and node.input[2] and (c is None or c.size not in (1, n)):
        ctx.fail("a non-constant or full-matrix C is not supported; export the bias as a vector")
    bias = np.zeros(n, np.float32) if c is None else np.broadcast_to(c.reshape(-1), (n,)) * attr(node, "beta", 1.0)
    _fully_connected(ctx, node, node.input[0], weight, bias.astype(np.float32), keep_dims=False)


def convert_matmul(ctx: Lowering, node: onnx.NodeProto) -> None:
    """FULLY_CONNECTED (keep_num_dims) when B is a constant matrix; BATCH_MATMUL otherwise (broadcasting batch dims)."""
    b = ctx.const(node.input[1])
    if b is not None and b.ndim == 2:
        weight = b.astype(np.float32).T
        rank = len(ctx.shape(node.input[0]))
        _fully_connected(ctx, node, node.input[0], weight, np.zeros(weight.shape[0], np.float32), keep_dims=rank > 2)
        return
    a_t, b_t = ctx.tensor(node.input[0], nhwc=False), ctx.tensor(node.input[1], nhwc=False)
    out = ctx.output(node.output[0], ctx.shape(node.output[0]), nhwc=False)
    ctx.op(Op.BATCH_MATMUL, [a_t, b_t], [out], options("BatchMatMulOptions"))


def _fully_connected(
    ctx: Lowering, node: onnx.NodeProto, source: str, weight: np.ndarray, bias: np.ndarray, *, keep_dims: bool
) -> None:
    x = ctx.tensor(source, nhwc=False)
    out_name, act = ctx.fused_output(node)
    out = ctx.output(out_name, ctx.shape(node.output[0]), nhwc=False)
    inputs = [x, ctx.constant(f"{node.name}_weight", weight), ctx.constant(f"{node.name}_bias", bias)]
    opts = options("FullyConnectedOptions", fusedActivationFunction=act, keepNumDims=keep_dims)
    ctx.op(Op.FULLY_CONNECTED, inputs, [out], opts)


def _bias(ctx: Lowering, node: onnx.NodeProto, size: int) -> np.ndarray:
    if len(node.input) > 2 and node.input[2]:
        return ctx.require_const(node.input[2], "bias").astype(np.float32)
    return np.zeros(size, np.float32)


CONVERTERS: dict[str, Callable[[Lowering, onnx.NodeProto], None]] = {
    "Conv": convert_conv,
    "ConvTranspose": convert_conv_transpose,
    "Gemm": convert_gemm,
    "MatMul": convert_matmul,
}
