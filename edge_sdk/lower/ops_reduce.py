"""Converters for pooling, reductions and LayerNormalization."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from edge_sdk.lower.context import TO_NHWC, Lowering
from edge_sdk.lower.flatbuffer import BuiltinOperator as Op
from edge_sdk.lower.flatbuffer import Padding, options
from edge_sdk.lower.onnxattr import attr, ints
from edge_sdk.lower.ops_conv import pad_nhwc, spatial_padding

_POOLS = {"MaxPool": Op.MAX_POOL_2D, "AveragePool": Op.AVERAGE_POOL_2D}
_REDUCE = {"ReduceMean": Op.MEAN, "ReduceMax": Op.REDUCE_MAX, "ReduceSum": Op.SUM, "ReduceMin": Op.REDUCE_MIN}
_AXES_AS_INPUT = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18}


def convert_pool(ctx: Lowering, node: onnx.NodeProto) -> None:
    """MAX_POOL_2D or AVERAGE_POOL_2D; explicit pads as PAD/PADV2 in front (average: only with count_include_pad=1);
    ceil_mode where the output keeps its size."""
    kernel = ints(node, "kernel_shape", [])
    if len(kernel) != 2:
        ctx.fail(f"only 2-D pooling is supported (kernel_shape {kernel})")
    if ints(node, "dilations", [1, 1]) != [1, 1]:
        ctx.fail("dilated pooling is not supported")
    x = ctx.tensor(node.input[0], nhwc=True)
    _, h, w, _ = ctx.fb.shape(x)
    padding, pads = spatial_padding(ctx, node, (h, w), (kernel[0], kernel[1]))
    shape = ctx.shape(node.output[0])
    if attr(node, "ceil_mode", 0):
        padding, pads = _ceil_mode_pads(ctx, node, (h, w), kernel, shape, padding, pads)
    average = node.op_type == "AveragePool"
    if pads is not None:
        if average and not attr(node, "count_include_pad", 0):
            ctx.fail("AveragePool with explicit padding that excludes the pad from the count is not supported")
        x = pad_nhwc(ctx, x, pads, value=0.0 if average else -3.4e38)
        padding = Padding.VALID
    elif average and padding == Padding.SAME and attr(node, "count_include_pad", 0):
        x = pad_nhwc(ctx, x, _same_pads(node, (h, w), kernel))  # TFLite's SAME average excludes the pad
        padding = Padding.VALID
    strides = ints(node, "strides", [1, 1])
    out_name, act = ctx.fused_output(node)
    out = ctx.output(out_name, shape, nhwc=True)
    opts = options(
        "Pool2DOptions",
        padding=padding,
        strideH=strides[0],
        strideW=strides[1],
        filterHeight=kernel[0],
        filterWidth=kernel[1],
        fusedActivationFunction=act,
    )
    ctx.op(_POOLS[node.op_type], [x], [out], opts)


def _same_pads(node: onnx.NodeProto, hw: tuple[int, int], kernel: list[int]) -> list[int]:
    strides = ints(node, "strides", [1, 1])
    totals = [max((-(-s // st) - 1) * st + k - s, 0) for s, k, st in zip(hw, kernel, strides, strict=True)]
    return [totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2]


def _ceil_mode_pads(ctx, node, hw, kernel, shape, padding, pads):
    """ceil_mode adds rows/columns at the end; as explicit padding when that changes the output size."""
    base = pads or ([0, 0, 0, 0] if padding == Padding.VALID else _same_pads(node, hw, kernel))
    strides = ints(node, "strides", [1, 1])
    if any((shape[2 + axis] - 1) * strides[axis] >= hw[axis] + base[axis] for axis in range(2)):
        ctx.fail(
            "with ceil_mode=1 its last window starts in the end padding: ONNX Runtime drops that window, "
            "ONNX shape inference keeps it, so the output size is ambiguous"
        )
    extra = []
    for axis in range(2):
        padded = hw[axis] + base[axis] + base[axis + 2]
        needed = (shape[2 + axis] - 1) * strides[axis] + kernel[axis]
        extra.append(max(needed - padded, 0))
    if not any(extra):
        return padding, pads
    if node.op_type == "AveragePool":
        ctx.fail("AveragePool with ceil_mode=1 that changes the output size is not supported")
    return Padding.VALID, [base[0], base[1], base[2] + extra[0], base[3] + extra[1]]


def convert_global_pool(ctx: Lowering, node: onnx.NodeProto) -> None:
    """MEAN or REDUCE_MAX over H and W, keep_dims."""
    x = ctx.tensor(node.input[0], nhwc=True)
    out = ctx.output(node.output[0], ctx.shape(node.output[0]), nhwc=True)
    code = Op.MEAN if node.op_type == "GlobalAveragePool" else Op.REDUCE_MAX
    ctx.op(code, [x, ctx.int32s("axes", [1, 2])], [out], options("ReducerOptions", keepDims=True))


def convert_reduce(ctx: Lowering, node: onnx.NodeProto) -> None:
    """MEAN, REDUCE_MAX, REDUCE_MIN or SUM over the mapped axes; constant axes."""
    x = ctx.value(node.input[0])
    rank = len(x.shape)
    if ctx.opset >= _AXES_AS_INPUT[node.op_type]:
        axes_in = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if len(node.input) > 1 and node.input[1] and axes_in is None:
            ctx.fail("its axes must be a constant")
        axes = None if axes_in is None else axes_in.tolist()
    else:
        axes = attr(node, "axes")
    if not axes:
        if attr(node, "noop_with_empty_axes", 0):
            ctx.values[node.output[0]] = x
            return
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    keep = bool(attr(node, "keepdims", 1))
    nhwc = x.nhwc
    if nhwc and not keep:  # removing axes from NHWC keeps ONNX's order only if C is last of the rest
        kept = [a for a in TO_NHWC if a not in axes]
        nhwc = kept == sorted(kept)
    shape = ctx.shape(node.output[0])
    source = ctx.tensor(node.input[0], nhwc=nhwc)
    stored = [TO_NHWC.index(a) for a in axes] if nhwc else axes
    out = ctx.output(node.output[0], shape, nhwc=nhwc and keep)
    ctx.op(_REDUCE[node.op_type], [source, ctx.int32s("axes", stored)], [out], options("ReducerOptions", keepDims=keep))


def convert_layer_norm(ctx: Lowering, node: onnx.NodeProto) -> None:
    """(x - mean) * rsqrt(var + eps) * gamma + beta over the trailing axes, in ONNX's layout."""
    shape = ctx.shape(node.input[0])
    rank = len(shape)
    axis = attr(node, "axis", -1) % rank
    if len(node.output) > 1 and any(node.output[1:]):
        ctx.fail("the Mean and InvStdDev outputs are not supported")
    x = ctx.tensor(node.input[0], nhwc=False)
    axes = ctx.int32s("axes", list(range(axis, rank)))
    reduced = tuple(d if i < axis else 1 for i, d in enumerate(shape))
    mean, centered = ctx.scratch("mean", reduced), ctx.scratch("centered", shape)
    square, var = ctx.scratch("square", shape), ctx.scratch("var", reduced)
    var_eps, inv = ctx.scratch("var_eps", reduced), ctx.scratch("inv_std", reduced)
    normed, scaled = ctx.scratch("normed", shape), ctx.scratch("scaled", shape)
    keep = options("ReducerOptions", keepDims=True)
    ctx.op(Op.MEAN, [x, axes], [mean], keep)
    ctx.op(Op.SUB, [x, mean], [centered], options("SubOptions"))
    ctx.op(Op.MUL, [centered, centered], [square], options("MulOptions"))
    ctx.op(Op.MEAN, [square, axes], [var], keep)
    eps = ctx.constant("epsilon", np.float32(attr(node, "epsilon", 1e-5)))
    ctx.op(Op.ADD, [var, eps], [var_eps], options("AddOptions"))
    ctx.op(Op.RSQRT, [var_eps], [inv])
    ctx.op(Op.MUL, [centered, inv], [normed], options("MulOptions"))
    gamma = ctx.require_const(node.input[1], "scale").astype(np.float32)
    has_beta = len(node.input) > 2 and node.input[2]
    out = ctx.output(node.output[0], shape, nhwc=False)
    ctx.op(Op.MUL, [normed, ctx.constant("gamma", gamma)], [scaled if has_beta else out], options("MulOptions"))
    if has_beta:
        beta = ctx.require_const(node.input[2], "bias").astype(np.float32)
        ctx.op(Op.ADD, [scaled, ctx.constant("beta", beta)], [out], options("AddOptions"))


CONVERTERS: dict[str, Callable[[Lowering, onnx.NodeProto], None]] = {
    **{op: convert_pool for op in _POOLS},
    "GlobalAveragePool": convert_global_pool,
    "GlobalMaxPool": convert_global_pool,
    **{op: convert_reduce for op in _REDUCE},
    "LayerNormalization": convert_layer_norm,
}
