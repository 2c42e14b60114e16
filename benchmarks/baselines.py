"""The peer baseline both benchmarks compare against: ONNX Runtime's own static QDQ quantization,
called as its users call it (MinMax, uint8 activations, int8 weights)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np


def ort_quantize_static(
    source: Path, target: Path, samples: Iterable[Mapping[str, np.ndarray]], *, per_channel: bool = True
) -> float:
    """Quantize the float model file `source` into `target`; returns the seconds the call took."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(samples)

        def get_next(self):
            return next(self.items, None)

    start = time.perf_counter()
    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return time.perf_counter() - start
