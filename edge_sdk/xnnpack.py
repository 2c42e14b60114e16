"""How LiteRT's default XNNPACK delegate splits a .tflite, and how fast it runs here.

XNNPACK takes the ops it supports for their types; the rest stay on LiteRT's builtin kernels, and every
switch between the two is a partition boundary. A quantized model with an op XNNPACK cannot run in int8
(RELU_0_TO_1, say) falls into many pieces and can be slower than its float model: reports say how many.

A delegated op's intermediate tensors are never allocated, which is how delegated ops are told apart.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from edge_sdk.tflite_verify import litert_interpreter


@dataclass(frozen=True)
class DelegateSplit:
    partitions: int  # XNNPACK pieces
    delegated_ops: int
    total_ops: int
    builtin_ops: dict[str, int]  # op type -> count left to LiteRT's own kernels

    @property
    def text(self) -> str:
        left = ", ".join(f"{op} x{n}" for op, n in self.builtin_ops.items()) or "none"
        return (
            f"XNNPACK took {self.delegated_ops} of {self.total_ops} ops in {self.partitions} piece(s); "
            f"left to LiteRT's kernels: {left}"
        )


def delegate_split(flatbuffer: bytes) -> DelegateSplit:
    interpreter = litert_interpreter(flatbuffer, threads=1)
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    boundary = {int(t) for op in delegates for t in op["outputs"]}
    left: Counter[str] = Counter()
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    for op in originals:
        outputs = [int(t) for t in op["outputs"]]
        if not delegates or not any(t in boundary or not _allocated(interpreter, t) for t in outputs):
            left[op["op_name"]] += 1
    return DelegateSplit(
        len(delegates), len(originals) - sum(left.values()), len(originals), dict(sorted(left.items()))
    )


def _allocated(interpreter, tensor: int) -> bool:
    try:
        interpreter.get_tensor(tensor)
    except ValueError:
        return False
    return True


def litert_latency_ms(flatbuffer: bytes, *, threads: int = 1, warmup: int = 3, runs: int = 30) -> float:
    """Median latency of one invoke on zero inputs (XNNPACK's speed does not depend on the values)."""
    interpreter = litert_interpreter(flatbuffer, threads=threads)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0
