"""ONNX -> TFLite flatbuffer, without TensorFlow: walk the loaded graph once, in order, and hand each
node to the converter registered for its op type.

    lowered = lower_to_tflite(load_model("model.onnx"))
    Path("model.tflite").write_bytes(lowered.flatbuffer)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edge_sdk.errors import ExportError
from edge_sdk.lower import ops_conv, ops_math, ops_reduce, ops_shape
from edge_sdk.lower.context import TO_NCHW, TO_NHWC, Lowering, Value
from edge_sdk.lower.flatbuffer import OP_NAMES, FlatbufferBuilder, options, schema
from edge_sdk.lower.flatbuffer import BuiltinOperator as Op
from edge_sdk.lower.fuse import FusionPlan, plan_fusions
from edge_sdk.model import Model

Converter = Callable[[Lowering, onnx.NodeProto], None]


def _registry() -> dict[str, Converter]:
    merged: dict[str, Converter] = {}
    for module in (ops_conv, ops_math, ops_reduce, ops_shape):
        for op_type, fn in module.CONVERTERS.items():
            if op_type in merged:
                raise RuntimeError(f"two converters for {op_type}")
            merged[op_type] = fn
    return merged


CONVERTERS: dict[str, Converter] = _registry()
CONSTANT_FOLDED = ("Shape", "Constant", "ConstantOfShape", "Range", "Size", "any node whose inputs are constants")
_ACTIVATION_OPS = {
    schema.ActivationFunctionType.RELU: Op.RELU,
    schema.ActivationFunctionType.RELU6: Op.RELU6,
    schema.ActivationFunctionType.RELU_N1_TO_1: Op.RELU_N1_TO_1,
}


@dataclass(frozen=True)
class Lowered:
    flatbuffer: bytes
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    nhwc_io: bool
    layout_transposes: int  # TRANSPOSE ops the lowering inserted to change layout (0 for a plain CNN)
    op_counts: dict[str, int]


def supported_ops() -> list[str]:
    return sorted(CONVERTERS)


def lower_to_tflite(model: Model, *, nchw_io: bool = False, fp16: bool = False, int8_friendly: bool = False) -> Lowered:
    """Lower a loaded model. By default 4-D inputs and outputs are NHWC (TFLite's layout); with
    `nchw_io=True` they keep the ONNX model's NCHW layout (a transpose at each end). `fp16=True`
    stores float constants as fp16 (half the size; computed in fp32 or fp16 by the runtime).
    `int8_friendly=True` writes ops XNNPACK can run in int8 where it cannot run the fused one (a
    hard-swish as ADD, MUL, MUL): for models about to be quantized to int8."""
    graph = model.proto.graph
    # the graph's own opset: load_model upgrades opsets below 13 but Model.opset keeps the original
    opset = next((o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx")), model.opset)
    ctx = Lowering(FlatbufferBuilder(fp16_constants=fp16), opset=opset, int8_friendly=int8_friendly)
    _read_graph(ctx, graph)
    plan = plan_fusions(graph, ctx.consts, opset)
    ctx.fusions = dict(plan.fusions)
    inputs = [_add_input(ctx, v, nchw_io) for v in graph.input if v.name not in ctx.consts]
    for node in graph.node:
        ctx.node = node
        _lower_node(ctx, node, plan)
    ctx.node = None
    outputs = [_finish_output(ctx, v.name, nchw_io) for v in graph.output]
    flatbuffer = ctx.fb.finish(inputs, outputs, description=f"edge-sdk lowering of {model.name}")
    return Lowered(
        flatbuffer=flatbuffer,
        input_names=tuple(v.name for v in graph.input if v.name not in ctx.consts),
        output_names=tuple(v.name for v in graph.output),
        nhwc_io=not nchw_io,
        layout_transposes=ctx.layout_transposes,
        op_counts=_op_counts(ctx.fb),
    )


def _read_graph(ctx: Lowering, graph: onnx.GraphProto) -> None:
    for init in graph.initializer:
        ctx.consts[init.name] = numpy_helper.to_array(init)
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        ctx.shapes[value.name] = tuple(int(d.dim_value) for d in tensor_type.shape.dim)
        ctx.dtypes[value.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))


def _add_input(ctx: Lowering, value: onnx.ValueInfoProto, nchw_io: bool) -> int:
    shape, dtype = ctx.shapes[value.name], ctx.dtypes[value.name]
    dtype = np.dtype(np.int32) if dtype == np.int64 else dtype
    nhwc = len(shape) == 4 and not nchw_io
    return ctx.output(value.name, shape, nhwc=nhwc, dtype=dtype)


def _lower_node(ctx: Lowering, node: onnx.NodeProto, plan: FusionPlan) -> None:
    if all(o in plan.skipped for o in node.output if o):
        return
    if _fold(ctx, node):
        return
    if node.output[0] in plan.hard_swish:
        ops_math.hard_swish(ctx, plan.hard_swish[node.output[0]], node.output[0])
        return
    converter = CONVERTERS.get(node.op_type)
    if converter is None or node.domain not in ("", "ai.onnx"):
        ctx.fail(
            f"op {node.domain + '.' if node.domain else ''}{node.op_type} has no TFLite converter; "
            "supported ops are listed by `edge-sdk export --list-ops` and in README.md"
        )
    assert converter is not None
    converter(ctx, node)
    fusion = ctx.fusions.get(node.output[0])
    if fusion is not None and fusion.output not in ctx.values:  # the converter did not fuse it
        x = ctx.values[node.output[0]]
        ctx.op(_ACTIVATION_OPS[fusion.activation], [x.index], [ctx.output(fusion.output, x.shape, nhwc=x.nhwc)])


def _fold(ctx: Lowering, node: onnx.NodeProto) -> bool:
    """Evaluate nodes of constants (and Shape of a static tensor) once, here, instead of at run time."""
    if node.op_type == "Shape" and node.input[0] in ctx.shapes:
        dims = np.asarray(ctx.shape(node.input[0]), dtype=np.int64)
        start, end = _attr_int(node, "start", 0), _attr_int(node, "end", len(dims))
        ctx.consts[node.output[0]] = dims[start:end]
        return True
    if not all(name in ctx.consts for name in node.input if name):
        return False
    from onnx.reference import ReferenceEvaluator

    single = onnx.helper.make_graph(
        [node],
        "fold",
        [],
        [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
        [numpy_helper.from_array(ctx.consts[n], n) for n in dict.fromkeys(i for i in node.input if i)],
    )
    proto = onnx.helper.make_model(single, opset_imports=[onnx.helper.make_opsetid("", ctx.opset)])
    try:
        results = ReferenceEvaluator(proto).run(None, {})
    except Exception as exc:  # the reference evaluator raises many types for unsupported nodes
        ctx.fail(f"folding its constant inputs failed ({exc})")
    for name, value in zip(node.output, results, strict=False):
        ctx.consts[name] = np.asarray(value)
    return True


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _finish_output(ctx: Lowering, name: str, nchw_io: bool) -> int:
    if name not in ctx.values:
        raise ExportError(f"model output '{name}' is a constant; a TFLite model needs computed outputs")
    value: Value = ctx.values[name]
    tensor = ctx.fb.tensors[value.index]
    if len(value.shape) == 4 and value.nhwc == nchw_io:  # a 4-D output in the other layout than asked
        if tensor.name == name:  # not when it is another tensor (a graph input, say) passed through
            ctx.fb.rename(value.index, f"{name}_{'nhwc' if value.nhwc else 'nchw'}")
        stored = value.shape if value.nhwc else tuple(value.shape[i] for i in TO_NHWC)
        out = ctx.fb.add_tensor(name, stored, ctx._dtype_of(value))
        ctx.transpose(value.index, TO_NCHW if value.nhwc else TO_NHWC, out)
        return out
    if tensor.name != name:  # an alias (Identity) of another tensor: give the output its own name
        out = ctx.fb.add_tensor(name, value.stored_shape, ctx._dtype_of(value))
        shape = ctx.int32s("shape", value.stored_shape)
        ctx.op(Op.RESHAPE, [value.index, shape], [out], options("ReshapeOptions", newShape=list(value.stored_shape)))
        return out
    return value.index


def _op_counts(fb: FlatbufferBuilder) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in fb.operators:
        code = OP_NAMES[fb.opcodes[op.opcodeIndex].builtinCode]
        counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items()))
