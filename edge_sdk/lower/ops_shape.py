"""Converters for data movement: Reshape and friends, Transpose, Concat, Split, Slice, Gather, Pad,
Resize, Expand, Tile.

Axis arguments are remapped for NHWC values instead of transposing the data. A Transpose whose effect
is only the NCHW -> NHWC change that the lowering already made becomes no op at all.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from edge_sdk.lower.context import TO_NHWC, Lowering, Value
from edge_sdk.lower.flatbuffer import BuiltinOperator as Op
from edge_sdk.lower.flatbuffer import options
from edge_sdk.lower.onnxattr import attr, ints


def stored_axis(value: Value, axis: int) -> int:
    axis %= len(value.shape)
    return TO_NHWC.index(axis) if value.nhwc else axis


def _non_unit(dims: tuple[int, ...]) -> list[int]:
    return [d for d in dims if d != 1]


def convert_reshape(ctx: Lowering, node: onnx.NodeProto) -> None:
    """Reshape, Flatten, Squeeze and Unsqueeze: the output shape comes from shape inference.

    A reshape needs data in ONNX's (NCHW) element order. An NHWC value whose non-unit dims are in the
    same order as in NCHW already is (an NHWC [1,1,1,C] map flattens to [1,C] with no transpose); only
    other NHWC values are transposed first. A 4-D result is stored NHWC when that too keeps the order."""
    x = ctx.value(node.input[0])
    shape = ctx.shape(node.output[0])
    same_order = _non_unit(x.stored_shape) == _non_unit(x.shape)
    source = ctx.tensor(node.input[0], nhwc=x.nhwc and same_order)
    nhwc_shape = tuple(shape[i] for i in TO_NHWC) if len(shape) == 4 else shape
    out_nhwc = len(shape) == 4 and _non_unit(nhwc_shape) == _non_unit(shape)
    stored = nhwc_shape if out_nhwc else shape
    out = ctx.output(node.output[0], shape, nhwc=out_nhwc, dtype=_dtype_of(ctx, x))
    ctx.op(Op.RESHAPE, [source, ctx.int32s("shape", stored)], [out], options("ReshapeOptions", newShape=list(stored)))


def convert_transpose(ctx: Lowering, node: onnx.NodeProto) -> None:
    """No op when it only undoes or repeats the NHWC layout change; TRANSPOSE otherwise."""
    x = ctx.value(node.input[0])
    rank = len(x.shape)
    perm = ints(node, "perm", list(reversed(range(rank))))
    shape = ctx.shape(node.output[0])
    in_order = list(TO_NHWC) if x.nhwc else list(range(rank))
    # an identity in either layout costs nothing; otherwise keep the input's layout, so a transformer's
    # head transposes stay in ONNX order and a CNN's stay channels-last
    candidates = [x.nhwc, not x.nhwc] if rank == 4 else [False]
    best = None
    for out_nhwc in candidates:
        out_order = TO_NHWC if out_nhwc else tuple(range(rank))
        q = [in_order.index(perm[out_order[i]]) for i in range(rank)]
        if q == list(range(rank)):
            ctx.values[node.output[0]] = Value(x.index, shape, out_nhwc)  # the layout change already happened
            return
        best = best or (out_nhwc, q)
    assert best is not None
    out = ctx.output(node.output[0], shape, nhwc=best[0], dtype=_dtype_of(ctx, x))
    ctx.transpose(x.index, tuple(best[1]), out)


def convert_concat(ctx: Lowering, node: onnx.NodeProto) -> None:
    """CONCATENATION on the mapped axis; empty inputs dropped."""
    shape = ctx.shape(node.output[0])
    names = [n for n in node.input if n and 0 not in ctx.shape(n)]
    nhwc = len(shape) == 4 and any(ctx.is_nhwc(n) for n in names)
    inputs = [ctx.tensor(n, nhwc=nhwc) if n in ctx.values or nhwc is False else _const_nhwc(ctx, n) for n in names]
    axis = attr(node, "axis") % len(shape)
    out_name, act = ctx.fused_output(node)
    out = ctx.output(out_name, shape, nhwc=nhwc, dtype=ctx.dtypes.get(node.output[0], np.dtype(np.float32)))
    stored = TO_NHWC.index(axis) if nhwc else axis
    ctx.op(Op.CONCATENATION, inputs, [out], options("ConcatenationOptions", axis=stored, fusedActivationFunction=act))


def _const_nhwc(ctx: Lowering, name: str) -> int:
    return ctx.tensor(name, nhwc=True)


def convert_split(ctx: Lowering, node: onnx.NodeProto) -> None:
    """SPLIT_V on the mapped axis (equal or given sizes)."""
    x = ctx.value(node.input[0])
    axis = attr(node, "axis", 0)
    sizes = [ctx.shape(o)[axis % len(x.shape)] for o in node.output]
    outs = [ctx.output(o, ctx.shape(o), nhwc=x.nhwc) for o in node.output]
    stored = ctx.int32s("axis", [stored_axis(x, axis)])
    ctx.op(
        Op.SPLIT_V, [x.index, ctx.int32s("sizes", sizes), stored], outs, options("SplitVOptions", numSplits=len(outs))
    )


def convert_slice(ctx: Lowering, node: onnx.NodeProto) -> None:
    """STRIDED_SLICE; constant starts, ends, axes and steps (negative too)."""
    x = ctx.value(node.input[0])
    rank = len(x.shape)
    starts = ctx.require_const(node.input[1], "starts").tolist()
    ends = ctx.require_const(node.input[2], "ends").tolist()
    axes = ctx.require_const(node.input[3], "axes").tolist() if len(node.input) > 3 and node.input[3] else None
    steps = ctx.require_const(node.input[4], "steps").tolist() if len(node.input) > 4 and node.input[4] else None
    axes = list(range(len(starts))) if axes is None else [a % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    begin, end, stride = [0] * rank, list(x.stored_shape), [1] * rank
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        dim = x.shape[a]
        s, e = _clamp(s, dim, st), _clamp(e, dim, st)
        i = stored_axis(x, a)
        begin[i], end[i], stride[i] = s, e, st
    end_mask = sum(1 << i for i in range(rank) if stride[i] < 0 and end[i] < 0)
    end = [0 if stride[i] < 0 and end[i] < 0 else end[i] for i in range(rank)]
    out = ctx.output(node.output[0], ctx.shape(node.output[0]), nhwc=x.nhwc, dtype=_dtype_of(ctx, x))
    inputs = [x.index, ctx.int32s("begin", begin), ctx.int32s("end", end), ctx.int32s("strides", stride)]
    ctx.op(Op.STRIDED_SLICE, inputs, [out], options("StridedSliceOptions", endMask=end_mask))


def _clamp(index: int, dim: int, step: int) -> int:
    index = index + dim if index < 0 else index
    return max(-1, min(index, dim - 1)) if step < 0 else max(0, min(index, dim))


def convert_gather(ctx: Lowering, node: onnx.NodeProto) -> None:
    """GATHER with constant indices on the mapped axis."""
    x = ctx.value(node.input[0])
    indices = ctx.require_const(node.input[1], "indices").astype(np.int64)
    axis = attr(node, "axis", 0) % len(x.shape)
    indices = np.where(indices < 0, indices + x.shape[axis], indices).astype(np.int32)
    keep_layout = x.nhwc and indices.ndim == 1
    source = x.index if keep_layout else ctx.tensor(node.input[0], nhwc=False)
    stored = TO_NHWC.index(axis) if keep_layout else axis
    out = ctx.output(node.output[0], ctx.shape(node.output[0]), nhwc=keep_layout, dtype=_dtype_of(ctx, x))
    index_t = ctx.constant("indices", indices)
    ctx.fb.tensors[index_t].shape = np.asarray(indices.shape, np.int32)  # add_constant makes a 0-d index 1-d
    ctx.op(Op.GATHER, [source, index_t], [out], options("GatherOptions", axis=stored))


def convert_pad(ctx: Lowering, node: onnx.NodeProto) -> None:
    """PAD, PADV2 (non-zero constant) or MIRROR_PAD (reflect). Constant, non-negative pads; no edge mode, no axes
    input."""
    x = ctx.value(node.input[0])
    rank = len(x.shape)
    pads = ctx.require_const(node.input[1], "pads").tolist() if ctx.opset >= 11 else ints(node, "pads", [])
    if len(node.input) > 3 and node.input[3]:
        ctx.fail("the axes input of Pad is not supported")
    mode = attr(node, "mode", "constant")
    value = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    fill = float(np.asarray(value).reshape(-1)[0]) if value is not None and value.size else 0.0
    if min(pads) < 0:
        ctx.fail(f"negative pads {pads} are not supported (TFLite's PAD cannot crop)")
    order = TO_NHWC if x.nhwc else tuple(range(rank))
    paddings = [[pads[a], pads[a + rank]] for a in order]
    out = ctx.output(node.output[0], ctx.shape(node.output[0]), nhwc=x.nhwc)
    table = ctx.int32s("paddings", paddings)
    if mode == "constant" and fill == 0.0:
        ctx.op(Op.PAD, [x.index, table], [out], options("PadOptions"))
    elif mode == "constant":
        ctx.op(
            Op.PADV2,
            [x.index, table, ctx.constant("pad_value", np.asarray([fill], np.float32))],
            [out],
            options("PadV2Options"),
        )
    elif mode == "reflect":
        ctx.op(Op.MIRROR_PAD, [x.index, table], [out], options("MirrorPadOptions", mode=0))
    else:
        ctx.fail(f"Pad mode '{mode}' is not supported (constant and reflect are)")


_RESIZE_MODES = {  # ONNX coordinate_transformation_mode -> (align_corners, half_pixel_centers)
    "half_pixel": (False, True),
    "pytorch_half_pixel": (False, True),
    "align_corners": (True, False),
    "asymmetric": (False, False),
}


def convert_resize(ctx: Lowering, node: onnx.NodeProto) -> None:
    """RESIZE_NEAREST_NEIGHBOR or RESIZE_BILINEAR of H and W; half_pixel, pytorch_half_pixel, align_corners,
    asymmetric; no cubic, no antialias."""
    x = ctx.value(node.input[0])
    if len(x.shape) != 4:
        ctx.fail("only 4-D (NCHW) Resize is supported")
    shape = ctx.shape(node.output[0])
    if shape[:2] != x.shape[:2]:
        ctx.fail("Resize may only scale H and W")
    mode = attr(node, "mode", "nearest")
    transform = attr(node, "coordinate_transformation_mode", "half_pixel")
    if transform not in _RESIZE_MODES:
        ctx.fail(f"coordinate_transformation_mode '{transform}' is not supported ({', '.join(_RESIZE_MODES)} are)")
    if attr(node, "antialias", 0):
        ctx.fail("antialias=1 is not supported (TFLite's resize kernels do not filter)")
    align, half = _RESIZE_MODES[transform]
    source = ctx.tensor(node.input[0], nhwc=True)
    out = ctx.output(node.output[0], shape, nhwc=True)
    size = ctx.int32s("size", list(shape[2:]))
    if mode == "nearest":
        nearest = attr(node, "nearest_mode", "round_prefer_floor")
        expected = "floor" if transform == "asymmetric" else "round_prefer_ceil"
        rounds_as_floor = nearest == "round_prefer_floor" and transform == "asymmetric" and _x1_or_x2(x.shape, shape)
        if nearest != expected and not rounds_as_floor:
            ctx.fail(f"nearest_mode '{nearest}' with '{transform}' is not supported; TFLite rounds as '{expected}'")
        opts = options("ResizeNearestNeighborOptions", alignCorners=align, halfPixelCenters=half)
        ctx.op(Op.RESIZE_NEAREST_NEIGHBOR, [source, size], [out], opts)
    elif mode == "linear":
        opts = options("ResizeBilinearOptions", alignCorners=align, halfPixelCenters=half)
        ctx.op(Op.RESIZE_BILINEAR, [source, size], [out], opts)
    else:
        ctx.fail(f"Resize mode '{mode}' is not supported (nearest and linear are)")


def _x1_or_x2(before: tuple[int, ...], after: tuple[int, ...]) -> bool:
    """Upscaling by 1 or 2: source coordinates out/scale then end in .0 or .5, which round_prefer_floor
    rounds as floor (a larger factor gives fractions above .5, which it rounds up)."""
    return all(a in (b, 2 * b) for a, b in zip(after[2:], before[2:], strict=True))


def convert_expand(ctx: Lowering, node: onnx.NodeProto) -> None:
    """BROADCAST_TO to the inferred shape."""
    x = ctx.value(node.input[0])
    shape = ctx.shape(node.output[0])
    nhwc = x.nhwc and len(shape) == 4
    stored = tuple(shape[i] for i in TO_NHWC) if nhwc else shape
    source = (
        ctx.tensor(node.input[0], nhwc=nhwc) if len(x.shape) == len(shape) else ctx.tensor(node.input[0], nhwc=False)
    )
    out = ctx.output(node.output[0], shape, nhwc=nhwc and len(x.shape) == len(shape))
    target = stored if nhwc and len(x.shape) == len(shape) else shape
    ctx.op(Op.BROADCAST_TO, [source, ctx.int32s("shape", target)], [out], options("BroadcastToOptions"))


def _dtype_of(ctx: Lowering, value: Value) -> np.dtype:
    return ctx._dtype_of(value)


CONVERTERS: dict[str, Callable[[Lowering, onnx.NodeProto], None]] = {
    "Reshape": convert_reshape,
    "Flatten": convert_reshape,
    "Squeeze": convert_reshape,
    "Unsqueeze": convert_reshape,
    "Transpose": convert_transpose,
    "Concat": convert_concat,
    "Split": convert_split,
    "Slice": convert_slice,
    "Gather": convert_gather,
    "Pad": convert_pad,
    "Resize": convert_resize,
    "Expand": convert_expand,
}
