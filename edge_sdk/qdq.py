"""Passes over QDQ ONNX graphs that engines produce.

An activation (Relu, Clip) between a compute node and its QuantizeLinear keeps ONNX Runtime from
fusing the node into an integer kernel (QLinearConv): NNCF leaves every ReLU6 there, and that
int8 model runs slower than fp32. When the QuantizeLinear's representable range already lies
inside the activation's range, the activation is redundant (saturation does the clipping) and is
removed, as ONNX Runtime's own quantizer does.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_QRANGE = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535),
    np.dtype(np.int16): (-32768, 32767),
}


def graph_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """{name: value} of the graph's initializers and Constant nodes."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _clip_bounds(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> tuple[float, float] | None:
    if node.op_type == "Relu":
        return 0.0, float("inf")
    if node.op_type != "Clip":
        return None
    low = constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else np.array(-np.inf)
    high = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.array(np.inf)
    if low is None or high is None:
        return None
    return float(low), float(high)


def _representable(q: onnx.NodeProto, constants: dict[str, np.ndarray]) -> tuple[float, float] | None:
    scale = constants.get(q.input[1])
    zero = constants.get(q.input[2]) if len(q.input) > 2 else np.array(0, np.uint8)
    if scale is None or zero is None or zero.dtype not in _QRANGE:
        return None
    qmin, qmax = _QRANGE[zero.dtype]
    s, z = scale.astype(np.float64), zero.astype(np.float64)  # per-tensor, or per-channel: the widest
    return float(((qmin - z) * s).min()), float(((qmax - z) * s).max())


def remove_redundant_activations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` without the Relu/Clip nodes whose only consumer is a QuantizeLinear that
    cannot represent values outside the activation's range. Returns (model, nodes removed)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constants = graph_constants(graph)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output}
    removed = []
    for node in graph.node:
        bounds = _clip_bounds(node, constants)
        users = consumers.get(node.output[0], [])
        if bounds is None or node.output[0] in outputs or len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        rep = _representable(users[0], constants)
        tolerance = 0.5 * float(constants[users[0].input[1]].max()) if rep else 0.0
        if rep and rep[0] >= bounds[0] - tolerance and rep[1] <= bounds[1] + tolerance:
            users[0].input[0] = node.input[0]
            removed.append(node)
    for node in removed:
        graph.node.remove(node)
    return out, len(removed)


def unfused_compute_nodes(model: onnx.ModelProto) -> list[str]:
    """Conv/Gemm/MatMul nodes with quantized inputs whose output does not go straight into a
    QuantizeLinear: ONNX Runtime cannot turn them into integer kernels and runs them in float."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    unfused = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        fed = producers.get(node.input[0])
        if fed is None or fed.op_type != "DequantizeLinear":
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "QuantizeLinear" for u in users):
            unfused.append(node.name or node.output[0])
    return unfused
