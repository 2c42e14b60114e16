"""edge-sdk: take a trained model to an edge device.

Importing the package reads no files. The public API:
    load_target, list_targets  target registry (targets/*.toml)
    load_model                 ONNX file, ModelProto or torch.nn.Module -> Model
    inspect                    per-node costs, memory and per-target placement -> Inspection
    quantize, verify           QDQ ONNX for a target, and its fidelity against the float model
    export_tflite              a .tflite for a target (fp32/fp16/int8/int16x8/dynamic-int8), verified in LiteRT
    benchmark                  measure a .onnx/.tflite here -> BenchmarkResult
    bench_device, bench_fleet  measure on devices over SSH
    predict, predict_targets   latency on devices you do not have, with an error band
    open_store                 the SQLite results store
    compile_model              all of it for a list of targets: bundles, report.json and report.html
"""

from edge_sdk.benchmark import benchmark
from edge_sdk.errors import (
    DataError,
    DependencyError,
    DeviceError,
    DynamicShapeError,
    EdgeSdkError,
    ExportError,
    ModelError,
    QuantizeError,
    StoreError,
    TargetError,
    UsageError,
)
from edge_sdk.inspection import Inspection, inspect
from edge_sdk.model import Model, load_model
from edge_sdk.profile import Kind, Precision, TargetProfile
from edge_sdk.quantize import quantize
from edge_sdk.targets import list_targets, load_target, load_targets
from edge_sdk.verify import verify

__version__ = "0.1.0"

_LAZY = {  # heavier imports (LiteRT's schema, asyncssh, the latency model) wait until first use
    "compile_model": "edge_sdk.compile",
    "export_tflite": "edge_sdk.export",
    "bench_device": "edge_sdk.remote",
    "bench_fleet": "edge_sdk.fleet",
    "predict": "edge_sdk.predict",
    "predict_targets": "edge_sdk.predict",
    "open_store": "edge_sdk.store",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")


__all__ = [
    "DataError",
    "DependencyError",
    "DeviceError",
    "DynamicShapeError",
    "EdgeSdkError",
    "ExportError",
    "Inspection",
    "Kind",
    "Model",
    "ModelError",
    "Precision",
    "QuantizeError",
    "StoreError",
    "TargetError",
    "TargetProfile",
    "UsageError",
    "__version__",
    "bench_device",
    "bench_fleet",
    "benchmark",
    "compile_model",
    "export_tflite",
    "inspect",
    "list_targets",
    "load_model",
    "load_target",
    "load_targets",
    "open_store",
    "predict",
    "predict_targets",
    "quantize",
    "verify",
]
