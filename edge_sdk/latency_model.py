"""The per-op latency model and its fit to measurements.

Every node costs max(compute, memory) + overhead: compute is its MACs times the seconds per MAC of its
op class (1 / (peak ops x efficiency)), memory is its activation bytes (inputs and outputs at the
deployed precision) and its weight bytes, each times its own seconds per byte (1 / (bandwidth x
efficiency)): activations are reused from layer to layer and mostly stay in cache, while at batch 1 every
weight is read once per inference, from DRAM once the model outgrows the cache (a separate weight cost
cut the held-out error on this host from 8.6% to 7.2%). A model adds a cost per partition boundary and
the bytes crossing it. Activations the runtimes fuse into their producer (Relu, ReLU6, hard-swish) cost
nothing.

The fit takes (features, measured latency) pairs of one group (target, runtime, threads, precision)
and solves for the seconds per MAC of each class, the seconds per byte and the per-node and
per-transfer overheads by non-negative least squares on relative error (numpy only). Which nodes are
compute- or memory-bound depends on the answer; within a class that is a threshold on arithmetic
intensity, which the fit searches. Efficiency = 1 / (seconds per MAC x peak MACs per second).
The error band comes from leave-one-out residuals: each model predicted by a fit without it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

import numpy as np
import onnx
from onnx import numpy_helper

from edge_sdk.costs import Graph, Tensor, node_costs
from edge_sdk.errors import UsageError
from edge_sdk.lower.fuse import plan_fusions
from edge_sdk.measurement import BenchmarkResult
from edge_sdk.model import Model
from edge_sdk.profile import Kind, Precision, TargetProfile
from edge_sdk.support import Where, place


class OpClass(str, Enum):
    # One class for 1x1 and spatial kernels: a separate 1x1 class fitted no better on this host's held-out
    # models and much worse on held-out families (benchmarks/predict_bench.py), i.e. it overfitted.
    CONV = "conv"
    DEPTHWISE = "depthwise"
    FC = "fc"  # Gemm, MatMul
    ELEMENTWISE = "elementwise"
    POOL = "pool"  # pooling and reductions
    MOVE = "move"  # data movement: reshape, transpose, concat, pad, slice, resize


_POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"} | {
    "ReduceMin", "ReduceSum", "ArgMax", "Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization",
}  # fmt: skip
_MOVE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Pad"} | {
    "Resize", "Gather", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Identity", "Cast",
}  # fmt: skip
# Parameters of the model, in the order of the fit's columns.
PARAMS = ("conv", "depthwise", "fc", "fallback", "byte", "weight_byte", "node", "transfer")
_MAC_PARAM = {OpClass.CONV: 0, OpClass.DEPTHWISE: 1, OpClass.FC: 2}
MAC_PARAMS = ("conv", "depthwise", "fc", "fallback")  # the seconds-per-MAC parameters
# A parameter no training model exercises is copied from another: depthwise and FC layers and fallback
# kernels run on the same cores as convolutions; a partition boundary costs at least one node's dispatch.
_TIED_TO = {"depthwise": "conv", "fc": "conv", "fallback": "conv", "weight_byte": "byte", "transfer": "node"}
MIN_LOG_SIGMA = 0.03  # repeat runs of one model on a loaded host differ by about 3%: no band is narrower
MIN_BAND_MODELS = 3  # fewer models leave no residuals to learn a band from


def runtime_family(name: str) -> str:
    """One name per runtime: LiteRT (and tflite-runtime, XNNPACK) or ONNX Runtime; others unchanged."""
    lowered = name.lower()
    if lowered.startswith(("litert", "tflite", "xnnpack")):
        return "litert"
    if lowered.startswith("onnxruntime"):
        return "onnxruntime"
    return lowered


@dataclass(frozen=True)
class ModelFeatures:
    """One model as the latency model sees it on one target: per node (fused activations removed)
    its op class, MACs, bytes moved and whether the target's unit runs it; and the partition boundaries."""

    model_name: str
    model_sha256: str
    target: str
    precision: Precision
    runtime: str
    op_class: tuple[OpClass, ...]
    macs: tuple[int, ...]
    bytes_moved: tuple[int, ...]  # inputs and outputs, weights included
    weight_bytes: tuple[int, ...]  # the constant inputs among them
    on_unit: tuple[bool, ...]
    transfers: int
    transfer_bytes: int


@dataclass(frozen=True)
class GroupKey:
    target: str
    runtime: str
    threads: int
    precision: Precision

    def __str__(self) -> str:
        return f"{self.target}/{self.runtime}/{self.threads}t/{self.precision.value}"


@dataclass(frozen=True)
class Params:
    """Seconds per MAC (conv, depthwise, fc, fallback), per activation and weight byte, per node and per
    partition transfer, in the order of PARAMS."""

    values: tuple[float, ...]

    def __getitem__(self, name: str) -> float:
        return self.values[PARAMS.index(name)]

    def scaled(self, compute: float, memory: float, overhead: float) -> Params:
        factors = (compute,) * 4 + (memory, memory, overhead, overhead)
        return Params(tuple(v * f for v, f in zip(self.values, factors, strict=True)))


@dataclass(frozen=True)
class GroupFit:
    key: GroupKey
    params: Params
    models: int
    log_sigma: float | None  # spread of the leave-one-out log errors; None below MIN_BAND_MODELS
    loo_errors: tuple[float, ...]  # log(measured / predicted without that model), per model

    def efficiency(self, op_class: OpClass, peak_gops: float) -> float:
        """The fitted fraction of `peak_gops` (2 ops per MAC) an op class reaches; 0 if never fitted."""
        seconds = self.params[op_class.value]
        return 0.0 if seconds <= 0 else 1.0 / (seconds * peak_gops * 1e9 / 2.0)


@dataclass(frozen=True)
class LatencyFit:
    groups: Mapping[GroupKey, GroupFit]


Measurement = tuple[ModelFeatures, BenchmarkResult]


def op_class(node: onnx.NodeProto) -> OpClass:
    if node.op_type in ("Conv", "ConvTranspose"):
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        return OpClass.DEPTHWISE if group > 1 else OpClass.CONV
    if node.op_type in ("Gemm", "MatMul"):
        return OpClass.FC
    if node.op_type in _POOL_OPS:
        return OpClass.POOL
    if node.op_type in _MOVE_OPS:
        return OpClass.MOVE
    return OpClass.ELEMENTWISE


def features(model: Model, target: TargetProfile, *, precision: Precision, runtime: str) -> ModelFeatures:
    """The model's features on `target`. ONNX Runtime on a CPU runs every node itself; otherwise each node
    goes where the target's op list puts it (support.place)."""
    graph = Graph(model)
    family = runtime_family(runtime)
    fused = _fused_outputs(model, graph)
    costs = node_costs(graph)
    if family == "onnxruntime" and target.kind is Kind.CPU:
        on_unit = [True] * len(costs)
    else:
        on_unit = [p.where is Where.UNIT for p in place(graph, target, precision)]
    kept = [i for i, node in enumerate(graph.nodes) if not set(node.output) <= fused]
    sizes = {name: _bytes_at(t, precision) for name, t in graph.tensors.items()}
    moved = [sum(sizes.get(n, 0) for n in (*costs[i].inputs, *costs[i].outputs) if n) for i in kept]
    weights = [sum(sizes.get(n, 0) for n in costs[i].inputs if n in graph.constants) for i in kept]
    transfers, transfer_bytes = _transfers(graph, [graph.nodes[i] for i in kept], [on_unit[i] for i in kept], sizes)
    return ModelFeatures(
        model_name=model.name,
        model_sha256=model.sha256,
        target=target.id,
        precision=precision,
        runtime=family,
        op_class=tuple(op_class(graph.nodes[i]) for i in kept),
        macs=tuple(costs[i].macs for i in kept),
        bytes_moved=tuple(moved),
        weight_bytes=tuple(weights),
        on_unit=tuple(on_unit[i] for i in kept),
        transfers=transfers,
        transfer_bytes=transfer_bytes,
    )


def _fused_outputs(model: Model, graph: Graph) -> set[str]:
    """Outputs of nodes that TFLite and ONNX Runtime fold into their producer (edge_sdk.lower.fuse)."""
    small = {name: numpy_helper.to_array(t) for name, t in graph.constants.items() if math.prod(t.dims) <= 4}
    return set(plan_fusions(model.proto.graph, small, model.opset).skipped)


def _bytes_at(t: Tensor, precision: Precision) -> int:
    if t.dtype.kind != "f":
        return t.nbytes
    return t.elements * (precision.weight_bytes if t.constant else precision.activation_bytes)


def _transfers(
    graph: Graph, nodes: list[onnx.NodeProto], on_unit: list[bool], sizes: dict[str, int]
) -> tuple[int, int]:
    """Boundaries between the unit and the fallback, and the bytes of the tensors that cross them."""
    side = {name: unit for node, unit in zip(nodes, on_unit, strict=True) for name in node.output}
    for name in graph.graph_inputs:
        side[name] = True  # inputs arrive where the first partition runs; counted when they cross
    crossings = {n for node, unit in zip(nodes, on_unit, strict=True) for n in node.input if side.get(n, unit) != unit}
    boundaries = sum(1 for a, b in itertools.pairwise(on_unit) if a != b)
    return boundaries, sum(sizes.get(n, 0) for n in crossings)


# --- the model --------------------------------------------------------------------------------------

_BYTE, _WEIGHT, _NODE, _TRANSFER = (PARAMS.index(p) for p in ("byte", "weight_byte", "node", "transfer"))


@dataclass(frozen=True)
class _Nodes:
    """The nodes of several models stacked into flat arrays, so a fit evaluates the model in a few numpy calls."""

    macs: np.ndarray
    moved: np.ndarray  # activation bytes
    weights: np.ndarray  # weight bytes
    column: np.ndarray  # the node's seconds-per-MAC parameter (index into PARAMS), -1 for none
    model: np.ndarray  # which model the node belongs to
    count: np.ndarray  # per model: nodes, transfers, bytes transferred
    transfers: np.ndarray
    transfer_bytes: np.ndarray

    @property
    def intensity(self) -> np.ndarray:
        return self.macs / np.maximum(self.moved + self.weights, 1.0)


def _stack(feats: Sequence[ModelFeatures]) -> _Nodes:
    fallback = PARAMS.index("fallback")
    columns = [
        fallback if not unit else _MAC_PARAM.get(c, -1)
        for f in feats
        for c, unit in zip(f.op_class, f.on_unit, strict=True)
    ]
    return _Nodes(
        macs=np.array([m for f in feats for m in f.macs], float),
        moved=np.array([b - w for f in feats for b, w in zip(f.bytes_moved, f.weight_bytes, strict=True)], float),
        weights=np.array([w for f in feats for w in f.weight_bytes], float),
        column=np.array(columns, int),
        model=np.array([i for i, f in enumerate(feats) for _ in f.macs], int),
        count=np.array([len(f.macs) for f in feats], float),
        transfers=np.array([f.transfers for f in feats], float),
        transfer_bytes=np.array([f.transfer_bytes for f in feats], float),
    )


def _node_times(nodes: _Nodes, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    per_mac = np.where(nodes.column >= 0, values[np.maximum(nodes.column, 0)], 0.0)
    return nodes.macs * per_mac, nodes.moved * values[_BYTE] + nodes.weights * values[_WEIGHT]


def _seconds(nodes: _Nodes, values: np.ndarray) -> np.ndarray:
    compute, memory = _node_times(nodes, values)
    per_model = np.bincount(nodes.model, np.maximum(compute, memory), minlength=len(nodes.count))
    return (
        per_model
        + values[_NODE] * nodes.count
        + values[_TRANSFER] * nodes.transfers
        + values[_BYTE] * nodes.transfer_bytes
    )


def node_seconds(f: ModelFeatures, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Each node's compute and memory time in seconds (its overhead not included)."""
    return _node_times(_stack([f]), np.asarray(params.values))


def model_seconds(f: ModelFeatures, params: Params) -> float:
    return float(_seconds(_stack([f]), np.asarray(params.values))[0])


def fit_params(feats: Sequence[ModelFeatures], latency_s: Sequence[float], *, rounds: int = 2) -> Params:
    """Non-negative least squares on relative error. Which nodes of an op class are compute-bound is a
    threshold on their arithmetic intensity (MACs per byte: the roofline's ridge point), so the fit
    searches one threshold per class (coordinate descent over the quantiles of the class's intensities),
    solving the linear problem for each, then polishes by alternating assignment and solution."""
    nodes, y = _stack(feats), np.asarray(latency_s, float)
    intensity = nodes.intensity
    thresholds = np.zeros(len(MAC_PARAMS))
    best = _evaluate(nodes, y, intensity >= thresholds[np.maximum(nodes.column, 0)])
    for _ in range(rounds):
        start = best[0]
        for column in range(len(MAC_PARAMS)):
            members = intensity[nodes.column == column]
            for cut in np.unique(np.quantile(members, np.linspace(0, 1, 9))) if members.size else ():
                trial_thresholds = thresholds.copy()
                trial_thresholds[column] = cut
                trial = _evaluate(nodes, y, intensity >= trial_thresholds[np.maximum(nodes.column, 0)])
                if trial[0] < best[0] * (1.0 - 1e-9):
                    best, thresholds = trial, trial_thresholds
        if best[0] >= start * (1.0 - 1e-9):
            break
    loss, values = best
    for _ in range(10):  # polish: solve for the assignment the parameters imply, while the loss falls
        compute, memory = _node_times(nodes, values)
        trial = _evaluate(nodes, y, compute >= memory)
        if trial[0] >= loss * (1.0 - 1e-9):
            break
        loss, values = trial
    return Params(tuple(float(v) for v in values))


def _evaluate(nodes: _Nodes, y: np.ndarray, compute_bound: np.ndarray) -> tuple[float, np.ndarray]:
    """Solve for the parameters with this compute/memory assignment; their true (re-assigned) loss."""
    bound = compute_bound & (nodes.column >= 0) & (nodes.macs > 0)
    design = np.zeros((len(y), len(PARAMS)))
    for column in range(len(MAC_PARAMS)):
        design[:, column] = np.bincount(nodes.model, nodes.macs * (bound & (nodes.column == column)), len(y))
    design[:, _BYTE] = np.bincount(nodes.model, nodes.moved * ~bound, len(y)) + nodes.transfer_bytes
    design[:, _WEIGHT] = np.bincount(nodes.model, nodes.weights * ~bound, len(y))
    design[:, _NODE], design[:, _TRANSFER] = nodes.count, nodes.transfers
    values = nnls(design / y[:, None], np.ones(len(y)))
    for name, source in _TIED_TO.items():
        column = PARAMS.index(name)
        if not design[:, column].any():
            values[column] = _ceiling(nodes, column, values) or values[PARAMS.index(source)]
    return float(np.sum((_seconds(nodes, values) / y - 1.0) ** 2)), values


def _ceiling(nodes: _Nodes, column: int, values: np.ndarray) -> float | None:
    """For a class whose nodes are all memory-bound here, the largest seconds per MAC that keeps them so
    (the data allow anything below it); None when no node has the class or memory is free."""
    members = (nodes.column == column) & (nodes.macs > 0)
    memory = nodes.moved[members] * values[_BYTE] + nodes.weights[members] * values[_WEIGHT]
    if not members.any() or not (memory > 0).all():
        return None
    return float(np.min(memory / nodes.macs[members]))


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ||a x - b|| subject to x >= 0: Lawson and Hanson's active-set method on the normal equations
    (the problems here have at most a few dozen rows and 8 columns), columns scaled to unit norm first."""
    norms = np.linalg.norm(a, axis=0)
    scale = np.where(norms > 0, norms, 1.0)
    a = a / scale
    gram, rhs = a.T @ a, a.T @ b
    n = a.shape[1]
    active = np.zeros(n, bool)
    x = np.zeros(n)
    tol = 1e-10 * max(a.shape)
    for _ in range(3 * n):
        gradient = rhs - gram @ x
        free = ~active & (norms > 0)
        if not free.any() or gradient[free].max() <= tol:
            break
        active[np.argmax(np.where(free, gradient, -np.inf))] = True
        while True:
            z = np.zeros(n)
            z[active] = _solve(gram[np.ix_(active, active)], rhs[active])
            if (z[active] > tol).all():
                break
            stepping = active & (z <= tol)
            alpha = np.min(x[stepping] / np.maximum(x[stepping] - z[stepping], 1e-300))
            x = x + alpha * (z - x)
            active &= x > tol
            x[~active] = 0.0
        x = z
    return x / scale


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:  # collinear columns: any least-squares solution will do
        return np.linalg.lstsq(gram, rhs, rcond=None)[0]


# --- the fit ---------------------------------------------------------------------------------------


def group_key(f: ModelFeatures, result: BenchmarkResult) -> GroupKey:
    if result.conditions is None:
        raise UsageError(f"the run of {result.model_name} records no threads or runtime; it cannot be fitted")
    return GroupKey(f.target, f.runtime, result.conditions.threads, f.precision)


def fit(measurements: Sequence[Measurement]) -> LatencyFit:
    """One fit per (target, runtime, threads, precision) group of the measurements. Predictions (no
    measured samples) are left out. A model measured several times in a group counts once, at the
    median of its latencies."""
    grouped: dict[GroupKey, dict[str, tuple[ModelFeatures, list[float]]]] = {}
    for f, result in measurements:
        if result.stats is None:
            continue
        models = grouped.setdefault(group_key(f, result), {})
        models.setdefault(f.model_sha256, (f, []))[1].append(result.latency_ms / 1e3)
    groups = {key: fit_group(key, [(f, float(np.median(t))) for f, t in m.values()]) for key, m in grouped.items()}
    return LatencyFit(MappingProxyType(groups))


def fit_group(key: GroupKey, points: Sequence[tuple[ModelFeatures, float]]) -> GroupFit:
    feats, latency = [p[0] for p in points], [p[1] for p in points]
    params = fit_params(feats, latency)
    errors: list[float] = []
    if len(points) >= MIN_BAND_MODELS:
        for i in range(len(points)):
            rest = fit_params(feats[:i] + feats[i + 1 :], latency[:i] + latency[i + 1 :])
            errors.append(math.log(latency[i] / max(model_seconds(feats[i], rest), 1e-12)))
    sigma = max(MIN_LOG_SIGMA, math.sqrt(float(np.mean(np.square(errors))))) if errors else None
    return GroupFit(key, params, len(points), sigma, tuple(errors))
