"""A TFLite flatbuffer written with LiteRT's schema object API: tensors, constant buffers, operators,
and the `serving_default` SignatureDef that LiteRT's signature runner and ai-edge-quantizer need.

Nothing here knows ONNX; the lowering (lower.py) drives it. Output is deterministic: the same calls in
the same order give byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_sdk.errors import DependencyError

try:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
except ImportError as exc:  # pragma: no cover - exercised only without the dependency
    raise DependencyError("TFLite export needs LiteRT: pip install ai-edge-litert") from exc

BuiltinOperator = schema.BuiltinOperator
BuiltinOptions = schema.BuiltinOptions
Activation = schema.ActivationFunctionType
Padding = schema.Padding
OP_NAMES: dict[int, str] = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}

_TFLITE_TYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int16): schema.TensorType.INT16,
    np.dtype(np.bool_): schema.TensorType.BOOL,
}


def tflite_type(dtype: np.dtype | type) -> int:
    try:
        return _TFLITE_TYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"no TFLite tensor type for {np.dtype(dtype)}") from None


@dataclass
class FlatbufferBuilder:
    """Accumulates one subgraph. Indices returned by add_* are TFLite tensor indices."""

    tensors: list[Any] = field(default_factory=list)
    buffers: list[Any] = field(default_factory=lambda: [schema.BufferT()])  # buffer 0 is the empty sentinel
    operators: list[Any] = field(default_factory=list)
    opcodes: list[Any] = field(default_factory=list)
    fp16_constants: bool = False  # float weights stored as fp16, each behind a DEQUANTIZE to fp32
    _opcode_index: dict[int, int] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set)

    def add_tensor(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> int:
        tensor = schema.TensorT()
        tensor.name = self._unique(name)
        tensor.shape = np.asarray(shape, dtype=np.int32)
        tensor.type = tflite_type(dtype)
        tensor.buffer = 0
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_constant(self, name: str, value: np.ndarray) -> int:
        value = np.asarray(value, order="C")  # keeps 0-d scalars 0-d (ascontiguousarray makes them 1-d)
        if self.fp16_constants and value.dtype == np.float32 and value.size > 1:
            # How the TFLite converter writes fp16 models: LiteRT's GPU delegate and XNNPACK take the
            # fp16 weights as they are; other kernels run fp32 after the DEQUANTIZE.
            half = self._buffered(f"{name}_fp16", value.astype(np.float16))
            full = self.add_tensor(name, tuple(value.shape), np.float32)
            self.add_operator(BuiltinOperator.DEQUANTIZE, [half], [full], *options("DequantizeOptions"))
            return full
        return self._buffered(name, value)

    def _buffered(self, name: str, value: np.ndarray) -> int:
        index = self.add_tensor(name, tuple(value.shape), value.dtype)
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
        self.buffers.append(buffer)
        self.tensors[index].buffer = len(self.buffers) - 1
        return index

    def add_operator(
        self,
        code: int,
        inputs: list[int],
        outputs: list[int],
        options_type: int = 0,
        options: Any = None,
        version: int = 1,
    ) -> None:
        op = schema.OperatorT()
        op.opcodeIndex = self._opcode(code, version)
        op.inputs = np.asarray(inputs, dtype=np.int32)
        op.outputs = np.asarray(outputs, dtype=np.int32)
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        self.operators.append(op)

    def rename(self, index: int, name: str) -> None:
        self._names.discard(self.tensors[index].name)
        self.tensors[index].name = self._unique(name)

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[index].shape)

    def dtype_code(self, index: int) -> int:
        return int(self.tensors[index].type)

    def finish(self, inputs: list[int], outputs: list[int], *, description: str) -> bytes:
        subgraph = schema.SubGraphT()
        subgraph.tensors = self.tensors
        subgraph.inputs = np.asarray(inputs, dtype=np.int32)
        subgraph.outputs = np.asarray(outputs, dtype=np.int32)
        subgraph.operators = self.operators
        subgraph.name = "main"
        model = schema.ModelT()
        model.version = 3
        model.description = description
        model.operatorCodes = self.opcodes
        model.subgraphs = [subgraph]
        model.buffers = self.buffers
        model.signatureDefs = [self._signature(inputs, outputs)]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def _signature(self, inputs: list[int], outputs: list[int]) -> Any:
        def tensor_map(index: int) -> Any:
            entry = schema.TensorMapT()
            entry.name = self.tensors[index].name
            entry.tensorIndex = index
            return entry

        signature = schema.SignatureDefT()
        signature.signatureKey = "serving_default"
        signature.subgraphIndex = 0
        signature.inputs = [tensor_map(i) for i in inputs]
        signature.outputs = [tensor_map(i) for i in outputs]
        return signature

    def _opcode(self, code: int, version: int) -> int:
        if code not in self._opcode_index:
            entry = schema.OperatorCodeT()
            entry.builtinCode = code
            entry.deprecatedBuiltinCode = min(code, 127)
            entry.version = version
            self.opcodes.append(entry)
            self._opcode_index[code] = len(self.opcodes) - 1
        entry = self.opcodes[self._opcode_index[code]]
        entry.version = max(entry.version, version)
        return self._opcode_index[code]

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self._names:
            candidate, n = f"{name}_{n}", n + 1
        self._names.add(candidate)
        return candidate


def options(kind: str, **fields: Any) -> tuple[int, Any]:
    """(BuiltinOptions code, options object) for e.g. options("Conv2DOptions", padding=...)."""
    obj = getattr(schema, f"{kind}T")()
    for name, value in fields.items():
        if not hasattr(obj, name):
            raise AttributeError(f"{kind} has no field {name}")
        setattr(obj, name, value)
    return getattr(BuiltinOptions, kind), obj
