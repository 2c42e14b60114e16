"""inspect(model, targets): what a model costs, and where each node runs on each target."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_sdk.costs import Graph, NodeCost, Tensor, node_costs, peak_activation_memory
from edge_sdk.fit import Fit, check_fit
from edge_sdk.model import Model, TensorSpec, load_model
from edge_sdk.profile import Kind, Precision, TargetProfile
from edge_sdk.serialize import to_jsonable
from edge_sdk.support import Placement, Where, count_partitions, place
from edge_sdk.targets import load_target

_BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    sha256: str
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    passes: tuple[str, ...]


@dataclass(frozen=True)
class Totals:
    nodes: int
    macs: int
    params: int
    weights_bytes: int
    bytes_read: int
    bytes_written: int
    peak_activation_bytes: int
    peak_at_node: str
    op_counts: Mapping[str, int]


@dataclass(frozen=True)
class Fallback:
    op_type: str
    reason: str
    nodes: int


@dataclass(frozen=True)
class TargetReport:
    target: str
    name: str
    kind: Kind
    precision: Precision
    unit: str
    fallback_unit: str
    on_unit: int
    on_fallback: int
    unsupported: int
    macs_on_unit_pct: float
    partitions: int
    unit_partitions: int
    transposes: int
    weights_bytes: int
    peak_activation_bytes: int
    fit: Fit
    fallbacks: tuple[Fallback, ...]
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class Inspection:
    model: ModelInfo
    totals: Totals
    targets: tuple[TargetReport, ...]
    nodes: tuple[NodeCost, ...] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def inspect(
    model: Model | str | Path,
    targets: Sequence[TargetProfile | str] = (),
    *,
    precision: Precision | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    targets_dirs: Sequence[str | Path] = (),
) -> Inspection:
    """Per-node MACs, parameters and bytes; peak activation memory; and for each target, where
    each node runs (with the reason), the partitions and whether the model fits. `precision`
    None means each target's default precision."""
    profiles = [t if isinstance(t, TargetProfile) else load_target(t, targets_dirs) for t in targets]
    loaded = model if isinstance(model, Model) else load_model(model, input_shapes=input_shapes)
    graph = Graph(loaded)
    costs = node_costs(graph)
    peak = peak_activation_memory(graph)
    totals = Totals(
        nodes=len(costs),
        macs=sum(c.macs for c in costs),
        params=sum(c.params for c in costs),
        weights_bytes=sum(t.nbytes for t in graph.tensors.values() if t.constant),
        bytes_read=sum(c.bytes_read for c in costs),
        bytes_written=sum(c.bytes_written for c in costs),
        peak_activation_bytes=peak.bytes,
        peak_at_node=peak.at_node,
        op_counts=MappingProxyType(dict(sorted(Counter(c.op_type for c in costs).items()))),
    )
    info = ModelInfo(
        name=loaded.name,
        source=loaded.source,
        sha256=loaded.sha256,
        opset=loaded.opset,
        inputs=loaded.inputs,
        outputs=loaded.outputs,
        passes=loaded.passes,
    )
    reports = tuple(_target_report(graph, costs, p, precision or p.deploy.default_precision) for p in profiles)
    return Inspection(model=info, totals=totals, targets=reports, nodes=tuple(costs))


def _target_report(graph: Graph, costs: list[NodeCost], target: TargetProfile, precision: Precision) -> TargetReport:
    placements = place(graph, target, precision)
    where = Counter(p.where for p in placements)
    total_macs = sum(c.macs for c in costs) or 1
    unit_macs = sum(c.macs for c, p in zip(costs, placements, strict=True) if p.where is Where.UNIT)
    partitions, unit_partitions = count_partitions(placements)
    weights = weights_bytes_at(graph, precision)
    activations = peak_activation_memory(graph, lambda t: activation_bytes_at(t, precision)).bytes
    grouped = Counter((p.op_type, p.reason) for p in placements if p.where is not Where.UNIT)
    return TargetReport(
        target=target.id,
        name=target.name,
        kind=target.kind,
        precision=precision,
        unit=target.compute.unit,
        fallback_unit=target.ops.fallback_unit,
        on_unit=where[Where.UNIT],
        on_fallback=where[Where.FALLBACK],
        unsupported=where[Where.UNSUPPORTED],
        macs_on_unit_pct=round(100.0 * unit_macs / total_macs, 2),
        partitions=partitions,
        unit_partitions=unit_partitions,
        transposes=sum(1 for n in graph.nodes if n.op_type == "Transpose"),
        weights_bytes=weights,
        peak_activation_bytes=activations,
        fit=check_fit(target, weights, activations),
        fallbacks=tuple(Fallback(op, reason, n) for (op, reason), n in grouped.most_common()),
        placements=tuple(placements),
    )


def _is_float(t: Tensor) -> bool:
    return t.dtype.kind == "f"


def activation_bytes_at(t: Tensor, precision: Precision) -> int:
    return t.elements * precision.activation_bytes if _is_float(t) else t.nbytes


def weights_bytes_at(graph: Graph, precision: Precision) -> int:
    """Bytes of the constants once stored at `precision`; integer formats keep biases as int32."""
    biases = {
        node.input[i]
        for node in graph.nodes
        for op, i in _BIAS_INPUT.items()
        if node.op_type == op and len(node.input) > i
    }
    total = 0
    for t in graph.tensors.values():
        if not t.constant:
            continue
        if not _is_float(t):
            total += t.nbytes
        elif t.name in biases and precision.weight_bytes == 1:
            total += t.elements * 4
        else:
            total += t.elements * precision.weight_bytes
    return total
