"""QuantPlan: what to quantize for a target and how, decided before any engine runs.

Built from the target profile's [quantization] rules and its op list: the precision, the weight and
activation schemes, the outputs whose quantization parameters are fixed, and each node kept in
float with the reason (the target's unit runs it only in float, the user's ignore list, or the
accuracy fallback).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from edge_sdk.costs import Graph
from edge_sdk.errors import QuantizeError, UsageError
from edge_sdk.model import Model
from edge_sdk.profile import FixedOutput, Precision, QuantSpec, TargetProfile
from edge_sdk.serialize import to_jsonable

QUANTIZED_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QLinearMul",
)
STATIC_PRECISIONS = (Precision.INT8, Precision.INT16X8)


@dataclass(frozen=True)
class FloatNode:
    node: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class QuantPlan:
    target: str
    precision: Precision
    weights: QuantSpec
    activations: QuantSpec
    fixed_outputs: tuple[FixedOutput, ...]
    float_nodes: tuple[FloatNode, ...]
    quantizable_nodes: int
    qnn: bool = False  # the target runs QDQ ONNX through ONNX Runtime's QNN EP: use QNN's QDQ rules

    def to_dict(self) -> dict:
        return to_jsonable(self)

    def with_float(self, nodes: Sequence[FloatNode]) -> QuantPlan:
        known = {f.node for f in self.float_nodes}
        added = tuple(n for n in nodes if n.node not in known)
        return replace(self, float_nodes=self.float_nodes + added)


def check_float(model: Model) -> None:
    """Quantizing or lowering a model that is already quantized would stack a second quantization on
    the first: refuse it, naming what gives it away."""
    already = sorted({n.op_type for n in model.proto.graph.node if n.op_type in QUANTIZED_OPS})
    if already:
        raise QuantizeError(
            f"{model.source}: the model is already quantized (it has {', '.join(already)}); pass the float model"
        )


def plan(
    model: Model, target: TargetProfile, *, precision: Precision | None = None, ignore: Sequence[str] = ()
) -> QuantPlan:
    """The quantization plan of `model` for `target` at `precision` (default: the target's)."""
    chosen = Precision(precision) if precision else target.deploy.default_precision
    if chosen not in target.deploy.precisions:
        supported = ", ".join(p.value for p in target.deploy.precisions)
        raise UsageError(f"target '{target.id}' does not run {chosen.value}; it supports {supported}")
    if chosen is Precision.FP32:
        others = ", ".join(p.value for p in target.deploy.precisions if p is not Precision.FP32)
        raise UsageError(f"fp32 needs no quantization; pick --precision {others or 'int8'}")
    check_float(model)
    graph = Graph(model)
    names = {n.name or n.output[0] for n in graph.nodes}
    unknown = [n for n in ignore if n not in names]
    if unknown:
        raise UsageError(
            f"--ignore names '{unknown[0]}', which is not a node of the model; "
            "'edge-sdk inspect --per-node' lists the node names"
        )
    float_nodes = []
    for node in graph.nodes:
        name = node.name or node.output[0]
        if name in ignore:
            float_nodes.append(FloatNode(name, node.op_type, "user's ignore list"))
            continue
        rule = target.ops.rules.get(node.op_type)
        # only static integer plans keep float islands: dynamic-int8 and fp16 change weights alone
        if chosen in STATIC_PRECISIONS and rule is not None and rule.precisions and chosen not in rule.precisions:
            allowed = ", ".join(p.value for p in rule.precisions)
            reason = f"{target.compute.unit} runs {node.op_type} only in {allowed}"
            float_nodes.append(FloatNode(name, node.op_type, reason))
    return QuantPlan(
        target=target.id,
        precision=chosen,
        weights=target.quantization.weights,
        activations=target.quantization.activations,
        fixed_outputs=target.quantization.fixed_outputs,
        float_nodes=tuple(float_nodes),
        quantizable_nodes=len(graph.nodes) - len(float_nodes),
        qnn="onnxruntime-qnn" in target.deploy.runtimes,
    )
