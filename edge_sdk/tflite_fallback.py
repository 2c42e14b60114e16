"""The accuracy fallback for TFLite exports: keep the fewest ops in float until the budget holds.

The same search as the ONNX path (edge_sdk.fallback): layers ranked by the noise each adds, here
measured in LiteRT (edge_sdk.tflite_layers), the worst kept in float through ai-edge-quantizer's
`no_quantize` recipe entries (it adds the DEQUANTIZE/QUANTIZE at their edges), doubling then bisecting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edge_sdk.fallback import Budget, FallbackReport, keep_fewest_in_float, rank_layers
from edge_sdk.model import Model
from edge_sdk.plan import FloatNode
from edge_sdk.tflite_layers import tflite_layer_errors
from edge_sdk.tflite_verify import verify_tflite
from edge_sdk.verify import Fidelity

RANKING_SAMPLES = 32  # as the ONNX path: enough to order the layers


@dataclass(frozen=True)
class FallbackJob:
    reference: Model  # the float model, whose node and tensor names the .tflite keeps
    data: list[dict[str, Any]]  # verification samples, in the reference's layout
    labels: Any
    quantize: Callable[[Sequence[str]], bytes]  # float tensor names -> the quantized .tflite


def tflite_fallback(
    job: FallbackJob, quantized: bytes, fidelity: Fidelity, budget: Budget
) -> tuple[bytes, Fidelity, FallbackReport]:
    """`quantized` with the fewest layers in float that `budget` needs, its fidelity and the report."""
    if budget.holds(fidelity):
        return quantized, fidelity, FallbackReport(budget.describe(), True, 0, (), (), 0)
    layers = tflite_layer_errors(quantized, job.reference, job.data, limit=RANKING_SAMPLES)
    ranked = rank_layers(job.reference, replace(fidelity, layers=layers), set())
    outputs = {n.name or n.output[0]: tuple(n.output) for n in job.reference.proto.graph.node}
    built: dict[int, bytes] = {}

    def attempt(nodes: list[FloatNode]) -> Fidelity:
        built[len(nodes)] = job.quantize([t for node in nodes for t in outputs.get(node.node, ())])
        return verify_tflite(built[len(nodes)], job.reference, job.data, labels=job.labels)

    kept, found, report = keep_fewest_in_float(job.reference, ranked, budget, attempt)
    return built[len(kept)], found, report
