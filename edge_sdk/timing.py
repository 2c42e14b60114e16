"""Quick latency of an ONNX model in ONNX Runtime on this host: median of timed runs after warm-up,
and where the time goes per op class (ONNX Runtime's profiler). Used to judge a quantized model by
its speed as well as its accuracy, and to say why it is slower when it is."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

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


_MEASURED_CLASSES = {  # ONNX Runtime's kernels after its fusions, in the prediction's op classes
    "conv": ("Conv", "QLinearConv", "FusedConv", "ConvInteger", "NhwcConv", "ConvTranspose"),
    "fc": ("Gemm", "MatMul", "QGemm", "QLinearMatMul", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat"),
    "quantize": ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"),  # the int8 round trips
    "move": ("ReorderInput", "ReorderOutput"),  # ONNX Runtime's NCHWc layout changes
}


def measured_class(op_type: str, *, grouped: bool = False) -> str:
    """The op class of a measured kernel. A grouped convolution is depthwise; profiles that name
    kernels without their attributes (a device runner's) count it as conv."""
    from edge_sdk.latency_model import OpClass, op_class

    for name, op_types in _MEASURED_CLASSES.items():
        if op_type in op_types:
            return OpClass.DEPTHWISE.value if name == "conv" and grouped else name
    if op_type.startswith("QLinear"):  # QLinearAdd, QLinearGlobalAveragePool, ...: the float op's class
        op_type = op_type.removeprefix("QLinear")
    return op_class(onnx.helper.make_node(op_type, [], [])).value if op_type else OpClass.ELEMENTWISE.value


def op_class_ms(
    model: onnx.ModelProto | bytes, sample: Mapping[str, np.ndarray], *, threads: int = 1, runs: int = 30
) -> dict[str, float]:
    """{op class: ms per run} in ONNX Runtime on this host: each kernel's median over `runs` profiled
    runs (the first, cold run dropped), summed per class. Kernels are named after ONNX Runtime's
    fusions; the optimized graph it writes tells grouped (depthwise) convolutions apart."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        data = model if isinstance(model, bytes) else model.SerializeToString()
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, dict(sample))
        events = json.loads(Path(session.end_profiling()).read_text())
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    grouped = {node.name for node in optimized.graph.node if any(a.name == "group" and a.i > 1 for a in node.attribute)}
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            durations[(node, event["args"]["op_name"])].append(event["dur"] / 1000.0)
    per_class: dict[str, float] = defaultdict(float)
    for (node, op_type), times in durations.items():
        per_class[measured_class(op_type, grouped=node in grouped)] += statistics.median(times[1:] or times)
    return dict(per_class)
