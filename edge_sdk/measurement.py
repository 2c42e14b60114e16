"""What a latency measurement or prediction is: the data every profiling stage returns.

The device runner (runner.py) prints a JSON document; `benchmark.result_from_runner_json` turns it
into this frozen record, so host runs, device runs over SSH and predictions all share one shape and one
store schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Source(str, Enum):
    HOST = "host"
    DEVICE = "device"
    PREDICTED = "predicted"


@dataclass(frozen=True)
class LatencyStats:
    count: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    std_ms: float

    @property
    def throughput_per_s(self) -> float:
        return 1000.0 / self.mean_ms if self.mean_ms > 0 else math.inf

    @classmethod
    def from_samples(cls, samples_ms: list[float] | tuple[float, ...]) -> LatencyStats:
        if not samples_ms:
            raise ValueError("no timed runs")
        ordered = sorted(samples_ms)
        n = len(ordered)
        mean = sum(ordered) / n
        var = sum((s - mean) ** 2 for s in ordered) / (n - 1) if n > 1 else 0.0
        return cls(
            count=n,
            median_ms=_quantile(ordered, 0.5),
            p90_ms=_quantile(ordered, 0.9),
            p99_ms=_quantile(ordered, 0.99),
            min_ms=ordered[0],
            mean_ms=mean,
            std_ms=math.sqrt(var),
        )


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without needing numpy."""
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Conditions:
    """What the numbers were measured under; recorded with every run so two runs can be compared."""

    hostname: str
    cpu_model: str
    machine: str
    os: str
    python: str
    runtime: str  # "litert", "tflite-runtime" or "onnxruntime"
    runtime_version: str
    threads: int
    governor: str | None = None
    load_avg: tuple[float, float, float] | None = None
    temperature_c: float | None = None
    throttled: str | None = None  # raw `vcgencmd get_throttled` value on a Raspberry Pi


@dataclass(frozen=True)
class OpTime:
    name: str
    op_type: str
    mean_ms: float


@dataclass(frozen=True)
class Prediction:
    """A predicted latency and its error band (from the fit's residuals)."""

    latency_ms: float
    low_ms: float
    high_ms: float
    method: str  # e.g. "roofline-fit" or "vela-estimate"
    fit_models: int  # how many measured models the efficiencies were fitted on


@dataclass(frozen=True)
class BenchmarkResult:
    source: Source
    model_name: str
    model_sha256: str
    target: str | None
    device: str | None  # "user@host:port" for device runs, None otherwise
    init_ms: float | None
    first_run_ms: float | None
    stats: LatencyStats | None  # None for predictions
    samples_ms: tuple[float, ...]
    peak_rss_mb: float | None
    conditions: Conditions | None
    sdk_version: str
    created_at: str  # ISO 8601, UTC
    per_op: tuple[OpTime, ...] = ()
    prediction: Prediction | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def latency_ms(self) -> float:
        if self.stats is not None:
            return self.stats.median_ms
        assert self.prediction is not None
        return self.prediction.latency_ms
