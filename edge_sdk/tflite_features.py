"""A .tflite file as the latency model sees it: per operator its op class, MACs and bytes moved, read
from the flatbuffer with LiteRT's schema (no interpreter), so any converter's output can be predicted.

Operators are already fused in TFLite, and every operator runs where the file will run it (a CPU
target's runtime takes all of them), so there are no partition transfers to count.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.errors import DependencyError, ModelError
from edge_sdk.latency_model import ModelFeatures, OpClass, runtime_family
from edge_sdk.profile import Precision, TargetProfile

_MOVE_OPS = (
    "RESHAPE", "TRANSPOSE", "CONCATENATION", "SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE", "PAD",
    "PADV2", "MIRROR_PAD", "GATHER", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "BROADCAST_TO", "SQUEEZE",
)  # fmt: skip
_CLASSES = {
    "CONV_2D": OpClass.CONV,
    "TRANSPOSE_CONV": OpClass.CONV,
    "DEPTHWISE_CONV_2D": OpClass.DEPTHWISE,
    "FULLY_CONNECTED": OpClass.FC,
    "BATCH_MATMUL": OpClass.FC,
    **dict.fromkeys(
        ("AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "SOFTMAX"), OpClass.POOL
    ),
    **dict.fromkeys(_MOVE_OPS, OpClass.MOVE),
}
_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1}  # TensorType -> bytes (FLOAT32, FLOAT16, ...)


@dataclass(frozen=True)
class TfliteModel:
    name: str
    sha256: str
    flatbuffer: bytes
    precision: Precision  # int8 or int16x8 when its convolutions compute in integers, fp16, else fp32

    def features(self, target: TargetProfile, *, precision: Precision, runtime: str) -> ModelFeatures:
        schema = _schema()
        model = schema.Model.GetRootAs(self.flatbuffer, 0)
        graph = model.Subgraphs(0)
        rows = [_row(model, graph, graph.Operators(i), _op_names(schema)) for i in range(graph.OperatorsLength())]
        return ModelFeatures(
            model_name=self.name,
            model_sha256=self.sha256,
            target=target.id,
            precision=precision,
            runtime=runtime_family(runtime),
            op_class=tuple(r[0] for r in rows),
            macs=tuple(r[1] for r in rows),
            bytes_moved=tuple(r[2] for r in rows),
            weight_bytes=tuple(r[3] for r in rows),
            on_unit=(True,) * len(rows),
            transfers=0,
            transfer_bytes=0,
        )


def load_tflite(path: str | Path) -> TfliteModel:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc.strerror}); check the path") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{path} is not a TFLite model (no TFL3 identifier); pass a .tflite file")
    try:
        precision = _precision(data)
    except Exception as exc:  # flatbuffers raises struct/index errors alike on truncated files
        raise ModelError(f"{path} is truncated or corrupt ({type(exc).__name__}); export it again") from None
    return TfliteModel(path.name, hashlib.sha256(data).hexdigest(), data, precision)


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise DependencyError("reading .tflite files needs LiteRT: pip install ai-edge-litert") from exc
    return schema


@functools.cache
def _op_names(schema) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _precision(data: bytes) -> Precision:
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    names = _op_names(schema)
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())) in ("CONV_2D", "FULLY_CONNECTED"):
            types = (graph.Tensors(op.Inputs(0)).Type(), graph.Tensors(op.Inputs(1)).Type())
            if types == (schema.TensorType.INT8, schema.TensorType.INT8):
                return Precision.INT8
            if types[0] == schema.TensorType.INT16:
                return Precision.INT16X8
    halves = any(graph.Tensors(t).Type() == schema.TensorType.FLOAT16 for t in range(graph.TensorsLength()))
    return Precision.FP16 if halves else Precision.FP32


def _row(model, graph, op, codes: dict[int, str]) -> tuple[OpClass, int, int, int]:
    code = model.OperatorCodes(op.OpcodeIndex())
    name = codes.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
    inputs = [graph.Tensors(i) for i in op.InputsAsNumpy() if i >= 0]
    outputs = [graph.Tensors(i) for i in op.OutputsAsNumpy() if i >= 0]
    weights = [t for t in inputs if model.Buffers(t.Buffer()).DataLength() > 0 or model.Buffers(t.Buffer()).Size()]
    moved = sum(_nbytes(t) for t in (*inputs, *outputs))
    return _CLASSES.get(name, OpClass.ELEMENTWISE), _macs(name, inputs, outputs), moved, sum(map(_nbytes, weights))


def _macs(name: str, inputs, outputs) -> int:
    if not outputs or len(inputs) < 2:
        return 0
    out = math.prod(_shape(outputs[0]))
    filt = _shape(inputs[1])
    if name == "CONV_2D" and len(filt) == 4:
        return out * filt[1] * filt[2] * filt[3]
    if name == "DEPTHWISE_CONV_2D" and len(filt) == 4:
        return out * filt[1] * filt[2]
    if name == "FULLY_CONNECTED" and len(filt) == 2:
        return out * filt[1]
    if name == "BATCH_MATMUL":
        return out * _shape(inputs[0])[-1]
    if name == "TRANSPOSE_CONV" and len(inputs) > 2:
        return math.prod(_shape(inputs[2])) * filt[0] * filt[1] * filt[2]
    return 0


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()


def _nbytes(tensor) -> int:
    return int(np.prod(_shape(tensor), dtype=np.int64)) * _ITEMSIZE.get(tensor.Type(), 4)
