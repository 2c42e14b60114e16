"""The export stage: a loaded ONNX model -> a .tflite for a target, at the target's precision, verified
in LiteRT against the float model, written atomically with its manifest. Ethos-U targets also get the
Vela-compiled model and Vela's estimate.

    result = export_tflite("model.onnx", "rpi5", precision="int8", calibration="calibration/demo.toml",
                           output=Path("out/"))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.artifact import Artifact, write_artifact
from edge_sdk.calibration import CalibrationData, check_calibration, load_calibration, recipe_of
from edge_sdk.errors import UsageError
from edge_sdk.fallback import Budget, FallbackReport
from edge_sdk.lower.io_types import float_io
from edge_sdk.lower.lower import Lowered, lower_to_tflite
from edge_sdk.model import Model, load_model
from edge_sdk.plan import STATIC_PRECISIONS, check_float
from edge_sdk.prepass import correct_bias, round_weights
from edge_sdk.preprocessing import DeployInfo, deploy_info
from edge_sdk.profile import Kind, Precision, TargetProfile
from edge_sdk.quantize import BIAS_SAMPLES, VERIFY_SAMPLES, Rounding, Speed, resolve_rounding
from edge_sdk.serialize import to_jsonable
from edge_sdk.targets import load_target
from edge_sdk.tflite_fallback import FallbackJob, tflite_fallback
from edge_sdk.tflite_quantize import TFLITE_PRECISIONS, quantize_tflite
from edge_sdk.tflite_verify import verify_tflite
from edge_sdk.verify import Fidelity
from edge_sdk.xnnpack import DelegateSplit, delegate_split, litert_latency_ms

TFLITE_FORMATS = ("tflite", "vela-tflite", "edgetpu-tflite")
RANDOM_SAMPLES = 8  # fp32/fp16 without data: checked on this many seeded random inputs
Stage = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    target: str
    precision: Precision
    nhwc_io: bool
    io_dtype: str  # "float32" or the quantized I/O type ("int8", "int16")
    layout_transposes: int
    op_counts: dict[str, int]
    fidelity: Fidelity
    verified_on: str
    prepass: str | None
    seconds: float
    warnings: tuple[str, ...]
    speed: tuple[Speed, ...] = ()  # LiteRT on this host: the float model against the exported one
    xnnpack: DelegateSplit | None = None
    vela: Any = None  # edge_sdk.vela.VelaResult for Ethos-U targets
    fallback: FallbackReport | None = None  # the layers kept in float for an accuracy budget
    artifact: Artifact | None = None
    flatbuffer: bytes = field(default=b"", repr=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def export_tflite(
    model: Model | str | Path,
    target: TargetProfile | str,
    *,
    precision: Precision | str | None = None,
    calibration: Any = None,
    preprocess: str | None = None,
    evaluation: Any = None,
    rounding: Rounding = Rounding.BIAS_CORRECT,
    nchw_io: bool = False,
    int8_io: bool | None = None,
    output: Path | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    targets_dirs: Sequence[str | Path] = (),
    speed_threads: Sequence[int] = (1, 2),
    on_stage: Stage | None = None,
    deploy: DeployInfo | None = None,
    max_drop: float | None = None,
    min_sqnr_db: float | None = None,
) -> ExportResult:
    """Lower, quantize (int8, int16x8, dynamic-int8) or store fp16/fp32, verify in LiteRT, write.

    `int8_io` defaults to the target's kind: quantized I/O for NPUs, float I/O for CPUs and GPUs.
    `deploy` (the preprocessing and class names for the manifest) defaults to what `calibration` says.
    With `max_drop` (points) or `min_sqnr_db`, the fewest layers stay in float that the budget needs."""
    started = time.perf_counter()
    stage = on_stage or (lambda _: None)
    profile = target if isinstance(target, TargetProfile) else load_target(target, targets_dirs)
    chosen = _precision(profile, precision)
    budget = Budget(max_drop, min_sqnr_db) if max_drop is not None or min_sqnr_db is not None else None
    loaded = model if isinstance(model, Model) else load_model(model, input_shapes=input_shapes)
    check_float(loaded)
    calib, warnings = _calibration(loaded, chosen, calibration, preprocess)
    prepared, prepass = _prepass(loaded, chosen, calib, Rounding(rounding), stage)
    stage("lowering to TFLite")
    lowered = lower_to_tflite(
        prepared, nchw_io=nchw_io, fp16=chosen is Precision.FP16, int8_friendly=chosen is Precision.INT8
    )
    quantized_io = profile.kind is Kind.NPU if int8_io is None else int8_io
    requantize = _quantizer(lowered, chosen, calib, quantized_io)
    if chosen in TFLITE_PRECISIONS:
        stage(f"quantizing to {chosen.value} with ai-edge-quantizer")
    flatbuffer = requantize(())
    stage("verifying in LiteRT against the float model")
    data, verified_on, labels = _verification_data(loaded, calib, evaluation, preprocess)
    fidelity = verify_tflite(flatbuffer, loaded, data, labels=labels)
    fallback = None
    if budget is not None and chosen in STATIC_PRECISIONS:
        stage(f"accuracy fallback: {budget.describe()}")
        job = FallbackJob(loaded, data, labels, requantize)
        flatbuffer, fidelity, fallback = tflite_fallback(job, flatbuffer, fidelity, budget)
    elif budget is not None and not budget.holds(fidelity):
        warnings.append(f"{budget.describe()} does not hold at {chosen.value}, and only int8/int16x8 can fall back")
    vela = _vela(flatbuffer, profile, stage) if profile.deploy.formats == ("vela-tflite",) else None
    warnings += _notes(profile, lowered)
    speed: list[Speed] = []
    split = None
    if chosen in TFLITE_PRECISIONS and Kind(profile.kind) is Kind.CPU:
        stage("timing float and quantized models in LiteRT")
        speed, split = _speed(lowered.flatbuffer, flatbuffer, speed_threads)
        warnings += _speed_warnings(speed, split)
    result = ExportResult(
        target=profile.id,
        precision=chosen,
        nhwc_io=lowered.nhwc_io,
        io_dtype=_io_dtype(flatbuffer),
        layout_transposes=lowered.layout_transposes,
        op_counts=lowered.op_counts,
        fidelity=fidelity,
        verified_on=verified_on,
        prepass=prepass,
        seconds=time.perf_counter() - started,
        warnings=tuple(warnings),
        speed=tuple(speed),
        xnnpack=split,
        vela=vela,
        fallback=fallback,
        flatbuffer=flatbuffer,
    )
    if output is None:
        return result
    return _write(
        result, loaded, output, deploy or deploy_info(recipe_of(calibration, loaded, preprocess=preprocess), loaded)
    )


def _quantizer(
    lowered: Lowered, precision: Precision, calib: CalibrationData | None, quantized_io: bool
) -> Callable[[Sequence[str]], bytes]:
    """float tensor names -> the .tflite at `precision` with those ops in float (the lowered model
    itself for fp32/fp16); float I/O unless the target takes quantized I/O."""
    if precision not in TFLITE_PRECISIONS:
        return lambda _float_tensors: lowered.flatbuffer
    samples = calib if calib is None or not lowered.nhwc_io else calib.to_nhwc()  # in the .tflite's layout

    def build(float_tensors: Sequence[str]) -> bytes:
        flatbuffer = quantize_tflite(lowered.flatbuffer, precision, samples, float_tensors=float_tensors)
        return flatbuffer if quantized_io or precision is Precision.DYNAMIC_INT8 else float_io(flatbuffer)

    return build


def _precision(profile: TargetProfile, precision: Precision | str | None) -> Precision:
    formats = [f for f in profile.deploy.formats if f in TFLITE_FORMATS]
    if not formats:
        raise UsageError(
            f"target '{profile.id}' deploys {', '.join(profile.deploy.formats)}, not TFLite; "
            "use `edge-sdk quantize` for ONNX targets or pick a TFLite target (`edge-sdk targets list`)"
        )
    chosen = Precision(precision) if precision else profile.deploy.default_precision
    if chosen not in profile.deploy.precisions:
        supported = ", ".join(p.value for p in profile.deploy.precisions)
        raise UsageError(f"target '{profile.id}' does not run {chosen.value}; it supports {supported}")
    return chosen


def _calibration(
    model: Model, precision: Precision, calibration: Any, preprocess: str | None
) -> tuple[CalibrationData | None, list[str]]:
    if calibration is None:
        if precision in STATIC_PRECISIONS:
            raise UsageError(
                f"{precision.value} export needs calibration data: pass --calib (a recipe, folder or .npz)"
            )
        return None, []
    calib = load_calibration(calibration, model, preprocess=preprocess)
    return calib, check_calibration(calib, model)


def _prepass(
    model: Model, precision: Precision, calib: CalibrationData | None, rounding: Rounding, stage: Stage
) -> tuple[Model, str | None]:
    """TFLite's int8 weights are per channel, symmetric, narrow range: round onto that grid here."""
    if calib is None or precision not in STATIC_PRECISIONS:
        return model, None
    rounding = resolve_rounding(rounding, model, len(calib))
    if rounding is Rounding.NEAREST:
        return model, None
    stage(f"weight pre-pass: {rounding.value}")
    if rounding is Rounding.GPTQ:
        prepared, report = round_weights(model, list(calib), per_channel=True, narrow_range=True)
    else:
        prepared, report = correct_bias(model, list(calib.take(BIAS_SAMPLES)), per_channel=True, narrow_range=True)
    return prepared, report.detail


def _verification_data(model: Model, calib: CalibrationData | None, evaluation: Any, preprocess: str | None):
    if evaluation is not None:
        data = load_calibration(evaluation, model, split="evaluation", preprocess=preprocess)
        return list(data), f"evaluation data ({len(data)} samples, {data.source})", data.labels
    if calib is not None:
        held = calib.take(VERIFY_SAMPLES)
        return list(held), f"{len(held)} calibration samples (pass evaluation data for an independent check)", None
    rng = np.random.default_rng(0)
    samples = [{s.name: _random(rng, s.shape, np.dtype(s.dtype)) for s in model.inputs} for _ in range(RANDOM_SAMPLES)]
    return samples, f"{RANDOM_SAMPLES} seeded random inputs (pass --calib or --data for real ones)", None


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)


def _vela(flatbuffer: bytes, profile: TargetProfile, stage: Stage) -> Any:
    from edge_sdk.vela import compile_for_ethos_u

    stage(f"compiling for {profile.id} with Vela")
    return compile_for_ethos_u(flatbuffer, profile)


def _notes(profile: TargetProfile, lowered: Lowered) -> list[str]:
    notes = []
    if lowered.layout_transposes:
        notes.append(
            f"{lowered.layout_transposes} layout TRANSPOSE op(s) remain where the model's semantics need NCHW order "
            "(a reshape of a feature map, say); NPUs may run them on the CPU"
        )
    if "edgetpu-tflite" in profile.deploy.formats:
        notes.append("the Edge TPU runs this int8 model after `edgetpu_compiler` (not bundled) compiles it")
    return notes


def _speed(float_model: bytes, exported: bytes, threads: Sequence[int]) -> tuple[list[Speed], DelegateSplit]:
    """Quantized TFLite is only worth it where XNNPACK runs it faster than float: time both here."""
    timings = [
        Speed(n, litert_latency_ms(float_model, threads=n), litert_latency_ms(exported, threads=n)) for n in threads
    ]
    return timings, delegate_split(exported)


def _speed_warnings(speed: list[Speed], split: DelegateSplit) -> list[str]:
    slow = [s for s in speed if s.quantized_ms >= s.float_ms]
    if not slow:
        return []
    timings = ", ".join(s.against_float for s in slow)
    return [f"the exported model is not faster than float in LiteRT here ({timings}): {split.text}"]


def _io_dtype(flatbuffer: bytes) -> str:
    from edge_sdk.tflite_verify import litert_interpreter

    details = litert_interpreter(flatbuffer).get_input_details()
    return str(np.dtype(details[0]["dtype"])) if details else "float32"


def _write(result: ExportResult, model: Model, output: Path, deploy: DeployInfo) -> ExportResult:
    from dataclasses import replace

    path = output if output.suffix == ".tflite" else output / f"{model.name}.{result.precision.value}.tflite"
    manifest = {
        "kind": "tflite",
        "source_model": {"name": model.name, "sha256": model.sha256},
        "preprocess": deploy.preprocess,
        "labels": deploy.labels or None,
        **{k: v for k, v in result.to_dict().items() if k not in ("artifact", "seconds", "vela")},
    }
    data = result.flatbuffer
    if result.vela is not None:
        manifest["vela"] = {k: v for k, v in to_jsonable(result.vela).items() if k != "optimized_tflite"}
        data = result.vela.optimized_tflite
        path = path.with_name(path.stem + "_vela.tflite")
    return replace(result, artifact=write_artifact(path, data, manifest))
