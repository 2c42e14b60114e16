"""Float inputs and outputs around a fully quantized TFLite model.

ai-edge-quantizer quantizes graph inputs and outputs too (int8 I/O, what NPUs such as Ethos-U and
the Edge TPU want). CPU targets are easier to call with float I/O: a QUANTIZE op after each input and a
DEQUANTIZE op before each output, with the tensors' names and the signature kept.
"""

from __future__ import annotations

import numpy as np

from edge_sdk.lower.flatbuffer import BuiltinOperator, flatbuffers, options, schema

_QUANTIZED = {schema.TensorType.INT8, schema.TensorType.INT16, schema.TensorType.UINT8}


def float_io(flatbuffer: bytes) -> bytes:
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    _inline_buffers(model, flatbuffer)
    graph = model.subgraphs[0]
    quantize = _opcode(model, BuiltinOperator.QUANTIZE)
    dequantize = _opcode(model, BuiltinOperator.DEQUANTIZE)
    remap: dict[int, int] = {}
    front, back = [], []
    graph.inputs, graph.outputs = list(graph.inputs), list(graph.outputs)
    for position, index in enumerate(list(graph.inputs)):
        if graph.tensors[index].type in _QUANTIZED:
            remap[index] = _float_twin(model, graph, index)
            front.append(_op(quantize, remap[index], index, "QuantizeOptions"))
            graph.inputs[position] = remap[index]
    for position, index in enumerate(list(graph.outputs)):
        if graph.tensors[index].type in _QUANTIZED:
            remap[index] = _float_twin(model, graph, index)
            back.append(_op(dequantize, index, remap[index], "DequantizeOptions"))
            graph.outputs[position] = remap[index]
    graph.operators = front + list(graph.operators) + back
    for signature in model.signatureDefs or []:
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            entry.tensorIndex = remap.get(entry.tensorIndex, entry.tensorIndex)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _inline_buffers(model, flatbuffer: bytes) -> None:
    """Large models keep constant data after the flatbuffer, addressed by offset; repacking the object
    tree would drop it, so it moves back into the buffers first."""
    for buffer in model.buffers:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(flatbuffer, dtype=np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = buffer.size = 0


def _float_twin(model, graph, index: int) -> int:
    """A float32 tensor taking over the quantized tensor's name (the signature and users see it)."""
    quantized = graph.tensors[index]
    twin = schema.TensorT()
    twin.name = quantized.name
    quantized.name = f"{_text(quantized.name)}_quantized"
    twin.shape = np.array(quantized.shape, dtype=np.int32)
    twin.shapeSignature = quantized.shapeSignature
    twin.type = schema.TensorType.FLOAT32
    twin.buffer = 0  # the empty buffer every runtime tensor points at
    graph.tensors.append(twin)
    return len(graph.tensors) - 1


def _op(opcode: int, source: int, result: int, kind: str):
    op = schema.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = np.array([source], dtype=np.int32)
    op.outputs = np.array([result], dtype=np.int32)
    op.builtinOptionsType, op.builtinOptions = options(kind)
    return op


def _opcode(model, code: int) -> int:
    for i, entry in enumerate(model.operatorCodes):
        if max(entry.builtinCode, entry.deprecatedBuiltinCode) == code:
            return i
    entry = schema.OperatorCodeT()
    entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)
