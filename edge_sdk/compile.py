"""compile: one call from a float model to a deployable bundle per target and one report across them.

    result = compile_model("model.onnx", ["rpi5", "coral", "ethos-u55-128"],
                           calibration="calibration/demo.toml", output=Path("build"))

Each target's model goes through the stage its format needs: TFLite targets through `export_tflite`
(lowering, ai-edge-quantizer, Vela for Ethos-U), ONNX targets through `quantize` (with the accuracy
fallback). Every artifact is verified against the float model, timed on this host where it can run
here, predicted for its device (or measured there with `devices`), and reported (`edge_sdk.report`).
Everything is written to a staging directory that replaces `output` only when all targets are done.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from edge_sdk.artifact import Artifact, model_bytes, write_artifact
from edge_sdk.bundle import check_output, is_microcontroller, staged_output, summary_lines, write_device_files
from edge_sdk.calibration import CalibrationData, check_calibration, load_calibration, recipe_of
from edge_sdk.compile_profile import ProfileOptions, TargetLatency, profile_bundles
from edge_sdk.errors import UsageError
from edge_sdk.export import TFLITE_FORMATS, export_tflite
from edge_sdk.fallback import Budget
from edge_sdk.model import Model, load_model
from edge_sdk.plan import STATIC_PRECISIONS, FloatNode, check_float
from edge_sdk.preprocessing import DeployInfo, deploy_info
from edge_sdk.profile import Precision, TargetProfile
from edge_sdk.quantize import quantize
from edge_sdk.serialize import to_jsonable
from edge_sdk.targets import load_target
from edge_sdk.verify import Fidelity, LayerError, verify

Stage = Callable[[str], None]
SENSITIVITY_SAMPLES = 16  # per-layer errors for the report: enough to rank layers, cheap to run


class Format(str, Enum):
    """What compile can produce; a target lists the formats it deploys, in its order of preference."""

    TFLITE = "tflite"
    ONNX = "onnx"


@dataclass(frozen=True)
class TargetBundle:
    target: str
    format: str  # the target's deploy format: tflite, vela-tflite, edgetpu-tflite or onnx
    precision: Precision
    directory: Path
    artifact: Artifact
    fidelity: Fidelity
    verified_on: str
    float_nodes: tuple[FloatNode, ...]  # nodes kept in float, each with its reason (ONNX targets)
    layers: tuple[LayerError, ...]  # the error each layer's quantization adds, in execution order
    vela: Any  # edge_sdk.vela.VelaResult for Ethos-U targets
    warnings: tuple[str, ...]
    seconds: float
    latency: TargetLatency = field(default_factory=TargetLatency)
    runnable_here: bool = True  # False for Vela output (an Ethos-U custom operator)


@dataclass(frozen=True)
class CompileResult:
    output: Path
    model: Model = field(repr=False, metadata={"json": False})
    bundles: tuple[TargetBundle, ...]
    calibration: str | None
    evaluation: str | None
    notes: tuple[str, ...]
    seconds: float
    report: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


@dataclass(frozen=True)
class _Inputs:
    model: Model
    calib: CalibrationData | None
    evaluation: CalibrationData | None
    deploy: DeployInfo
    precision: Precision | None
    max_drop: float | None
    min_sqnr_db: float | None


def compile_model(
    model: Model | str | Path,
    targets: Sequence[str | TargetProfile],
    *,
    output: Path,
    calibration: Any = None,
    evaluation: Any = None,
    preprocess: str | None = None,
    precision: Precision | str | None = None,
    fmt: Format | str | None = None,
    max_drop: float | None = None,
    min_sqnr_db: float | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    targets_dirs: Sequence[str | Path] = (),
    profiling: ProfileOptions | None = None,
    on_stage: Stage | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CompileResult:
    """Bundles for every target in `output`/<target>/ plus report.json and report.html.

    `calibration` is needed for int8/int16x8 targets (a recipe, image folder with `preprocess`,
    .npz/.npy or an iterable of {input: array}); `evaluation` defaults to the recipe's "evaluation"
    split when it has one. `precision` and `fmt` apply to every target (each must support them).
    `profiling` says how to time the bundles (this host, devices over SSH, predictions)."""
    from edge_sdk.report import write_report

    started = time.perf_counter()
    stage = on_stage or (lambda _text: None)
    check_output(Path(output))
    profiles = _profiles(targets, targets_dirs)
    formats = {p.id: _format(p, fmt) for p in profiles}
    _check_toolchains(profiles, formats)
    chosen = _parse_precision(precision) if precision else None
    _check_precisions(profiles, chosen, calibration)
    options = profiling or ProfileOptions(targets_dirs=tuple(targets_dirs))
    options.check(profiles)
    if max_drop is not None or min_sqnr_db is not None:
        Budget(max_drop, min_sqnr_db)  # refuses a negative or non-finite budget before any work
    loaded = model if isinstance(model, Model) else load_model(model, input_shapes=input_shapes)
    check_float(loaded)
    inputs, notes = _load_data(loaded, calibration, evaluation, preprocess, chosen, stage, on_progress)
    inputs = replace(inputs, max_drop=max_drop, min_sqnr_db=min_sqnr_db)
    with staged_output(output) as staging:
        bundles = []
        for index, profile in enumerate(profiles, 1):
            prefixed = functools.partial(_prefixed, stage, f"[{index}/{len(profiles)}] {profile.id}: ")
            bundles.append(_build(profile, formats[profile.id], inputs, staging, prefixed))
        stage("timing and predicting")
        timed = profile_bundles(loaded, profiles, bundles, options, stage)
        bundles = [replace(b, latency=latency) for b, latency in zip(bundles, timed, strict=True)]
        stage("writing the report")
        result = CompileResult(
            output=Path(output),
            model=loaded,
            bundles=tuple(bundles),
            calibration=inputs.calib.source if inputs.calib is not None else None,
            evaluation=inputs.evaluation.source if inputs.evaluation is not None else None,
            notes=tuple(notes),
            seconds=time.perf_counter() - started,
        )
        report = write_report(result, profiles, staging)
    return replace(result, bundles=tuple(_moved(b, staging, Path(output)) for b in bundles), report=report)


def _parse_precision(precision: Precision | str) -> Precision:
    try:
        return Precision(precision)
    except ValueError:
        known = ", ".join(p.value for p in Precision)
        raise UsageError(f"precision '{precision}' is not one of {known}") from None


def _prefixed(stage: Stage, prefix: str, text: str) -> None:
    stage(prefix + text)


def _profiles(targets: Sequence[str | TargetProfile], dirs: Sequence[str | Path]) -> list[TargetProfile]:
    if not targets:
        raise UsageError("compile needs at least one --target (see `edge-sdk targets list`)")
    profiles: dict[str, TargetProfile] = {}
    for target in targets:
        profile = target if isinstance(target, TargetProfile) else load_target(target, dirs)
        profiles.setdefault(profile.id, profile)
    return list(profiles.values())


def _format(profile: TargetProfile, fmt: Format | str | None) -> Format:
    """The target's first format compile can write (or `fmt`, when the target deploys it)."""
    producible = [f for f in map(_producible, profile.deploy.formats) if f is not None]
    wanted = _parse_format(fmt) if fmt is not None else None
    if wanted in producible or (wanted is None and producible):
        return wanted or producible[0]
    deploys = ", ".join(profile.deploy.formats)
    raise UsageError(
        f"target '{profile.id}' deploys {deploys}, not {wanted.value if wanted else 'TFLite or ONNX'}; its vendor's "
        "compiler builds that format (`edge-sdk quantize` writes the QDQ ONNX most of them import); "
        "drop that target or that format"
    )


def _parse_format(fmt: Format | str) -> Format:
    try:
        return Format(fmt)
    except ValueError:
        raise UsageError(f"format '{fmt}' is not one compile writes; use tflite or onnx") from None


def producible(profile: TargetProfile) -> str | None:
    """None when compile can build for `profile`, else why not."""
    if any(_producible(f) for f in profile.deploy.formats):
        return None
    return f"deploys {', '.join(profile.deploy.formats)}, which only its vendor's compiler builds"


def _producible(deploy_format: str) -> Format | None:
    if deploy_format in TFLITE_FORMATS:
        return Format.TFLITE
    return Format.ONNX if deploy_format == "onnx" else None


def _check_toolchains(profiles: list[TargetProfile], formats: dict[str, Format]) -> None:
    """An optional compiler a target needs (Vela for Ethos-U) is looked for before any work."""
    if any(is_microcontroller(p) and formats[p.id] is Format.TFLITE for p in profiles):
        from edge_sdk.vela import locate_vela

        locate_vela()


def _check_precisions(profiles: list[TargetProfile], chosen: Precision | None, calibration: Any) -> None:
    """Refuse before any work: an unsupported precision, or int8 without calibration data."""
    for profile in profiles:
        precision = chosen or profile.deploy.default_precision
        if precision not in profile.deploy.precisions:
            supported = ", ".join(p.value for p in profile.deploy.precisions)
            raise UsageError(f"target '{profile.id}' does not run {precision.value}; it supports {supported}")
        if calibration is None and precision in STATIC_PRECISIONS:
            raise UsageError(
                f"target '{profile.id}' runs {precision.value}, which needs calibration data: pass --calib "
                "(a recipe such as calibration/demo.toml, an image folder with --preprocess, or a .npz)"
            )


def _load_data(
    model: Model,
    calibration: Any,
    evaluation: Any,
    preprocess: str | None,
    precision: Precision | None,
    stage: Stage,
    progress: Callable[[int, int], None] | None,
) -> tuple[_Inputs, list[str]]:
    """Calibration and evaluation data, read and checked once for every target."""
    notes: list[str] = []
    calib = evaluated = None
    if calibration is not None:
        stage("loading calibration data")
        calib = load_calibration(calibration, model, preprocess=preprocess, progress=progress)
        notes += check_calibration(calib, model)
    recipe = recipe_of(calibration, model, preprocess=preprocess)
    if evaluation is None and recipe is not None and "evaluation" in recipe.splits:
        evaluation = recipe  # `--calib recipe.toml` also verifies on the recipe's held-out split
    if evaluation is not None:
        stage("loading evaluation data")
        evaluated = load_calibration(evaluation, model, split="evaluation", preprocess=preprocess)
    return _Inputs(model, calib, evaluated, deploy_info(recipe, model), precision, None, None), notes


def _build(profile: TargetProfile, fmt: Format, inputs: _Inputs, staging: Path, stage: Stage) -> TargetBundle:
    directory = staging / profile.id
    build = _tflite if fmt is Format.TFLITE else _onnx
    bundle = build(profile, inputs, directory, stage)
    write_device_files(directory, profile, bundle.artifact.path, summary_lines(profile, bundle))
    return bundle


def _tflite(profile: TargetProfile, inputs: _Inputs, directory: Path, stage: Stage) -> TargetBundle:
    from edge_sdk.tflite_layers import tflite_layer_errors

    started = time.perf_counter()
    result = export_tflite(
        inputs.model,
        profile,
        precision=inputs.precision,
        calibration=inputs.calib,
        evaluation=inputs.evaluation,
        output=directory,
        speed_threads=(),
        on_stage=stage,
        deploy=inputs.deploy,
        max_drop=inputs.max_drop,
        min_sqnr_db=inputs.min_sqnr_db,
    )
    assert result.artifact is not None
    layers: tuple[LayerError, ...] = ()
    if result.precision in STATIC_PRECISIONS:
        stage("per-layer errors in LiteRT")
        layers = tflite_layer_errors(result.flatbuffer, inputs.model, _sensitivity_data(inputs))
    return TargetBundle(
        target=profile.id,
        format=next(f for f in profile.deploy.formats if f in TFLITE_FORMATS),
        precision=result.precision,
        directory=directory,
        artifact=result.artifact,
        fidelity=result.fidelity,
        verified_on=result.verified_on,
        float_nodes=result.fallback.float_nodes if result.fallback is not None else (),
        layers=layers,
        vela=result.vela,
        warnings=result.warnings,
        seconds=time.perf_counter() - started,
        runnable_here=not is_microcontroller(profile),
    )


def _onnx(profile: TargetProfile, inputs: _Inputs, directory: Path, stage: Stage) -> TargetBundle:
    started = time.perf_counter()
    precision = inputs.precision or profile.deploy.default_precision
    if precision is Precision.FP32:
        return _float_onnx(profile, inputs, directory, stage, started)
    assert inputs.calib is not None  # _check_precisions
    result = quantize(
        inputs.model,
        profile,
        inputs.calib,
        precision=precision,
        evaluation=inputs.evaluation,
        max_drop=inputs.max_drop,
        min_sqnr_db=inputs.min_sqnr_db,
        output=directory,
        speed_threads=(),
        on_stage=stage,
    )
    assert result.artifact is not None
    stage("per-layer errors in ONNX Runtime")
    layers = verify(result.model, inputs.model, _sensitivity_data(inputs), per_layer=True).layers
    return TargetBundle(
        target=profile.id,
        format=Format.ONNX.value,
        precision=result.plan.precision,
        directory=directory,
        artifact=result.artifact,
        fidelity=result.fidelity,
        verified_on=result.selected_on,
        float_nodes=result.plan.float_nodes,
        layers=layers,
        vela=None,
        warnings=result.warnings,
        seconds=time.perf_counter() - started,
    )


def _float_onnx(profile: TargetProfile, inputs: _Inputs, directory: Path, stage: Stage, started: float) -> TargetBundle:
    """fp32 for an ONNX target: the loaded (simplified) model itself, checked against the original."""
    stage("writing the float model")
    data = _sensitivity_data(inputs)
    fidelity = verify(inputs.model.proto, inputs.model, data)
    manifest = {
        "kind": "onnx",
        "source_model": {"name": inputs.model.name, "sha256": inputs.model.sha256},
        "target": profile.id,
        "precision": Precision.FP32,
        "fidelity": fidelity.to_dict(),
        "preprocess": inputs.deploy.preprocess,
        "labels": inputs.deploy.labels or None,
    }
    path = directory / f"{inputs.model.name}.fp32.onnx"
    artifact = write_artifact(path, model_bytes(inputs.model.proto), manifest)
    return TargetBundle(
        target=profile.id,
        format=Format.ONNX.value,
        precision=Precision.FP32,
        directory=directory,
        artifact=artifact,
        fidelity=fidelity,
        verified_on=f"{len(data)} samples",
        float_nodes=(),
        layers=(),
        vela=None,
        warnings=(),
        seconds=time.perf_counter() - started,
    )


def _sensitivity_data(inputs: _Inputs) -> list[dict]:
    data = inputs.evaluation or inputs.calib
    if data is None:
        return [{s.name: _zeros(s) for s in inputs.model.inputs}]
    return list(data.take(SENSITIVITY_SAMPLES))


def _zeros(spec: Any) -> Any:
    import numpy as np

    return np.zeros(spec.shape, np.dtype(spec.dtype))


def _moved(bundle: TargetBundle, staging: Path, output: Path) -> TargetBundle:
    """The bundle's paths after the staging directory became `output`."""
    artifact = bundle.artifact
    moved = replace(
        artifact,
        path=output / artifact.path.relative_to(staging),
        manifest_path=output / artifact.manifest_path.relative_to(staging),
    )
    return replace(bundle, directory=output / bundle.directory.relative_to(staging), artifact=moved)
