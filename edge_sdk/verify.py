"""Verify a quantized ONNX model against its float reference, whichever engine quantized it.

Both models run in ONNX Runtime on the same evaluation data. Per output: SQNR, cosine, max error,
top-1 agreement and task accuracy. Per layer (optional): the SQNR of every float tensor the
quantized graph still carries, read where its consumers read it (after the Q/DQ pair that follows
it), so the list shows where along the graph the error grows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from edge_sdk.errors import DataError, ModelError, QuantizeError, UsageError
from edge_sdk.model import Model
from edge_sdk.serialize import to_jsonable

QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QGemm"}
)
# Ops that only move or relabel data: their output carries the error of their input and adds none,
# so they would repeat the previous layer's entry.
LAYOUT_OPS = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout", "Cast", "Expand"}
)
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})
_Pair = tuple[str, str, "TensorStats"]  # float-model tensor, quantized-model tensor, their statistics


@dataclass(frozen=True)
class OutputFidelity:
    name: str
    sqnr_db: float  # 10*log10(sum ref^2 / sum (ref-q)^2) over all samples; inf when identical
    cosine: float  # mean over rows (axis 0 of each run's output) of the cosine of the flattened row
    max_abs_error: float
    top1_agreement: float | None  # outputs shaped (N, C), C >= 2: share of rows whose argmax agrees
    accuracy_float: float | None  # top-1 against the labels, when given
    accuracy_quant: float | None


@dataclass(frozen=True)
class LayerError:
    tensor: str  # float-model tensor name
    op_type: str  # op producing it in the float model
    sqnr_db: float  # the quantized model's value of this tensor against the float model's, over all samples


@dataclass(frozen=True)
class Fidelity:
    samples: int  # runs: items of the data iterable, each a batch as given
    outputs: tuple[OutputFidelity, ...]
    layers: tuple[LayerError, ...]  # empty unless per_layer=True; in float-graph execution order

    @property
    def worst_sqnr_db(self) -> float:
        return min(o.sqnr_db for o in self.outputs)

    def to_dict(self) -> dict:
        return _finite_or_none(to_jsonable(self))


def is_quantized(model: onnx.ModelProto) -> bool:
    """True when the graph holds any quantize, dequantize or integer op."""
    return any(n.op_type in QUANTIZED_OPS or n.op_type.startswith("QLinear") for n in model.graph.node)


def verify(
    quantized: onnx.ModelProto | str | Path,
    reference: Model | onnx.ModelProto | str | Path,
    data: Iterable[Mapping[str, np.ndarray]],
    *,
    labels: np.ndarray | None = None,
    per_layer: bool = False,
    threads: int = 0,
    optimized: bool = False,
) -> Fidelity:
    """Run both models on `data` and measure how far the quantized one is from the reference.

    `reference` is used as given (a Model's simplified proto, or the file or proto as it is): the
    per-layer list matches tensors by name, so pass the graph that was quantized. `labels` holds one
    class index per row of the classifier outputs, in data order.

    By default both graphs run as written (ONNX Runtime optimizations off): Q/DQ pairs are evaluated
    exactly, so the numbers describe the model, not this host. `optimized=True` measures the outputs
    with ONNX Runtime's fusions, i.e. this host's int8 kernels; on x86 CPUs without VNNI these
    saturate on full-range int8 weights (ORT's `reduce_range` exists for them). Layers always run as
    written, since fusions hide the tensors being compared.
    """
    q_proto, f_proto = _as_proto(quantized, "quantized"), _as_proto(reference, "reference")
    inputs = _check_interfaces(q_proto, f_proto)
    outputs = {o.name: _OutputStats() for o in f_proto.graph.output}
    output_pairs: list[_Pair] = [(name, name, stats) for name, stats in outputs.items()]
    matches = match_tensors(f_proto, q_proto) if per_layer else {}
    layers = {tensor: TensorStats() for tensor in matches}
    layer_pairs: list[_Pair] = [(tensor, matches[tensor], stats) for tensor, stats in layers.items()]
    if optimized:
        runs = [_Comparison(f_proto, q_proto, output_pairs, threads=threads, optimize=True)]
        runs += [_Comparison(f_proto, q_proto, layer_pairs, threads=threads)] if per_layer else []
    else:
        runs = [_Comparison(f_proto, q_proto, output_pairs + layer_pairs, threads=threads)]
    samples = 0
    for sample in data:
        feed = feed_for(sample, inputs, samples)
        for run in runs:
            run.add(feed)
        samples += 1
    if samples == 0:
        raise DataError("verify got no samples; pass an iterable of {input_name: array} with at least one item")
    results = tuple(stats.result(name, labels) for name, stats in outputs.items())
    return Fidelity(samples, results, layer_errors(f_proto, layers))


def compare_runs(
    outputs: Sequence[str],
    runs: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    *,
    labels: np.ndarray | None = None,
) -> Fidelity:
    """The fidelity table from (reference outputs, candidate outputs) pairs, whatever ran them (LiteRT
    for an exported .tflite, say); outputs are matched by name and compared in the reference's layout."""
    stats = {name: _OutputStats() for name in outputs}
    samples = 0
    for reference, candidate in runs:
        for name, tensor_stats in stats.items():
            tensor_stats.add(reference[name], candidate[name])
        samples += 1
    if samples == 0:
        raise DataError("verification got no samples; pass at least one")
    return Fidelity(samples, tuple(s.result(name, labels) for name, s in stats.items()), ())


def run_outputs(
    model: onnx.ModelProto | bytes,
    data: Iterable[Mapping[str, np.ndarray]],
    output_names: list[str] | None = None,
    threads: int = 0,
    *,
    optimized: bool = False,
) -> dict[str, np.ndarray]:
    """Every sample through `model`; each output's per-sample arrays concatenated along axis 0.

    `output_names` may name intermediate tensors too. Optimizations as in `verify`.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    names = output_names or [o.name for o in proto.graph.output]
    sess = ort_session(expose_tensors(proto, names), threads, optimize=optimized)
    inputs = input_specs(proto)
    runs = [run_session(sess, names, feed_for(sample, inputs, i)) for i, sample in enumerate(data)]
    if not runs:
        raise DataError("run_outputs got no samples; pass an iterable of {input_name: array} with at least one item")
    return {name: np.concatenate([np.atleast_1d(r[i]) for r in runs], axis=0) for i, name in enumerate(names)}


def match_tensors(reference: onnx.ModelProto, quantized: onnx.ModelProto) -> dict[str, str]:
    """Float-graph compute tensors -> the quantized-graph tensor carrying the same value as consumers see it.

    Engines keep the float tensor names of compute outputs: ORT's QDQ graph feeds T into
    `T_QuantizeLinear` -> `T_DequantizeLinear` (output `T_DequantizeLinear_Output`), and for a graph
    output renames the producer's output to `T_QuantizeLinear_Input` so the DQ output keeps `T`;
    NNCF feeds T into `QuantizeLinear_T_1` -> `DequantizeLinear_T_1` (output `dq_output_T_1`).
    The match follows the graph rather than these names: T itself if a DequantizeLinear produces
    it, else the DQ output of the first Q -> DQ pair reading T, else T. Tensors the quantized graph
    no longer has (a Relu ORT folded into the Conv before it) are left out. Order: float execution.
    """
    producers = {out: node for node in quantized.graph.node for out in node.output if out}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in quantized.graph.node:
        for name in node.input:
            consumers[name].append(node)
    f_types, q_types = _elem_types(reference), _elem_types(quantized)
    matches: dict[str, str] = {}
    for node in reference.graph.node:
        if node.op_type in LAYOUT_OPS or node.op_type in ("Constant", "Shape"):
            continue
        for tensor in node.output:
            if tensor in producers and f_types.get(tensor) in FLOAT_TYPES:
                seen = _as_consumed(tensor, producers, consumers)
                if q_types.get(seen) in FLOAT_TYPES:
                    matches[tensor] = seen
    return matches


def _as_consumed(tensor: str, producers: Mapping[str, onnx.NodeProto], consumers: Mapping) -> str:
    if producers[tensor].op_type == "DequantizeLinear":
        return tensor
    for q in consumers.get(tensor, ()):
        if q.op_type != "QuantizeLinear":
            continue
        for dq in consumers.get(q.output[0], ()):
            if dq.op_type == "DequantizeLinear":
                return str(dq.output[0])
    return tensor


class _Comparison:
    """Both models run on the same feeds; each (float tensor, quantized tensor, stats) pair is updated.

    The compared tensors become the graph outputs, so one run per model returns them all.
    """

    def __init__(
        self,
        reference: onnx.ModelProto,
        quantized: onnx.ModelProto,
        pairs: Sequence[_Pair],
        *,
        threads: int,
        optimize: bool = False,
    ) -> None:
        self.pairs = pairs
        self.f_names = list(dict.fromkeys(f for f, _, _ in pairs))
        self.q_names = list(dict.fromkeys(q for _, q, _ in pairs))
        self.f_sess = ort_session(expose_tensors(reference, self.f_names), threads, optimize=optimize)
        self.q_sess = ort_session(expose_tensors(quantized, self.q_names), threads, optimize=optimize)

    def add(self, feed: dict[str, np.ndarray]) -> None:
        if not self.pairs:
            return
        ref = dict(zip(self.f_names, run_session(self.f_sess, self.f_names, feed), strict=True))
        got = dict(zip(self.q_names, run_session(self.q_sess, self.q_names, feed), strict=True))
        for f_name, q_name, stats in self.pairs:
            stats.add(ref[f_name], got[q_name])


class TensorStats:
    """Sums for SQNR, streamed sample by sample so no activation is kept."""

    def __init__(self) -> None:
        self.signal = self.noise = 0.0
        self.shape_mismatch = False

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            self.shape_mismatch = True
            return
        ref64 = ref.astype(np.float64)
        self.signal += float(np.sum(ref64 * ref64))
        self.noise += float(np.sum((ref64 - got) ** 2))

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal, self.noise)


class _OutputStats(TensorStats):
    def __init__(self) -> None:
        super().__init__()
        self.cosines: list[np.ndarray] = []
        self.max_abs = 0.0
        self.ref_top1: list[np.ndarray] = []
        self.got_top1: list[np.ndarray] = []
        self.classifier = True

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        super().add(ref, got)
        if self.shape_mismatch:
            raise QuantizeError(
                f"the quantized model returned an output of shape {got.shape} where the reference returned "
                f"{ref.shape}; pass the float model it was quantized from"
            )
        rows_ref = ref.reshape(ref.shape[0] if ref.ndim else 1, -1).astype(np.float64)
        rows_got = got.reshape(rows_ref.shape).astype(np.float64)
        self.cosines.append(_row_cosines(rows_ref, rows_got))
        self.max_abs = max(self.max_abs, float(np.max(np.abs(rows_ref - rows_got), initial=0.0)))
        self.classifier = self.classifier and ref.ndim == 2 and ref.shape[1] >= 2
        if self.classifier:
            self.ref_top1.append(ref.argmax(axis=1))
            self.got_top1.append(got.argmax(axis=1))

    def result(self, name: str, labels: np.ndarray | None) -> OutputFidelity:
        agreement = acc_float = acc_quant = None
        if self.classifier:
            ref, got = np.concatenate(self.ref_top1), np.concatenate(self.got_top1)
            agreement = float(np.mean(ref == got))
            if labels is not None:
                truth = _check_labels(labels, len(ref), name)
                acc_float, acc_quant = float(np.mean(ref == truth)), float(np.mean(got == truth))
        elif labels is not None:
            raise DataError(f"labels were given, but output '{name}' is not shaped (N, classes); drop labels=")
        cosine = float(np.mean(np.concatenate(self.cosines)))
        return OutputFidelity(name, self.sqnr_db, cosine, self.max_abs, agreement, acc_float, acc_quant)


def sqnr_db(signal: float, noise: float) -> float:
    """10*log10(signal / noise) from sums of squares; inf for no noise, -inf for noise on a zero signal."""
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _row_cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    ref_norm, got_norm = np.linalg.norm(ref, axis=1), np.linalg.norm(got, axis=1)
    norms = ref_norm * got_norm
    cosines = np.sum(ref * got, axis=1) / np.where(norms > 0, norms, 1.0)  # a zero row against a non-zero one: 0
    return np.where((ref_norm == 0) & (got_norm == 0), 1.0, cosines)


def _check_labels(labels: np.ndarray, rows: int, name: str) -> np.ndarray:
    truth = np.asarray(labels).reshape(-1)
    if len(truth) != rows:
        raise DataError(f"{len(truth)} labels for {rows} rows of output '{name}'; pass one label per sample")
    return truth


def layer_errors(reference: onnx.ModelProto, stats: Mapping[str, TensorStats]) -> tuple[LayerError, ...]:
    op_of = {out: node.op_type for node in reference.graph.node for out in node.output}
    return tuple(LayerError(t, op_of[t], s.sqnr_db) for t, s in stats.items() if not s.shape_mismatch)


def _as_proto(source: Model | onnx.ModelProto | str | Path, role: str) -> onnx.ModelProto:
    if isinstance(source, Model):
        return source.proto
    if isinstance(source, onnx.ModelProto):
        return source
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"{path}: no such {role} model file; check the path")
    try:
        return onnx.load(str(path))
    except (DecodeError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: the {role} model cannot be read ({exc}); pass an .onnx file") from None


def value_dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    shape = value.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim)


def input_specs(proto: onnx.ModelProto) -> dict[str, tuple[tuple[int | str, ...], np.dtype]]:
    initializers = {i.name for i in proto.graph.initializer}
    return {
        v.name: (value_dims(v), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)))
        for v in proto.graph.input
        if v.name not in initializers
    }


def _io_text(proto: onnx.ModelProto) -> tuple[str, str]:
    inputs = [f"{name} {_shape_text(dims)} {dtype.name}" for name, (dims, dtype) in input_specs(proto).items()]
    outputs = [f"{o.name} {_shape_text(value_dims(o))}" for o in proto.graph.output]
    return ", ".join(inputs), ", ".join(outputs)


def _shape_text(dims: tuple[int | str, ...]) -> str:
    return "x".join(str(d) for d in dims) or "scalar"


def _check_interfaces(quantized: onnx.ModelProto, reference: onnx.ModelProto) -> dict[str, tuple]:
    """The quantized model must take and return what the reference does (QDQ models keep float I/O)."""
    for kind, got, want in zip(("inputs", "outputs"), _io_text(quantized), _io_text(reference), strict=True):
        if got != want:
            raise QuantizeError(
                f"the quantized model's {kind} ({got}) differ from the reference's ({want}); "
                "pass the float model it was quantized from"
            )
    return input_specs(reference)


def feed_for(sample: Mapping[str, np.ndarray], inputs: Mapping, index: int) -> dict[str, np.ndarray]:
    if not isinstance(sample, Mapping) or set(sample) != set(inputs):
        keys = ", ".join(sample) if isinstance(sample, Mapping) else type(sample).__name__
        raise DataError(f"sample {index} has inputs ({keys}); the model takes ({', '.join(inputs)})")
    return {name: _input_value(sample[name], name, dims, dtype, index) for name, (dims, dtype) in inputs.items()}


def _input_value(value: Any, name: str, dims: tuple[int | str, ...], dtype: np.dtype, index: int) -> np.ndarray:
    array = np.asarray(value)
    where = f"sample {index}: input '{name}'"
    if dtype.kind == "f" and array.dtype.kind != "f":
        raise DataError(f"{where} is {array.dtype}, the model takes {dtype}; preprocess it as for the float model")
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    if len(fixed) != array.ndim or any(d not in (None, s) for d, s in zip(fixed, array.shape, strict=True)):
        raise DataError(f"{where} has shape {array.shape}, the model takes {_shape_text(dims)}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise DataError(f"{where} holds NaN or inf; clean the evaluation data")
    return np.ascontiguousarray(array, dtype=dtype)


def ort_session(proto: onnx.ModelProto, threads: int, *, optimize: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime cannot load the model ({first}); check it with onnx.checker") from None


def run_session(sess: ort.InferenceSession, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return [np.asarray(v) for v in sess.run(names, feed)]
    except Exception as exc:  # ORT raises its own pybind error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"onnxruntime failed on a sample ({first}); check the evaluation data") from None


def _elem_types(proto: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        inferred = proto  # custom-domain ops: keep the types the file already states
    values = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    return {v.name: v.type.tensor_type.elem_type for v in values if v.type.HasField("tensor_type")}


def expose_tensors(proto: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of `proto` whose graph outputs are `tensors`, so one run returns them all."""
    types = _elem_types(proto)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    del exposed.graph.output[:]
    for name in dict.fromkeys(tensors):
        if name not in types:
            raise UsageError(
                f"the model has no tensor '{name}' with a known type; name a graph output or a node output"
            )
        exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return exposed


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value
