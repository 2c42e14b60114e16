"""Accuracy fallback: keep the fewest layers in float until the accuracy budget holds.

Layers are ranked by the quantization noise each adds (the noise power of its output minus that of
its input, from the per-layer comparison of the quantized and float models). The worst are kept
in float through the engine's own ignore mechanism, doubling the count until the budget holds and
then bisecting down to the fewest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_sdk.costs import Graph
from edge_sdk.errors import QuantizeError, UsageError
from edge_sdk.model import Model
from edge_sdk.plan import FloatNode
from edge_sdk.verify import Fidelity

_FLOOR_DB = 80.0  # a float input's "SQNR": noise-free for ranking purposes


@dataclass(frozen=True)
class Budget:
    max_drop: float | None  # metric points: accuracy with labels, else top-1 agreement with float
    min_sqnr_db: float | None

    def __post_init__(self) -> None:
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise UsageError(f"--max-drop {self.max_drop:g}: give the accuracy points you can lose, 0 or more")
        if self.min_sqnr_db is not None and not math.isfinite(self.min_sqnr_db):
            raise UsageError(f"--min-sqnr {self.min_sqnr_db:g}: give a finite SQNR in dB, e.g. 30")

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"drop <= {self.max_drop:g} points")
        if self.min_sqnr_db is not None:
            parts.append(f"SQNR >= {self.min_sqnr_db:g} dB")
        return " and ".join(parts)

    def drop(self, fidelity: Fidelity) -> float | None:
        out = fidelity.outputs[0]
        if out.accuracy_float is not None and out.accuracy_quant is not None:
            return 100.0 * (out.accuracy_float - out.accuracy_quant)
        if out.top1_agreement is not None:
            return 100.0 * (1.0 - out.top1_agreement)
        return None

    def holds(self, fidelity: Fidelity) -> bool:
        drop = self.drop(fidelity)
        if self.max_drop is not None and (drop is None or drop > self.max_drop):
            return False
        return self.min_sqnr_db is None or fidelity.worst_sqnr_db >= self.min_sqnr_db


@dataclass(frozen=True)
class FallbackStep:
    float_layers: int
    sqnr_db: float
    drop: float | None
    holds: bool


@dataclass(frozen=True)
class FallbackReport:
    budget: str
    met: bool
    layers: int  # layers kept in float (a compute node with its activation counts once)
    float_nodes: tuple[FloatNode, ...]
    steps: tuple[FallbackStep, ...]
    extra_weight_bytes: int  # what keeping those layers in float adds to the int8 weights


_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh")


def rank_layers(model: Model, fidelity: Fidelity, already_float: set[str]) -> list[tuple[FloatNode, ...]]:
    """Layers still quantized, worst first, by the noise power each adds (needs per-layer errors).
    A layer is a compute node with the activation that follows it: engines fuse the two, so both
    stay in float together."""
    graph = Graph(model)
    producer = {out: node for node in graph.nodes for out in node.output}
    sqnr = {layer.tensor: layer.sqnr_db for layer in fidelity.layers}
    scored = []
    for layer in fidelity.layers:
        nodes = _layer_nodes(producer, layer.tensor)
        names = [n.name or n.output[0] for n in nodes]
        if not nodes or any(name in already_float for name in names):
            continue
        inputs = [sqnr.get(name, _FLOOR_DB) for name in nodes[0].input if name in sqnr or name in graph.graph_inputs]
        noise_in = max((10 ** (-s / 10) for s in inputs), default=10 ** (-_FLOOR_DB / 10))
        added = 10 ** (-min(layer.sqnr_db, _FLOOR_DB) / 10) - noise_in
        reason = f"accuracy fallback: adds the most noise ({layer.sqnr_db:.1f} dB at its output)"
        scored.append(
            (added, names[0], tuple(FloatNode(name, n.op_type, reason) for name, n in zip(names, nodes, strict=True)))
        )
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [group for _, _, group in scored]


def _layer_nodes(producer: dict, tensor: str) -> list:
    node = producer.get(tensor)
    if node is None:
        return []
    if node.op_type in _ACTIVATIONS and node.input and node.input[0] in producer:
        return [producer[node.input[0]], node]
    return [node]


def search(
    ranked: list[tuple[FloatNode, ...]], budget: Budget, attempt: Callable[[list[FloatNode]], Fidelity]
) -> tuple[int, list[FallbackStep], Fidelity | None]:
    """The fewest leading layers of `ranked` to keep in float so that `budget` holds: doubling,
    then bisection. Returns (count, steps tried, fidelity at count) or (len, steps, None) if never."""
    steps: list[FallbackStep] = []
    results: dict[int, Fidelity] = {}

    def trial(k: int) -> bool:
        fidelity = attempt([node for group in ranked[:k] for node in group])
        results[k] = fidelity
        ok = budget.holds(fidelity)
        steps.append(FallbackStep(k, fidelity.worst_sqnr_db, budget.drop(fidelity), ok))
        return ok

    limit = len(ranked) - 1  # keeping every layer in float is not quantizing: leave one quantized
    low, high = 0, None
    k = 1
    while k <= limit:
        if trial(k):
            high = k
            break
        low = k
        k = min(2 * k, limit) if k < limit else limit + 1
    if high is None:
        return limit, steps, None
    while high - low > 1:
        middle = (low + high) // 2
        if trial(middle):
            high = middle
        else:
            low = middle
    return high, steps, results[high]


def extra_weight_bytes(model: Model, nodes: Sequence[FloatNode]) -> int:
    """What keeping `nodes` in float adds to int8 weights: 3 more bytes per weight element."""
    graph = Graph(model)
    names = {n.node for n in nodes}
    weights = {i for node in graph.nodes if (node.name or node.output[0]) in names for i in node.input[1:]}
    return sum(graph.tensors[w].elements * 3 for w in weights if w in graph.tensors and graph.tensors[w].is_parameter)


def keep_fewest_in_float(
    model: Model, ranked: list[tuple[FloatNode, ...]], budget: Budget, attempt: Callable[[list[FloatNode]], Fidelity]
) -> tuple[list[FloatNode], Fidelity, FallbackReport]:
    """`search`, then the nodes kept in float, their fidelity and the report; a budget no fallback
    meets is an error saying how close it came."""
    count, steps, found = search(ranked, budget, attempt)
    if found is None:
        reached = f"{steps[-1].sqnr_db:.1f} dB" if steps else "nothing (the model has one layer)"
        raise QuantizeError(
            f"no fallback meets {budget.describe()}: with {count} of {len(ranked)} layers in float it reaches "
            f"{reached}; relax the budget or use --precision fp16"
        )
    kept = [node for group in ranked[:count] for node in group]
    report = FallbackReport(budget.describe(), True, count, tuple(kept), tuple(steps), extra_weight_bytes(model, kept))
    return kept, found, report
