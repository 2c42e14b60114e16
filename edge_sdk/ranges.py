"""Activation ranges for static quantization, from one pass of the float model over the calibration data.

ONNX Runtime's MinMax calibration stretches each tensor's grid over the largest value any sample
produced, so one outlier coarsens every other value's step. Here each tensor's range is the one
that minimises the expected squared error of its 8-bit quantization over the calibration values:
the clipping error of values outside the range plus the rounding error (step^2 / 12) of those
inside it; exact zeros (ReLU outputs, padding) cost nothing, since zero is always on the grid.
The error is computed from a streaming histogram per tensor, so memory stays a few kilobytes per
tensor whatever the number of samples (ONNX Runtime's Entropy and Percentile calibrators keep
every value and need gigabytes). Wider grids (16-bit activations) take the plain minimum and maximum.

Measured by benchmarks/quantize_bench.py against ONNX Runtime's MinMax; the ranges reach ONNX
Runtime through its calibration cache (quantize_static's calibration_cache_path), which replaces
its own calibration pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edge_sdk.errors import DataError
from edge_sdk.verify import expose_tensors

BINS = 2048  # histogram resolution: 1/2048 of a tensor's span
CANDIDATES = 128  # range ends tried on each side of zero: ends are placed to 1/128 of the span
SUBSAMPLE = 1 << 13  # values per tensor and sample that enter the histogram (min and max always do)
_FLOAT = onnx.TensorProto.FLOAT
Range = tuple[float, float]
Ranges = dict[str, Range]


class RangeMethod(str, Enum):
    """How an activation's quantization range is chosen from the calibration data."""

    MSE = "mse"  # least squared quantization error over the calibration values
    MINMAX = "minmax"  # the smallest and largest value seen (ONNX Runtime's MinMax)


@dataclass
class Histogram:
    """Counts of a tensor's non-zero values over [low, high] (which always holds zero), widened
    and rebinned as later samples go beyond it, and the exact extremes."""

    low: float = 0.0
    high: float = 0.0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    zeros: int = 0
    minimum: float = 0.0  # zero included: every grid holds zero
    maximum: float = 0.0

    def add(self, values: np.ndarray) -> None:
        values = values.ravel()
        if values.size == 0:
            return
        vmin, vmax = float(values.min()), float(values.max())
        if not (np.isfinite(vmin) and np.isfinite(vmax)):
            raise DataError("the float model produced NaN or inf on the calibration data; check the model and data")
        if values.size > SUBSAMPLE:  # a strided subsample, with the extremes that set the grid
            values = np.concatenate([values[:: -(-values.size // SUBSAMPLE)], [vmin, vmax]])
        self.minimum, self.maximum = min(self.minimum, vmin), max(self.maximum, vmax)
        nonzero = values[values != 0]
        self.zeros += values.size - nonzero.size
        if vmin < self.low or vmax > self.high:
            self._widen(min(vmin, self.low), max(vmax, self.high))
        if nonzero.size:
            width = (self.high - self.low) / BINS
            index = np.clip(((nonzero - self.low) / width).astype(np.int64), 0, BINS - 1)
            self.counts += np.bincount(index, minlength=BINS)

    def _widen(self, low: float, high: float) -> None:
        """Grows the span to hold [low, high], with a quarter more on each growing side, so a
        drifting range is rebinned a few times rather than on every sample."""
        span = high - low
        new_low = min(0.0, low - 0.25 * span) if low < self.low else self.low
        new_high = max(0.0, high + 0.25 * span) if high > self.high else self.high
        if self.counts.any():
            old_width = (self.high - self.low) / BINS
            centres = self.low + (np.arange(BINS) + 0.5) * old_width
            index = np.clip(((centres - new_low) / ((new_high - new_low) / BINS)).astype(np.int64), 0, BINS - 1)
            self.counts = np.bincount(index, weights=self.counts, minlength=BINS)
        self.low, self.high = new_low, new_high

    def extremes(self) -> Range:
        return self.minimum, self.maximum

    def best_range(self, levels: int, *, symmetric: bool = False) -> Range:
        """The range whose `levels`-step grid quantizes the counted values with the least squared error."""
        low, high = self.extremes()
        if high - low <= 0:
            return low, high
        width = (self.high - self.low) / BINS
        centres = self.low + (np.arange(BINS) + 0.5) * width
        n = np.concatenate([[0.0], np.cumsum(self.counts)])
        s1 = np.concatenate([[0.0], np.cumsum(self.counts * centres)])
        s2 = np.concatenate([[0.0], np.cumsum(self.counts * centres * centres)])
        if symmetric:
            ends = np.linspace(0, max(-low, high), CANDIDATES + 1)[1:]
            lows, highs = -ends, ends
        else:
            lows = np.linspace(low, 0.0, CANDIDATES, endpoint=False) if low < 0 else np.zeros(1)
            highs = np.linspace(high, 0.0, CANDIDATES, endpoint=False) if high > 0 else np.zeros(1)
            lows, highs = np.meshgrid(lows, highs, indexing="ij")
        below = np.searchsorted(centres, lows)  # bins [0, below) are clipped up to the low end
        above = np.searchsorted(centres, highs, side="right")  # bins [above, BINS) down to the high end
        clipped_low = s2[below] - 2 * lows * s1[below] + lows**2 * n[below]
        clipped_high = (s2[-1] - s2[above]) - 2 * highs * (s1[-1] - s1[above]) + highs**2 * (n[-1] - n[above])
        inside = n[above] - n[below]
        step = (highs - lows) / levels
        cost = np.where(highs > lows, clipped_low + clipped_high + inside * step**2 / 12, np.inf)
        best = np.unravel_index(np.argmin(cost), cost.shape)
        return float(lows[best]), float(highs[best])


def float_tensors(proto: onnx.ModelProto) -> list[str]:
    """The float tensors an engine may quantize: graph inputs and node outputs whose type is known
    to be float (what ONNX Runtime's calibrator also selects), in graph order."""
    typed = {v.name: v for v in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]}
    initializers = {t.name for t in proto.graph.initializer}
    names = [i.name for i in proto.graph.input] + [o for node in proto.graph.node for o in node.output]
    return [
        name
        for name in dict.fromkeys(names)
        if name in typed and name not in initializers and typed[name].type.tensor_type.elem_type == _FLOAT
    ]


def collect_histograms(proto: onnx.ModelProto, data: Iterable[Mapping[str, np.ndarray]]) -> dict[str, Histogram]:
    """Runs the float model once per sample and histograms every float tensor it computes, except
    those read only by a Relu or Clip (see clipped_inputs)."""
    skipped = clipped_inputs(proto)
    tensors = [t for t in float_tensors(proto) if t not in skipped]
    inputs = {i.name for i in proto.graph.input}
    fetched = [t for t in tensors if t not in inputs]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    exposed = expose_tensors(proto, fetched or [o.name for o in proto.graph.output])  # a graph needs an output
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    histograms = {t: Histogram() for t in tensors}
    for sample in data:
        outputs = dict(zip(fetched, session.run(fetched, dict(sample)) if fetched else [], strict=True))
        for name, histogram in histograms.items():
            histogram.add(np.asarray(outputs[name] if name in outputs else sample[name], np.float32))
    return histograms


def clipped_inputs(proto: onnx.ModelProto) -> dict[str, str]:
    """{tensor: the activation's output} for float tensors read by nothing but one Relu or Clip (a
    convolution's output before its ReLU6). Quantizing such a tensor on its activation's range and
    then clipping gives what clipping and then quantizing gives, which is what ONNX Runtime does
    when it folds the activation into the preceding node; not observing the tensor lets ONNX
    Runtime fuse the pair while calibrating."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in proto.graph.output} | {i.name for i in proto.graph.input}
    produced = {o for node in proto.graph.node for o in node.output}
    return {
        name: users[0].output[0]
        for name, users in readers.items()
        if name in produced and name not in outputs and len(users) == 1 and users[0].op_type in ("Relu", "Clip")
        and users[0].input[0] == name
    }  # fmt: skip


def activation_ranges(
    proto: onnx.ModelProto,
    data: Iterable[Mapping[str, np.ndarray]],
    method: RangeMethod = RangeMethod.MSE,
    *,
    levels: int = 255,
    symmetric: bool = False,
) -> Ranges:
    """{tensor: (low, high)} for every float tensor of `proto`. MSE ranges are chosen for a grid of
    `levels` steps; grids wider than 8 bits take the extremes, as MINMAX does (clipping gains
    nothing where rounding error is already negligible)."""
    histograms = collect_histograms(proto, data)
    if method is RangeMethod.MINMAX or levels > 255:
        found = {name: h.extremes() for name, h in histograms.items()}
    else:
        found = {name: h.best_range(levels, symmetric=symmetric) for name, h in histograms.items()}
    clipped = clipped_inputs(proto)
    for name in clipped:
        source = clipped[name]
        while source in clipped:  # Relu then Clip: the last activation's range
            source = clipped[source]
        if source in found:
            found[name] = found[source]
    return {name: found[name] for name in float_tensors(proto) if name in found}


def write_calibration_cache(ranges: Mapping[str, Range], path: Path) -> None:
    """Writes `ranges` as ONNX Runtime's calibration cache (MinMax kind), which quantize_static reads
    through calibration_cache_path instead of calibrating itself."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    data = {name: (np.float32(low), np.float32(high)) for name, (low, high) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
