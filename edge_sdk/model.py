"""Load a model: an ONNX file, an in-memory ModelProto or a torch.nn.Module (torch extra).

The result is validated, has static shapes everywhere, is simplified by onnxslim (constant
folding, BatchNorm folded into Conv, dead nodes removed) and carries full shape information.
onnxslim was chosen because it is pure Python on top of onnx (it runs on a Raspberry Pi), is
maintained and used by Ultralytics' exporters, and keeps node names; ONNX Runtime's offline
optimizer would tie the saved graph to ORT's own fusions and naming.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from edge_sdk.errors import DependencyError, DynamicShapeError, ModelError, UsageError

log = logging.getLogger(__name__)

OPSET_MIN, OPSET_MAX = 13, 21
OPSET_UPGRADE_FROM = 7  # older opsets are upgraded to OPSET_MIN with onnx.version_converter
TORCH_EXPORT_OPSET = 18


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name


@dataclass(frozen=True)
class Model:
    """A loaded model. `proto` is the simplified graph with static shapes; treat it as read-only."""

    proto: onnx.ModelProto
    name: str
    source: str
    sha256: str
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    passes: tuple[str, ...]


def load_model(
    source: str | Path | onnx.ModelProto | Any,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: tuple | None = None,
    simplify: bool = True,
) -> Model:
    """Load, validate and simplify a model.

    `input_shapes` fixes dynamic input dims (`{"images": (1, 3, 224, 224)}`); a dynamic input
    without it is a DynamicShapeError. A torch module needs `example_inputs`.
    """
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)  # shapes are fixed in place; the caller's proto stays as it was
        name, origin, raw = source.graph.name or "model", "<ModelProto>", None
    elif isinstance(source, str | Path):
        path = Path(source)
        proto, raw = _read_onnx(path)
        name, origin = path.stem, str(path)
    elif _is_torch_module(source):
        proto = _export_torch(source, example_inputs)
        name, origin, raw = type(source).__name__, f"<torch {type(source).__name__}>", None
    else:
        raise UsageError(
            f"cannot load a model from {type(source).__name__}; pass an .onnx path, "
            "an onnx.ModelProto or a torch.nn.Module"
        )
    digest = hashlib.sha256(raw or proto.SerializeToString(deterministic=True)).hexdigest()
    opset = _check_opset(proto, origin)
    _check_valid(proto, origin)
    passes: tuple[str, ...] = ()
    if opset < OPSET_MIN:
        proto = _upgrade_opset(proto, opset, origin)
        passes = (f"opset {opset} -> {OPSET_MIN} (onnx.version_converter)",)
    _fix_input_shapes(proto, dict(input_shapes or {}), origin)
    if simplify:
        proto, simplified = _simplify(proto, origin)
        passes += simplified
    proto = _infer_shapes(proto, origin)
    return Model(
        proto=proto,
        name=name,
        source=origin,
        sha256=digest,
        opset=opset,
        inputs=tuple(_spec(v) for v in _graph_inputs(proto)),
        outputs=tuple(_spec(v) for v in proto.graph.output),
        passes=passes,
    )


def _read_onnx(path: Path) -> tuple[onnx.ModelProto, bytes]:
    if not path.exists():
        raise ModelError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory; pass the .onnx file inside it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    if not data:
        raise ModelError(f"{path}: the file is empty; export the model again")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelError(_unparsable(path, data)) from None
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise ModelError(
            f"{path}: not an ONNX model (no graph or opset); export it with torch.onnx.export or another ONNX exporter"
        ) from None
    _load_external_data(proto, path)
    return proto, data


def _unparsable(path: Path, data: bytes) -> str:
    # An ONNX file starts with field 1 (ir_version, varint): byte 0x08 then a small version.
    if len(data) > 2 and data[0] == 0x08 and 3 <= data[1] <= 20:
        return (
            f"{path}: the ONNX file is truncated or corrupt ({len(data)} bytes, protobuf parsing "
            "failed); copy or export it again"
        )
    return f"{path}: not an ONNX file (protobuf parsing failed); pass a .onnx model"


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    base = path.parent.resolve()
    for tensor in external_data_helper._get_all_tensors(proto):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        location = (base / info.location).resolve()
        if base not in location.parents:
            raise ModelError(
                f"{path}: external data location '{info.location}' points outside the model's "
                "folder; refusing to read it"
            )
        if not location.is_file():
            raise ModelError(
                f"{path}: external data file '{info.location}' is missing (expected at "
                f"{location}); copy it next to the model"
            )
    try:
        external_data_helper.load_external_data_for_model(proto, str(base))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: external data cannot be read ({exc}); copy it again with the model") from None


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


def _export_torch(module: Any, example_inputs: tuple | None) -> onnx.ModelProto:
    try:
        import torch
    except ImportError:
        raise DependencyError("loading a torch module needs torch: pip install 'edge-sdk[torch]'") from None
    if example_inputs is None:
        raise UsageError("a torch module needs example_inputs=(tensor, ...) with the input shapes")
    module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(
                module,
                tuple(example_inputs),
                str(out),
                opset_version=TORCH_EXPORT_OPSET,
                dynamo=True,
                external_data=False,
            )
        except ImportError as exc:
            raise DependencyError(f"torch.onnx.export needs {exc.name}: pip install 'edge-sdk[torch]'") from None
        except Exception as exc:  # torch raises many types; the user needs the first line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"torch.onnx.export failed: {first}") from None
        return onnx.load(str(out))


def _check_opset(proto: onnx.ModelProto, origin: str) -> int:
    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ModelError(f"{origin}: the model imports no standard ONNX opset; re-export it")
    opset = versions[0]
    if opset < OPSET_UPGRADE_FROM:
        raise ModelError(
            f"{origin}: opset {opset} is older than {OPSET_UPGRADE_FROM}; re-export with opset_version="
            f"{OPSET_MIN} or newer"
        )
    if opset > OPSET_MAX:
        raise ModelError(
            f"{origin}: opset {opset} is newer than {OPSET_MAX}; re-export with opset_version="
            f"{OPSET_MAX} (or convert it down with onnx.version_converter)"
        )
    return opset


def _upgrade_opset(proto: onnx.ModelProto, opset: int, origin: str) -> onnx.ModelProto:
    """Opsets OPSET_UPGRADE_FROM..12 (PaddleOCR, older exporters) are converted up to OPSET_MIN."""
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(proto, OPSET_MIN)
    except Exception as exc:  # the converter raises RuntimeError and C++ errors of several kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{origin}: opset {opset} could not be upgraded to {OPSET_MIN} ({first}); re-export with "
            f"opset_version={OPSET_MIN} or newer"
        ) from None
    return upgraded


def _check_valid(proto: onnx.ModelProto, origin: str) -> None:
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{origin}: invalid ONNX model ({first}); re-export it") from None


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return [None]
    dims: list[int | str | None] = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)
        else:
            dims.append(d.dim_param or None)
    return dims


def _fix_input_shapes(proto: onnx.ModelProto, shapes: dict[str, Sequence[int]], origin: str) -> None:
    inputs = {v.name: v for v in _graph_inputs(proto)}
    for name in shapes:
        if name not in inputs:
            raise UsageError(f"--input-shape names '{name}', but the model's inputs are: {', '.join(inputs)}")
    for name, value in inputs.items():
        dims = _dims(value)
        if name in shapes:
            _set_shape(value, dims, tuple(int(s) for s in shapes[name]), origin)
        elif any(not isinstance(d, int) for d in dims):
            shown = "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"
            placeholders = ["1", "C", "H", "W"] if len(dims) == 4 else ["1"] + ["N"] * (len(dims) - 1)
            guess = "x".join(str(d) if isinstance(d, int) else placeholders[i] for i, d in enumerate(dims))
            raise DynamicShapeError(
                f"{origin}: input '{name}' has a dynamic shape {shown}; fix it with "
                f"--input-shape {name}={guess} (input_shapes= in Python)"
            )


def _set_shape(value: onnx.ValueInfoProto, dims: list, shape: tuple[int, ...], origin: str) -> None:
    if any(s <= 0 for s in shape):
        raise UsageError(f"--input-shape for '{value.name}' must be positive integers, got {shape}")
    if dims != [None] and len(dims) != len(shape):
        raise UsageError(
            f"{origin}: input '{value.name}' has rank {len(dims)} but --input-shape gives {len(shape)} dims"
        )
    for i, (d, s) in enumerate(zip(dims, shape, strict=False)):
        if isinstance(d, int) and d != s:
            raise UsageError(f"{origin}: input '{value.name}' dim {i} is fixed at {d}, but --input-shape gives {s}")
    tensor_shape = value.type.tensor_type.shape
    tensor_shape.ClearField("dim")
    for s in shape:
        tensor_shape.dim.add().dim_value = s


def _simplify(proto: onnx.ModelProto, origin: str) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    import onnxslim  # imported here: it is slow to import and only needed when loading

    before = Counter(n.op_type for n in proto.graph.node)
    try:
        slim = onnxslim.slim(proto)
    except Exception as exc:  # onnxslim raises assorted types on graphs it cannot fold
        log.warning("onnxslim could not simplify %s (%s); using the graph as it is", origin, exc)
        return proto, (f"not simplified: onnxslim failed ({type(exc).__name__})",)
    if slim is None:
        return proto, ("not simplified: onnxslim returned nothing",)
    after = Counter(n.op_type for n in slim.graph.node)
    passes = []
    for op in sorted(set(before) | set(after)):
        if before[op] != after[op]:
            passes.append(f"{op}: {before[op]} -> {after[op]}")
    return slim, tuple(passes)


def _infer_shapes(proto: onnx.ModelProto, origin: str) -> onnx.ModelProto:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{origin}: shape inference failed ({first}); check the model's input shapes") from None
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    for node in inferred.graph.node:
        for out in node.output:
            if not out:
                continue
            value = known.get(out)
            if value is None or any(not isinstance(d, int) for d in _dims(value)):
                raise DynamicShapeError(
                    f"{origin}: tensor '{out}' (output of {node.op_type} node '{node.name}') has no static "
                    "shape; edge-sdk needs static shapes: fix the input shapes or remove data-dependent ops"
                )
    return inferred


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    elem = value.type.tensor_type.elem_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name if elem else "unknown"
    return TensorSpec(name=value.name, shape=tuple(int(d) for d in _dims(value) if isinstance(d, int)), dtype=dtype)
