"""Quantization engines behind one small interface: each turns (float model, plan, calibration
data) into a QDQ ONNX model. The SDK owns the plan; the engines own the arithmetic.

- onnxruntime: onnxruntime.quantization (quantize_static QDQ, quantize_dynamic, float16). Static
  activation ranges come from edge_sdk.ranges (least squared error by default), handed to
  quantize_static as its calibration cache.
- nncf: nncf.quantize on the ONNX backend, which calibrates itself. Its telemetry is stubbed
  before import (NNCF_CI).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from edge_sdk.errors import DependencyError, QuantizeError
from edge_sdk.model import Model
from edge_sdk.plan import QuantPlan
from edge_sdk.profile import Precision
from edge_sdk.ranges import RangeMethod, Ranges, activation_ranges, write_calibration_cache

log = logging.getLogger(__name__)

Samples = Sequence[Mapping[str, np.ndarray]]


class EngineName(str, Enum):
    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    NNCF = "nncf"


class Engine(Protocol):
    name: EngineName
    recommended_samples: int

    def applies(self, plan: QuantPlan) -> str | None:
        """None when the engine can serve the plan, else the reason it cannot."""

    def calibrate(self, model: Model, plan: QuantPlan, data: Samples, method: RangeMethod) -> Ranges | None:
        """The activation ranges quantize() will use, or None when the engine calibrates inside
        quantize(). Computed once, they serve every quantization of the same model and data (the
        accuracy fallback quantizes many times)."""

    def quantize(self, model: Model, plan: QuantPlan, data: Samples, ranges: Ranges | None) -> onnx.ModelProto: ...


def _activation_type(plan: QuantPlan):
    """Asymmetric int8 and uint8 activations are the same grid (zero point shifted by 128), and
    ONNX Runtime's x86 and Arm kernels are faster with uint8 activations (u8s8): an ONNX artifact
    uses uint8 for them. Symmetric activations keep their signedness."""
    from onnxruntime.quantization import QuantType

    spec = plan.activations
    if plan.precision is Precision.INT8 and spec.dtype == "int8" and not spec.symmetric:
        return QuantType.QUInt8
    return _ort_type(spec.dtype, plan.precision)


def _ort_type(dtype: str, precision: Precision):
    from onnxruntime.quantization import QuantType

    if precision is Precision.INT16X8:  # 16-bit activations, keeping the target's signedness
        return QuantType.QUInt16 if dtype.startswith("u") else QuantType.QInt16
    return {
        "int8": QuantType.QInt8,
        "uint8": QuantType.QUInt8,
        "int16": QuantType.QInt16,
        "uint16": QuantType.QUInt16,
    }.get(dtype, QuantType.QInt8)


def _reader(samples: Iterable[Mapping[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self):
            sample = next(self._it, None)
            return None if sample is None else {k: np.asarray(v, np.float32) for k, v in sample.items()}

    return Reader()


class OnnxRuntimeEngine:
    name = EngineName.ONNXRUNTIME
    recommended_samples = 100  # MinMax has no minimum; 100 is what ORT's examples calibrate with

    def applies(self, plan: QuantPlan) -> str | None:
        return None

    def calibrate(self, model: Model, plan: QuantPlan, data: Samples, method: RangeMethod) -> Ranges | None:
        if plan.precision not in (Precision.INT8, Precision.INT16X8) or plan.qnn:
            return None  # no activation ranges, or the QNN rules' own calibration
        levels = 255 if plan.precision is Precision.INT8 else 65535
        return activation_ranges(model.proto, data, method, levels=levels, symmetric=plan.activations.symmetric)

    def quantize(self, model: Model, plan: QuantPlan, data: Samples, ranges: Ranges | None) -> onnx.ModelProto:
        if plan.precision is Precision.FP16:
            return _float16(model)
        with tempfile.TemporaryDirectory() as tmp:
            # ORT saves a ModelProto input with external data, rewriting its tensors in place: hand it a file
            source, out = Path(tmp) / "float.onnx", Path(tmp) / "q.onnx"
            onnx.save(model.proto, source)
            excluded = [f.node for f in plan.float_nodes]
            if plan.precision is Precision.DYNAMIC_INT8:
                _ort_dynamic(source, out, plan, excluded)
            elif plan.qnn:
                _ort_qnn(source, out, plan, excluded, data)
            else:
                if ranges is None:
                    ranges = self.calibrate(model, plan, data, RangeMethod.MSE)
                cache = Path(tmp) / "ranges.json"
                write_calibration_cache(ranges or {}, cache)
                _ort_static(source, out, plan, excluded, cache)
            return onnx.load(str(out))


def _ort_static(source: Path, out: Path, plan: QuantPlan, excluded: list[str], ranges: Path) -> None:
    """quantize_static with the activation ranges of the calibration cache `ranges` (no calibration pass)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    options = {"WeightSymmetric": plan.weights.symmetric, "ActivationSymmetric": plan.activations.symmetric}
    try:
        with _quiet_root_logger():
            quantize_static(
                source,
                out,
                None,
                calibration_cache_path=ranges,
                quant_format=QuantFormat.QDQ,
                per_channel=plan.weights.per_channel,
                activation_type=_activation_type(plan),
                weight_type=_ort_type(plan.weights.dtype, Precision.INT8),
                nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=options,
            )
    except Exception as exc:  # ORT raises many types; the user needs one line
        raise QuantizeError(f"onnxruntime quantize_static failed: {_first_line(exc)}") from None


def _ort_qnn(source: Path, out: Path, plan: QuantPlan, excluded: list[str], data: Samples) -> None:
    """ONNX Runtime's QNN EP has its own QDQ rules (get_qnn_qdq_config): fixed Sigmoid/Tanh ranges,
    16-bit handling, the per-channel axes the HTP accepts."""
    from onnxruntime.quantization import quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    try:
        with _quiet_root_logger():
            config = get_qnn_qdq_config(
                source,
                _reader(data),
                activation_type=_activation_type(plan),
                weight_type=_ort_type(plan.weights.dtype, Precision.INT8),
                per_channel=plan.weights.per_channel,
                weight_symmetric=plan.weights.symmetric,
                nodes_to_exclude=excluded,
            )
            quantize(source, out, config)
    except Exception as exc:  # ORT raises many types; the user needs one line
        raise QuantizeError(f"onnxruntime QNN QDQ quantization failed: {_first_line(exc)}") from None


def _ort_dynamic(source: Path, out: Path, plan: QuantPlan, excluded: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet_root_logger():
            quantize_dynamic(
                source,
                out,
                per_channel=plan.weights.per_channel,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            )
    except Exception as exc:
        raise QuantizeError(f"onnxruntime quantize_dynamic failed: {_first_line(exc)}") from None


def _float16(model: Model) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: the model still takes and returns float32, as the float model did
    return convert_float_to_float16(_copy(model.proto), keep_io_types=True, disable_shape_infer=True)


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Engines edit the protos they get (fp16 conversion in place, NNCF metadata): give them a copy."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


class NncfEngine:
    name = EngineName.NNCF
    recommended_samples = 300  # nncf.quantize's default subset_size

    def applies(self, plan: QuantPlan) -> str | None:
        if plan.precision is not Precision.INT8:
            return f"nncf's ONNX backend quantizes int8 only, not {plan.precision.value}"
        if plan.qnn:
            return "nncf does not apply the QNN EP's QDQ rules"
        return None

    def calibrate(self, model: Model, plan: QuantPlan, data: Samples, method: RangeMethod) -> Ranges | None:
        return None  # nncf.quantize collects its own statistics

    def quantize(self, model: Model, plan: QuantPlan, data: Samples, ranges: Ranges | None) -> onnx.ModelProto:
        nncf = _import_nncf()
        preset = nncf.QuantizationPreset.PERFORMANCE if plan.activations.symmetric else nncf.QuantizationPreset.MIXED
        ignored = nncf.IgnoredScope(names=[f.node for f in plan.float_nodes], validate=False)
        samples = [{k: np.asarray(v, np.float32) for k, v in s.items()} for s in data]
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            OverflowFix,
            QuantizationParameters,
        )

        # TFLite kernels and ORT's QLinearConv take one activation scale per tensor; NNCF's CPU
        # config would otherwise quantize depthwise inputs per channel, which neither can run.
        # overflow_fix: NNCF's default puts the first layer's weights on a 7-bit grid, a workaround for
        # x86 hosts without VNNI; an int8 device has no such overflow, and it costs 2 dB on EfficientNet-Lite0.
        advanced = AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.DISABLE,
            activations_quantization_params=QuantizationParameters(per_channel=False),
            weights_quantization_params=QuantizationParameters(per_channel=plan.weights.per_channel),
        )
        try:  # NNCF draws progress bars on stdout; the library prints nothing (and --json needs stdout)
            with contextlib.redirect_stdout(io.StringIO()):
                return nncf.quantize(
                    _copy(model.proto),
                    nncf.Dataset(samples),
                    preset=preset,
                    subset_size=len(samples),
                    ignored_scope=ignored,
                    advanced_parameters=advanced,
                )
        except Exception as exc:  # NNCF raises many types
            raise QuantizeError(f"nncf.quantize failed: {_first_line(exc)}") from None


def _import_nncf():
    # NNCF_CI makes NNCF replace its telemetry client with a stub at import (nncf/telemetry/wrapper.py),
    # and CI keeps openvino_telemetry from writing its client-id files under ~/intel: no network, no files.
    os.environ.setdefault("NNCF_CI", "1")
    os.environ.setdefault("CI", "true")
    try:
        import nncf
    except ImportError:
        raise DependencyError("the nncf engine needs nncf: pip install 'edge-sdk[nncf]'") from None
    logging.getLogger("nncf").setLevel(logging.ERROR)
    return nncf


@contextmanager
def _quiet_root_logger():
    """ORT's quantizer warns on the root logger ("Please consider pre-processing": our loader did)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


ENGINES: dict[EngineName, Engine] = {
    EngineName.ONNXRUNTIME: OnnxRuntimeEngine(),
    EngineName.NNCF: NncfEngine(),
}
