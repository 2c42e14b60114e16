"""Per-layer error of an exported .tflite against the float ONNX model: where along the graph the
quantization error grows (the layer-sensitivity plot of the compile report).

The .tflite runs in LiteRT with every intermediate tensor kept and XNNPACK, the kernels verify_tflite
and the CPU targets use, so the last layer's SQNR is the fidelity table's. A delegate normally runs
its whole partition as one node and never writes the tensors inside it; with one op per delegated
node every op's output is a tensor of the graph again, and LiteRT keeps them all. (LiteRT's own
optimized int8 kernels round differently: 0.8 dB less at EfficientNet-Lite0's output.)

The lowering names each TFLite tensor after the ONNX tensor it holds and ai-edge-quantizer keeps those
names, so tensors are matched by name. A tensor the lowering fused away (a Conv's output when its Relu
became the CONV_2D's fused activation) has no TFLite tensor and no entry; the Relu's output has both.
Each matched tensor is dequantized with its own parameters, moved from NHWC back to the ONNX layout
and compared with the float model's value in ONNX Runtime. Statistics are summed sample by sample
(verify's `TensorStats`), so memory holds one sample's tensors at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import onnx

from edge_sdk.errors import DataError, ExportError, UsageError
from edge_sdk.model import Model
from edge_sdk.tflite_verify import TO_NCHW, TO_NHWC, litert_interpreter, tensors_by_name, to_tflite
from edge_sdk.verify import (
    FLOAT_TYPES,
    LAYOUT_OPS,
    LayerError,
    TensorStats,
    expose_tensors,
    feed_for,
    input_specs,
    layer_errors,
    ort_session,
    run_session,
    value_dims,
)

_SKIPPED_OPS = LAYOUT_OPS | {"Constant", "Shape"}  # as verify's per-layer list: they add no error of their own
_QUANTIZED_KINDS = "iu"


@dataclass(frozen=True)
class _Probe:
    """One TFLite tensor to read, and how to bring it back to the ONNX tensor's value and layout."""

    tensor: str  # the ONNX (and TFLite) tensor name
    index: int  # TFLite tensor index
    scales: np.ndarray  # float32, one per channel or one for the tensor; empty for a float tensor
    zero_points: np.ndarray
    axis: int  # quantized dimension, for per-channel parameters
    to_nchw: bool  # stored NHWC, the ONNX tensor is NCHW

    def read(self, interpreter: Any) -> np.ndarray:
        array = interpreter.get_tensor(self.index)
        if self.scales.size:
            array = _dequantize(array, self.scales, self.zero_points, self.axis)
        return array.transpose(TO_NCHW) if self.to_nchw else array


def tflite_layer_errors(
    flatbuffer: bytes,
    reference: Model,
    data: Iterable[Mapping[str, np.ndarray]],
    *,
    limit: int | None = None,
) -> tuple[LayerError, ...]:
    """The SQNR of every ONNX compute tensor the .tflite still holds, in float-graph execution order.

    `reference` is the float model the .tflite was lowered from; `data` yields {input_name: array}
    in its layout (NCHW), at most `limit` of them are read. Inputs are moved to NHWC and quantized
    as the .tflite takes them. Layout-only ops (Reshape, Flatten, ...) are skipped as in `verify`'s
    per-layer list, except where they produce a graph output.
    """
    if limit is not None and limit < 1:
        raise UsageError(f"limit={limit}: pass a sample count of 1 or more, or None for all samples")
    interpreter = litert_interpreter(flatbuffer, keep_tensors=True)
    probes = _probes(interpreter, reference.proto)
    if not probes:
        raise ExportError(
            "no tensor of the .tflite is named like a tensor of the ONNX model; pass the model it was lowered "
            "from (per-layer errors need edge-sdk's lowering, which keeps the ONNX names)"
        )
    names = [p.tensor for p in probes]
    # ORT's fusions, as verify_tflite runs the float model (6x faster than as written): a fused
    # graph still computes every tensor named as an output
    session = ort_session(expose_tensors(reference.proto, names), 0, optimize=True)
    inputs = input_specs(reference.proto)
    tflite_inputs = tensors_by_name(list(inputs), interpreter.get_input_details(), "input")
    stats = {name: TensorStats() for name in names}
    samples = 0
    for sample in islice(data, limit):
        feed = feed_for(sample, inputs, samples)
        expected = run_session(session, names, feed)
        for name, detail in tflite_inputs.items():
            interpreter.set_tensor(detail["index"], to_tflite(feed[name], detail))
        interpreter.invoke()
        for probe, value in zip(probes, expected, strict=True):
            stats[probe.tensor].add(value, probe.read(interpreter))
        samples += 1
    if samples == 0:
        raise DataError("tflite_layer_errors got no samples; pass an iterable of {input_name: array} with one or more")
    return layer_errors(reference.proto, stats)


def _probes(interpreter: Any, reference: onnx.ModelProto) -> list[_Probe]:
    """The TFLite tensors named like the reference's float compute tensors, in its execution order."""
    values = {v.name: v for v in [*reference.graph.value_info, *reference.graph.output]}
    graph_outputs = {o.name for o in reference.graph.output}
    details: dict[str, Mapping[str, Any]] = {}
    for detail in interpreter.get_tensor_details():
        details.setdefault(detail["name"], detail)
    probes = []
    for node in reference.graph.node:
        if node.op_type in _SKIPPED_OPS and not graph_outputs.intersection(node.output):
            continue
        for name in node.output:
            value, detail = values.get(name), details.get(name)
            if value is not None and detail is not None and value.type.tensor_type.elem_type in FLOAT_TYPES:
                probe = _probe(name, detail, value_dims(value), nchw=f"{name}_nhwc" in details)
                if probe is not None:
                    probes.append(probe)
    return probes


def _probe(name: str, detail: Mapping[str, Any], onnx_shape: tuple[int | str, ...], *, nchw: bool) -> _Probe | None:
    params = detail["quantization_parameters"]
    scales = np.asarray(params["scales"], dtype=np.float32)
    if np.dtype(detail["dtype"]).kind in _QUANTIZED_KINDS and not scales.size:
        return None  # an integer tensor without a scale holds no float value
    stored = tuple(int(d) for d in detail["shape"])
    # A stored shape that is the ONNX shape moved to NHWC is NHWC. When C == H == W both layouts fit:
    # the lowering stores 4-D activations NHWC unless an op needs NCHW (a MatMul's), and names the NHWC
    # copy of an NCHW tensor (an NCHW graph output's source, say) `<name>_nhwc`.
    to_nchw = len(stored) == 4 and stored == tuple(onnx_shape[i] for i in TO_NHWC) and not nchw
    zero_points = np.asarray(params["zero_points"], dtype=np.float32)
    return _Probe(name, int(detail["index"]), scales, zero_points, int(params["quantized_dimension"]), to_nchw)


def _dequantize(array: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, axis: int) -> np.ndarray:
    """In float32, as tflite_verify dequantizes outputs, so a graph output's SQNR is the same here."""
    if scales.size > 1:  # per channel: activations should not be, but the format allows it
        shape = [1] * array.ndim
        shape[axis] = scales.size
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    return (array.astype(np.float32) - zero_points) * scales
