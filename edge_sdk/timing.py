"""Quick latency of an ONNX model in ONNX Runtime on this host: median of timed runs after warm-up.
Used to judge a quantized model by its speed as well as its accuracy."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort


def ort_latency_ms(
    model: onnx.ModelProto | bytes,
    sample: Mapping[str, np.ndarray],
    *,
    threads: int = 1,
    warmup: int = 5,
    runs: int = 30,
) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = dict(sample)
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0
