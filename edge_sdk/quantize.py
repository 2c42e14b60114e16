"""quantize(model, target, calibration): plan with the target's rules, calibrate, quantize with
the engines that apply, judge each by verification (and speed), fall back to float where the
accuracy budget needs it, and write the artifact with its manifest."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import onnx

from edge_sdk.artifact import Artifact, model_bytes, write_artifact
from edge_sdk.calibration import CalibrationData, check_calibration, load_calibration
from edge_sdk.engines import ENGINES, Engine, EngineName
from edge_sdk.errors import UsageError
from edge_sdk.fallback import Budget, FallbackReport, keep_fewest_in_float, rank_layers
from edge_sdk.model import Model, load_model
from edge_sdk.plan import STATIC_PRECISIONS, QuantPlan, plan
from edge_sdk.prepass import correct_bias, gptq_macs, round_weights
from edge_sdk.profile import Precision, TargetProfile
from edge_sdk.qdq import remove_redundant_activations, unfused_compute_nodes
from edge_sdk.ranges import RangeMethod, Ranges
from edge_sdk.rewrite import div_to_mul, fuse_hard_swish
from edge_sdk.serialize import to_jsonable
from edge_sdk.targets import load_target
from edge_sdk.timing import op_class_ms, ort_latency_ms
from edge_sdk.verify import Fidelity, verify

Stage = Callable[[str], None]
RANKING_SAMPLES = 32  # per-layer errors for the fallback ranking: enough to order layers
HOLDOUT_FRACTION, HOLDOUT_MIN = 0.2, 16  # calibration samples held out to choose the engine
BIAS_SAMPLES = 8  # calibration samples whose means drive bias correction (conv means average H x W x N values)
VERIFY_SAMPLES = 16  # without evaluation data, the result is checked on this many calibration samples


GPTQ_AUTO_MACS = 4 * 10**9  # auto rounding takes GPTQ below this covariance work (a few seconds on 2 cores)


class Rounding(str, Enum):
    """How weights meet the int8 grid before the engine quantizes them (edge_sdk.prepass)."""

    AUTO = "auto"  # gptq where it is cheap (GPTQ_AUTO_MACS), else bias-correct
    NEAREST = "nearest"  # the engine's own round-to-nearest
    BIAS_CORRECT = "bias-correct"  # nearest, with each bias corrected for the mean shift it causes
    GPTQ = "gptq"  # GPTQ rounding plus bias correction: best fidelity, slowest


@dataclass(frozen=True)
class _Job:
    reference: Model  # the float model every result is judged against
    prepared: Model  # what the engines quantize: the reference after the weight pre-pass
    calib: CalibrationData
    selection: CalibrationData
    ranges: RangeMethod  # how the engines that take activation ranges from edge-sdk get them


@dataclass(frozen=True)
class Candidate:
    engine: EngineName
    fidelity: Fidelity
    seconds: float
    removed_activations: int  # Relu/Clip folded into the following QuantizeLinear
    unfused_nodes: int  # compute nodes ONNX Runtime cannot run as integer kernels


@dataclass(frozen=True)
class Speed:
    threads: int
    float_ms: float
    quantized_ms: float

    @property
    def against_float(self) -> str:
        return f"{self.threads} thread(s) {self.quantized_ms:.2f} ms vs {self.float_ms:.2f} ms"


@dataclass(frozen=True)
class QuantizeResult:
    plan: QuantPlan
    engine: EngineName
    fidelity: Fidelity
    candidates: tuple[Candidate, ...]
    selected_on: str
    calibration: str
    prepass: str | None
    ranges: str  # how the kept engine's activation ranges were chosen
    fallback: FallbackReport | None
    speed: tuple[Speed, ...]
    warnings: tuple[str, ...]
    artifact: Artifact | None
    model: onnx.ModelProto = field(repr=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def quantize(
    model: Model | str | Path,
    target: TargetProfile | str,
    calibration: Any,
    *,
    precision: Precision | None = None,
    engine: EngineName = EngineName.ONNXRUNTIME,
    rounding: Rounding = Rounding.AUTO,
    ranges: RangeMethod = RangeMethod.MSE,
    evaluation: Any = None,
    preprocess: str | None = None,
    max_drop: float | None = None,
    min_sqnr_db: float | None = None,
    ignore: Sequence[str] = (),
    output: Path | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    speed_threads: Sequence[int] = (1, 2),
    targets_dirs: Sequence[str | Path] = (),
    on_stage: Stage | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> QuantizeResult:
    """Quantize `model` for `target` with `calibration` data (a recipe, an image folder with a
    preprocessing, .npz/.npy or an iterable of {input: array}); see the README for the options."""
    stage = on_stage or (lambda _: None)
    profile = target if isinstance(target, TargetProfile) else load_target(target, targets_dirs)
    original = model if isinstance(model, Model) else load_model(model, input_shapes=input_shapes)
    loaded, _ = div_to_mul(fuse_hard_swish(original)[0])
    the_plan = plan(loaded, profile, precision=precision, ignore=ignore)
    engines = _engines(EngineName(engine), the_plan)
    budget = Budget(max_drop, min_sqnr_db) if max_drop is not None or min_sqnr_db is not None else None
    stage("loading calibration data")
    calib = load_calibration(calibration, loaded, preprocess=preprocess, progress=on_progress)
    warnings = check_calibration(calib, loaded)
    short = [e for e in engines if len(calib) < e.recommended_samples]
    if short:
        wants = ", ".join(f"{e.name.value} recommends {e.recommended_samples}" for e in short)
        warnings.append(f"only {len(calib)} calibration samples ({wants}); more give steadier ranges")
    calib, selection, selected_on = _selection_data(evaluation, calib, loaded, preprocess, len(engines))
    if budget is not None and budget.max_drop is not None and not _is_classifier(loaded):
        raise UsageError("--max-drop needs a classifier output (N, C); use --min-sqnr for this model")
    stage(f"weight pre-pass: {Rounding(rounding).value}")
    prepared, prepass = _prepare(loaded, calib, the_plan, Rounding(rounding))
    job = _Job(reference=loaded, prepared=prepared, calib=calib, selection=selection, ranges=RangeMethod(ranges))
    candidates, protos, calibrated = [], {}, {}
    for item in engines:
        stage(f"quantizing with {item.name.value}")
        candidate, proto, calibrated[item.name] = _run_engine(item, job, the_plan)
        candidates.append(candidate)
        protos[item.name] = proto
    best = max(candidates, key=lambda c: _score(c.fidelity))
    if len(candidates) > 1:
        others = ", ".join(f"{c.engine.value} {_summary(c.fidelity)}" for c in candidates if c is not best)
        warnings.append(f"kept {best.engine.value} ({_summary(best.fidelity)}) over {others}, on {selected_on}")
    final_plan, proto, fidelity, report = the_plan, protos[best.engine], best.fidelity, None
    if budget is not None:
        stage("accuracy fallback")
        final_plan, proto, fidelity, report = _fallback(
            ENGINES[best.engine], job, the_plan, budget, (proto, fidelity), calibrated[best.engine]
        )
    stage("timing float and quantized models")
    speed = _speed(original, proto, calib, speed_threads)  # against the model as the user gave it
    warnings += _speed_warnings(speed, original, proto, calib, final_plan)
    result = QuantizeResult(
        plan=final_plan,
        engine=best.engine,
        fidelity=fidelity,
        candidates=tuple(candidates),
        selected_on=selected_on,
        calibration=calib.source,
        prepass=prepass,
        ranges=_ranges_note(calibrated[best.engine], job.ranges),
        fallback=report,
        speed=tuple(speed),
        warnings=tuple(warnings),
        artifact=None,
        model=proto,
    )
    if output is not None:
        result = _write(result, loaded, profile, output)
    return result


def _engines(name: EngineName, the_plan: QuantPlan) -> list[Engine]:
    if name is not EngineName.AUTO:
        reason = ENGINES[name].applies(the_plan)
        if reason:
            raise UsageError(f"engine {name.value} cannot serve this plan: {reason}; use --engine auto")
        return [ENGINES[name]]
    usable = [e for e in ENGINES.values() if e.applies(the_plan) is None]
    if the_plan.precision is not Precision.INT8:
        usable = usable[:1]
    return usable


def _selection_data(
    evaluation: Any, calib: CalibrationData, model: Model, preprocess: str | None, engines: int
) -> tuple[CalibrationData, CalibrationData, str]:
    """(data to calibrate on, data to choose and verify on, what the latter is). Without evaluation
    data and with engines to choose between, the last fifth of the calibration samples is held out:
    ranges fitted to the very samples they are judged on favour MinMax calibration."""
    if evaluation is not None:
        data = load_calibration(evaluation, model, split="evaluation", preprocess=preprocess)
        return calib, data, f"the evaluation data ({len(data)} samples)"
    held = max(HOLDOUT_MIN, round(len(calib) * HOLDOUT_FRACTION))
    if engines < 2 or len(calib) - held < HOLDOUT_MIN:
        check = calib.take(VERIFY_SAMPLES)
        return calib, check, f"{len(check)} calibration samples (pass evaluation data for an unbiased check)"
    kept = len(calib) - held
    labels = calib.labels[kept:] if calib.labels is not None else None
    selection = CalibrationData(samples=calib.samples[kept:], labels=labels, source=f"{calib.source}, last {held}")
    return calib.take(kept), selection, f"{held} calibration samples held out from calibration"


def _is_classifier(model: Model) -> bool:
    shape = model.outputs[0].shape
    return len(shape) == 2 and shape[1] >= 2


def resolve_rounding(rounding: Rounding, model: Model, samples: int) -> Rounding:
    """AUTO as GPTQ when its covariance work over `samples` stays under GPTQ_AUTO_MACS, else BIAS_CORRECT."""
    if rounding is not Rounding.AUTO:
        return rounding
    work = gptq_macs(model)
    return Rounding.GPTQ if work is not None and work * samples <= GPTQ_AUTO_MACS else Rounding.BIAS_CORRECT


def _prepare(model: Model, calib: CalibrationData, the_plan: QuantPlan, rounding: Rounding) -> tuple[Model, str | None]:
    if rounding is Rounding.NEAREST or the_plan.precision not in STATIC_PRECISIONS:
        return model, None
    grid = {"per_channel": the_plan.weights.per_channel, "narrow_range": the_plan.weights.narrow_range}
    rounding = resolve_rounding(rounding, model, len(calib))
    if rounding is Rounding.GPTQ:
        prepared, report = round_weights(model, list(calib), **grid)
    else:  # means settle within tens of samples; more only costs time
        prepared, report = correct_bias(model, list(calib.take(BIAS_SAMPLES)), **grid)
    return prepared, report.detail


def _run_engine(engine: Engine, job: _Job, the_plan: QuantPlan) -> tuple[Candidate, onnx.ModelProto, Ranges | None]:
    start = time.perf_counter()
    samples = list(job.calib)
    ranges = engine.calibrate(job.prepared, the_plan, samples, job.ranges)
    proto = engine.quantize(job.prepared, the_plan, samples, ranges)
    proto, removed = remove_redundant_activations(proto)
    seconds = time.perf_counter() - start
    fidelity = verify(proto, job.reference, job.selection, labels=job.selection.labels)
    candidate = Candidate(engine.name, fidelity, seconds, removed, len(unfused_compute_nodes(proto)))
    return candidate, proto, ranges


def _ranges_note(ranges: Ranges | None, method: RangeMethod) -> str:
    if ranges is None:
        return "the engine's own calibration"
    if method is RangeMethod.MINMAX:
        return f"minmax: the extremes of the calibration data ({len(ranges)} tensors)"
    return f"mse: least 8-bit quantization error over the calibration data ({len(ranges)} tensors)"


def _score(fidelity: Fidelity) -> tuple[float, float]:
    """SQNR first (continuous, stable on tens of samples), then accuracy or top-1 agreement."""
    out = fidelity.outputs[0]
    secondary = out.accuracy_quant if out.accuracy_quant is not None else out.top1_agreement
    return (round(fidelity.worst_sqnr_db, 2), secondary or 0.0)


def _summary(fidelity: Fidelity) -> str:
    out = fidelity.outputs[0]
    parts = [f"{fidelity.worst_sqnr_db:.2f} dB"]
    if out.top1_agreement is not None:
        parts.append(f"top-1 agreement {out.top1_agreement:.1%}")
    if out.accuracy_quant is not None:
        parts.append(f"accuracy {out.accuracy_quant:.2%}")
    return ", ".join(parts)


def _fallback(
    engine: Engine,
    job: _Job,
    the_plan: QuantPlan,
    budget: Budget,
    result: tuple[onnx.ModelProto, Fidelity],
    ranges: Ranges | None,
) -> tuple[QuantPlan, onnx.ModelProto, Fidelity, FallbackReport]:
    """`result` is the engine's model for `the_plan` and its fidelity; `ranges` its calibration."""

    def quantized(the: QuantPlan) -> onnx.ModelProto:
        return remove_redundant_activations(engine.quantize(job.prepared, the, list(job.calib), ranges))[0]

    current, fidelity = result
    if budget.holds(fidelity):
        return the_plan, current, fidelity, FallbackReport(budget.describe(), True, 0, (), (), 0)
    layers = verify(current, job.reference, job.selection.take(RANKING_SAMPLES), per_layer=True)
    ranked = rank_layers(job.reference, layers, {f.node for f in the_plan.float_nodes})
    protos: dict[int, onnx.ModelProto] = {}

    def attempt(nodes) -> Fidelity:
        protos[len(nodes)] = quantized(the_plan.with_float(nodes))
        return verify(protos[len(nodes)], job.reference, job.selection, labels=job.selection.labels)

    kept, found, report = keep_fewest_in_float(job.reference, ranked, budget, attempt)
    return the_plan.with_float(kept), protos[len(kept)], found, report


def _speed(model: Model, proto: onnx.ModelProto, calib: CalibrationData, threads: Sequence[int]) -> list[Speed]:
    sample = calib.samples[0]
    float_bytes, quant_bytes = model.proto.SerializeToString(), proto.SerializeToString()
    return [
        Speed(t, ort_latency_ms(float_bytes, sample, threads=t), ort_latency_ms(quant_bytes, sample, threads=t))
        for t in threads
    ]


def _speed_warnings(
    speed: list[Speed], model: Model, proto: onnx.ModelProto, calib: CalibrationData, the_plan: QuantPlan
) -> list[str]:
    slow = [s for s in speed if s.quantized_ms > 1.05 * s.float_ms]  # within 5% is timing noise
    if not slow:
        return []
    unfused = unfused_compute_nodes(proto)
    why = []
    if unfused:
        why.append(
            f"{len(unfused)} compute nodes are not followed by a QuantizeLinear, so ONNX Runtime runs them "
            "in float between Q/DQ pairs"
        )
    if the_plan.float_nodes:
        why.append(f"{len(the_plan.float_nodes)} nodes stay in float and every boundary adds a Q/DQ round trip")
    why.append(_slower_classes(model.proto, proto, calib.samples[0], slow[0].threads))
    timings = ", ".join(s.against_float for s in slow)
    return [f"the quantized model is slower than float in ONNX Runtime here ({timings}): {'; '.join(why)}"]


def _slower_classes(reference: onnx.ModelProto, proto: onnx.ModelProto, sample, threads: int) -> str:
    """Which op classes take longer quantized than in float on this host, from ONNX Runtime's profiler."""
    before, after = op_class_ms(reference, sample, threads=threads), op_class_ms(proto, sample, threads=threads)
    worse = sorted(
        ((after.get(k, 0.0) - before.get(k, 0.0), k) for k in after.keys() | before.keys()),
        reverse=True,
    )
    parts = [
        f"{k} {after.get(k, 0.0):.2f} ms vs {before.get(k, 0.0):.2f} ms in float"
        for gain, k in worse[:3]
        if gain > 0.01
    ]
    if not parts:
        return "no op class is slower on its own; the difference is within this host's timing noise"
    return f"ONNX Runtime's profile here ({threads} thread(s)) puts the extra time in " + ", ".join(parts)


def _write(result: QuantizeResult, model: Model, profile: TargetProfile, output: Path) -> QuantizeResult:
    path = output if output.suffix == ".onnx" else output / f"{model.name}.{result.plan.precision.value}.onnx"
    manifest = {
        "kind": "quantized-onnx",
        "source_model": {"name": model.name, "sha256": model.sha256},
        "target": profile.id,
        "plan": result.plan,
        "engine": result.engine,
        "fidelity": result.fidelity.to_dict(),
        "candidates": [{"engine": c.engine, "fidelity": c.fidelity.to_dict()} for c in result.candidates],
        "selected_on": result.selected_on,
        "calibration": result.calibration,
        "prepass": result.prepass,
        "ranges": result.ranges,
        "fallback": result.fallback,
    }
    artifact = write_artifact(path, model_bytes(result.model), manifest)
    return replace(result, artifact=artifact)
