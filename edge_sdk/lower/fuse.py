"""Which ONNX nodes fold into their producer when lowered: the fusions TFLite kernels do themselves.

An activation (Relu, or a Clip equal to RELU6 / RELU / RELU_N1_TO_1) whose input comes from a Conv,
Gemm, MatMul, pooling or Add/Sub/Mul/Div with no other consumer becomes that op's fused
activation. `x * HardSigmoid(x)` with alpha 1/6, beta 1/2 (how several exporters write hard-swish)
becomes one HARD_SWISH, as does PaddlePaddle's x * Clip(x + 3, 0, 6) / 6.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

from edge_sdk.lower.context import Fusion
from edge_sdk.lower.flatbuffer import schema
from edge_sdk.lower.onnxattr import attr

Act = schema.ActivationFunctionType

# not Concat: TFLite's CONCATENATION rejects a fused activation (XNNPACK silently drops it)
FUSES_ACTIVATION = {"Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "MaxPool", "AveragePool"}


@dataclass(frozen=True)
class FusionPlan:
    fusions: dict[str, Fusion]  # producer output -> activation folded into it
    skipped: frozenset[str]  # output names of nodes that produce nothing of their own
    hard_swish: dict[str, str]  # Mul output -> its x input


def plan_fusions(graph: onnx.GraphProto, consts: dict[str, np.ndarray], opset: int) -> FusionPlan:
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output}
    producers = {o: n for n in graph.node for o in n.output}
    fusions: dict[str, Fusion] = {}
    skipped: set[str] = set()
    hard_swish: dict[str, str] = {}
    for node in graph.node:
        activation = _activation(node, consts, opset)
        source = node.input[0] if node.input else ""
        producer = producers.get(source)
        fusable = (
            producer is not None
            and producer.op_type in FUSES_ACTIVATION
            and len(producer.output) == 1
            and source not in fusions
            and source not in hard_swish  # HARD_SWISH has no fused activation
        )
        if activation is not None and fusable and _sole_use(source, consumers, outputs):
            fusions[source] = Fusion(activation, node.output[0])
            skipped.add(node.output[0])
        found = _hard_swish_input(node, producers, consumers, outputs, consts)
        if found is not None:
            hard_swish[node.output[0]] = found[0]
            skipped.update(found[1])
    return FusionPlan(fusions, frozenset(skipped), hard_swish)


def _sole_use(name: str, consumers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> bool:
    return len(consumers[name]) == 1 and name not in outputs


def _activation(node: onnx.NodeProto, consts: dict[str, np.ndarray], opset: int) -> int | None:
    if node.op_type == "Relu":
        return Act.RELU
    if node.op_type != "Clip":
        return None
    if opset < 11 or len(node.input) == 1:
        low, high = attr(node, "min", -math.inf), attr(node, "max", math.inf)
    else:
        bounds = [consts.get(n) if n else None for n in [*node.input[1:3], "", ""][:2]]
        if any(n and b is None for n, b in zip(node.input[1:3], bounds, strict=False)):
            return None
        low = float(bounds[0]) if bounds[0] is not None else -math.inf
        high = float(bounds[1]) if bounds[1] is not None else math.inf
    return {(0.0, 6.0): Act.RELU6, (0.0, math.inf): Act.RELU, (-1.0, 1.0): Act.RELU_N1_TO_1}.get(
        (float(low), float(high))
    )


def _hard_swish_input(node, producers, consumers, outputs, consts) -> tuple[str, list[str]] | None:
    """x and the inner tensors, when `node` ends a hard-swish: x * HardSigmoid(x) (alpha 1/6, beta 1/2),
    or x * Clip(x + 3, 0, 6) / 6 (PaddlePaddle's export), with no other use of the inner tensors."""
    if node.op_type == "Mul" and len(node.input) == 2:
        for x, gate in (tuple(node.input), tuple(reversed(node.input))):
            producer = producers.get(gate)
            if producer is None or producer.op_type != "HardSigmoid" or producer.input[0] != x:
                continue
            alpha, beta = attr(producer, "alpha", 0.2), attr(producer, "beta", 0.5)
            if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6 and _sole_use(gate, consumers, outputs):
                return x, [gate]
    scale = {"Div": 6.0, "Mul": 1 / 6}.get(node.op_type)
    if scale is None or len(node.input) != 2 or not _is_scalar(consts.get(node.input[1]), scale):
        return None
    product = producers.get(node.input[0])
    if product is None or product.op_type != "Mul" or not _sole_use(node.input[0], consumers, outputs):
        return None
    for x, gate in (tuple(product.input), tuple(reversed(product.input))):
        clip = producers.get(gate)
        if clip is None or clip.op_type != "Clip" or _activation(clip, consts, 13) != Act.RELU6:
            continue
        add = producers.get(clip.input[0])
        if add is None or add.op_type != "Add" or x not in add.input:
            continue
        other = add.input[1] if add.input[0] == x else add.input[0]
        inner = [node.input[0], gate, clip.input[0]]
        if _is_scalar(consts.get(other), 3.0) and all(_sole_use(t, consumers, outputs) for t in inner):
            return x, inner
    return None


def _is_scalar(value: np.ndarray | None, expected: float) -> bool:
    return value is not None and value.size == 1 and abs(float(value.reshape(-1)[0]) - expected) < 1e-6
