"""Verify an exported .tflite in LiteRT against the float ONNX model in ONNX Runtime: the same fidelity
table as the quantize stage (SQNR, cosine, max error, top-1 agreement, accuracy with labels).

Inputs are fed in each model's own layout and dtype: NCHW float to ONNX Runtime; NHWC (when the
TFLite input is NHWC) and quantized (when its input is int8/int16) to LiteRT. Outputs are brought back
to the ONNX layout and dequantized before comparing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_sdk.errors import DependencyError, ExportError
from edge_sdk.model import Model
from edge_sdk.runner import usable_cores
from edge_sdk.verify import Fidelity, compare_runs

TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


def litert_interpreter(flatbuffer: bytes, threads: int | None = None, *, keep_tensors: bool = False) -> Any:
    """A LiteRT interpreter with XNNPACK, tensors allocated. `keep_tensors` keeps every intermediate
    tensor readable, delegated ones too: one op per delegate node (for per-layer errors)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise DependencyError("running .tflite models needs LiteRT: pip install ai-edge-litert") from exc
    debug = {"experimental_preserve_all_tensors": True, "experimental_disable_delegate_node_fusion": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LiteRT warns that keeping every tensor is for debugging
            interpreter = Interpreter(model_content=flatbuffer, num_threads=threads, **(debug if keep_tensors else {}))
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ExportError(f"LiteRT cannot load the exported model: {str(exc).strip().splitlines()[0]}") from exc
    return interpreter


def verify_tflite(
    flatbuffer: bytes,
    reference: Model,
    data: Iterable[Mapping[str, np.ndarray]],
    *,
    labels: np.ndarray | None = None,
    threads: int | None = None,
) -> Fidelity:
    """`threads` for LiteRT (default: every usable core, as ONNX Runtime uses)."""
    interpreter = litert_interpreter(flatbuffer, threads or usable_cores())
    session = ort.InferenceSession(reference.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in reference.outputs]
    return compare_runs(names, _pairs(interpreter, session, reference, data), labels=labels)


def _pairs(interpreter, session, reference: Model, data) -> Iterator[tuple[dict, dict]]:
    inputs = tensors_by_name([i.name for i in reference.inputs], interpreter.get_input_details(), "input")
    outputs = tensors_by_name([o.name for o in reference.outputs], interpreter.get_output_details(), "output")
    out_names = [o.name for o in reference.outputs]
    for sample in data:
        expected = dict(zip(out_names, session.run(out_names, dict(sample)), strict=True))
        for name, array in sample.items():
            interpreter.set_tensor(inputs[name]["index"], to_tflite(array, inputs[name]))
        interpreter.invoke()
        got = {n: _output(interpreter, outputs[n], expected[n].shape) for n in out_names}
        yield expected, got


def _output(interpreter, detail: Mapping[str, Any], onnx_shape: tuple[int, ...]) -> np.ndarray:
    return from_tflite(interpreter.get_tensor(detail["index"]), detail, onnx_shape)


def tensors_by_name(names: list[str], details: list[dict], role: str) -> dict[str, dict]:
    """The TFLite tensor for each ONNX name: by name (edge-sdk keeps them), else by position (other
    converters rename them) when the counts agree."""
    found = {d["name"]: d for d in details}
    if all(n in found for n in names):
        return {n: found[n] for n in names}
    if len(details) == len(names):
        return dict(zip(names, details, strict=True))
    raise ExportError(
        f"the .tflite has {len(details)} {role}(s) and the ONNX model {len(names)}; pass the model it was made from"
    )


def to_tflite(array: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    shape = tuple(int(d) for d in detail["shape"])
    if array.ndim == 4 and array.shape != shape and array.transpose(TO_NHWC).shape == shape:
        array = array.transpose(TO_NHWC)
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu" and array.dtype.kind == "f":
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        array = np.clip(np.round(array / scale) + zero_point, info.min, info.max)
    return np.ascontiguousarray(array.astype(dtype))


def from_tflite(array: np.ndarray, detail: Mapping[str, Any], onnx_shape: tuple[int, ...]) -> np.ndarray:
    if array.dtype.kind in "iu" and detail["quantization"][0]:
        scale, zero_point = detail["quantization"]
        array = (array.astype(np.float32) - zero_point) * np.float32(scale)
    if array.ndim == 4 and array.shape != onnx_shape and array.transpose(TO_NCHW).shape == onnx_shape:
        array = array.transpose(TO_NCHW)
    return array
