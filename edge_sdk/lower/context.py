"""The state of one ONNX -> TFLite lowering: where each ONNX tensor lives in the TFLite graph and in
which layout.

Layout is decided once for the whole graph: every 4-D activation is stored channels-last (NHWC), the
layout TFLite kernels use. A value remembers its ONNX (NCHW) shape and whether it is stored NHWC;
converters map axes instead of inserting transposes, and `tensor(name, nhwc=...)` inserts a TRANSPOSE
only where an op's semantics need the other layout (a Flatten of a feature map with H*W > 1, say).
Every such transpose is counted, so reports can show how many layout transposes a model kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edge_sdk.errors import ExportError
from edge_sdk.lower.flatbuffer import BuiltinOperator, FlatbufferBuilder, options, schema

TO_NHWC = (0, 2, 3, 1)  # stored = onnx_value.transpose(TO_NHWC)
TO_NCHW = (0, 3, 1, 2)


@dataclass
class Value:
    index: int  # TFLite tensor index
    shape: tuple[int, ...]  # logical (ONNX) shape
    nhwc: bool = False

    @property
    def stored_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in TO_NHWC) if self.nhwc else self.shape


@dataclass
class Fusion:
    activation: int  # schema.ActivationFunctionType
    output: str  # the activation node's output: the fused op writes it directly


@dataclass
class Lowering:
    fb: FlatbufferBuilder
    node: onnx.NodeProto | None = None  # the node being converted (for error messages)
    opset: int = 17
    int8_friendly: bool = False  # prefer op forms XNNPACK runs in int8 (the model will be quantized)
    values: dict[str, Value] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, np.dtype] = field(default_factory=dict)
    fusions: dict[str, Fusion] = field(default_factory=dict)  # producer output -> fused activation
    layout_transposes: int = 0
    _transposed: dict[tuple[str, bool], int] = field(default_factory=dict)

    # ---- reading inputs -------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def require_const(self, name: str, what: str) -> np.ndarray:
        value = self.const(name)
        if value is None:
            self.fail(f"its {what} ('{name}') must be a constant")
        assert value is not None
        return value

    def value(self, name: str) -> Value:
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            array = _tflite_dtype(self.consts[name])
            value = Value(self.fb.add_constant(name, array), tuple(array.shape))
            self.values[name] = value
            return value
        self.fail(f"input '{name}' is not produced by any earlier node")
        raise AssertionError

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.consts:
            return tuple(self.consts[name].shape)
        if name in self.values:
            return self.values[name].shape
        return self.shapes[name]

    def tensor(self, name: str, *, nhwc: bool) -> int:
        """The TFLite tensor holding `name` in the requested layout (4-D only may be NHWC)."""
        value = self.value(name)
        if value.nhwc == nhwc:
            return value.index
        if name in self.consts:
            array = _tflite_dtype(self.consts[name])
            return self.constant(f"{name}_nhwc", array.transpose(TO_NHWC) if nhwc else array)
        key = (name, nhwc)
        if key not in self._transposed:
            perm = TO_NHWC if nhwc else TO_NCHW
            shape = tuple(value.shape[i] for i in TO_NHWC) if nhwc else value.shape
            out = self.fb.add_tensor(f"{name}_{'nhwc' if nhwc else 'nchw'}", shape, self._dtype_of(value))
            self.transpose(value.index, perm, out)
            self.layout_transposes += 1
            self._transposed[key] = out
        return self._transposed[key]

    def is_nhwc(self, name: str) -> bool:
        return name in self.values and self.values[name].nhwc

    # ---- writing outputs ------------------------------------------------------------------------
    def output(self, name: str, shape: tuple[int, ...], *, nhwc: bool, dtype: np.dtype | type = np.float32) -> int:
        stored = tuple(shape[i] for i in TO_NHWC) if nhwc else shape
        index = self.fb.add_tensor(name, stored, dtype)
        self.values[name] = Value(index, tuple(shape), nhwc)
        return index

    def fused_output(self, node: onnx.NodeProto) -> tuple[str, int]:
        """Where a fusable op writes, and the activation it fuses (NONE if there is none)."""
        fusion = self.fusions.get(node.output[0])
        if fusion is None:
            return node.output[0], schema.ActivationFunctionType.NONE
        return fusion.output, fusion.activation

    def constant(self, name: str, array: np.ndarray | np.generic) -> int:
        return self.fb.add_constant(name, np.asarray(array))

    def int32s(self, name: str, values) -> int:
        return self.constant(name, np.asarray(values, dtype=np.int32))

    def op(self, code: int, inputs: list[int], outputs: list[int], opts: tuple[int, Any] = (0, None)) -> None:
        self.fb.add_operator(code, inputs, outputs, opts[0], opts[1], version=_MIN_VERSIONS.get(code, 1))

    def transpose(self, source: int, perm: tuple[int, ...], out: int) -> None:
        perm_index = self.int32s(f"perm_{'_'.join(map(str, perm))}", perm)
        self.op(BuiltinOperator.TRANSPOSE, [source, perm_index], [out], options("TransposeOptions"))

    def scratch(self, label: str, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> int:
        """An intermediate TFLite tensor that has no ONNX counterpart."""
        base = self.node.name or self.node.output[0] if self.node is not None else "t"
        return self.fb.add_tensor(f"{base}/{label}", shape, dtype)

    def fail(self, reason: str) -> None:
        node = self.node
        where = f"node '{node.name or node.output[0]}' ({node.op_type}, opset {self.opset})" if node else "the model"
        raise ExportError(f"cannot lower {where} to TFLite: {reason}")

    def _dtype_of(self, value: Value) -> np.dtype:
        code = self.fb.dtype_code(value.index)
        return {v: k for k, v in _CODES.items()}.get(code, np.dtype(np.float32))


_CODES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.bool_): schema.TensorType.BOOL,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
}


def _tflite_dtype(array: np.ndarray) -> np.ndarray:
    """ONNX int64 (shapes, indices) becomes TFLite int32; doubles become float32."""
    if array.dtype == np.int64:
        return array.astype(np.int32)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    return array


# Kernel versions a runtime must register for what the lowering emits (older runtimes check them).
_MIN_VERSIONS = {
    BuiltinOperator.TRANSPOSE_CONV: 3,  # the bias input
    BuiltinOperator.BROADCAST_TO: 2,  # LiteRT registers BROADCAST_TO from version 2
}
