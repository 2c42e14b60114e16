"""predict(model, target): latency on a device you may not have, with an error band.

The latency model and its fit are in edge_sdk.latency_model. This module chooses which fit answers:
the target's own (target, runtime, threads, precision) group when it has measurements; otherwise the
nearest measured group, scaled by the ratio of the two profiles' peak ops (compute), bandwidths
(memory) and clocks (per-op overhead). The measurements (edge_sdk.calibrate) come from this host (its
calibration on the SDK's zoo: `calibrate_host`), the published reference latencies and every run in
the results store, so predictions improve as the user measures. A prediction that had to be scaled from
another group and whose band is wider than +-50% says how to tighten it (`extra["warning"]`).

Ethos-U targets use Vela's own estimate (edge_sdk.vela) instead of the fit.

    calibrate_host()                                          # once: measure the zoo here, store the runs
    rpi4b, rpi5 = predict_targets("model.onnx", ["rpi4b", "rpi5"])
    rpi4b.prediction                                          # latency_ms, low_ms, high_ms, method, fit_models

    cache = zoo_cache()                                       # or fit your own selection of runs:
    cache.add(model, file_sha256=file_sha256("model.tflite"))
    with open_store() as store:
        runs = store_measurements(store, load_target("host"), cache) + store_measurements(store, rpi5, cache)
    p = predict(model, rpi5, runtime="litert", measurements=runs).prediction
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge_sdk.calibrate import (
    SUFFIXES,
    FeatureCache,
    calibrate_host,
    reference_csv,
    reference_measurements,
    store_measurements,
    zoo_cache,
)
from edge_sdk.errors import EdgeSdkError, UsageError
from edge_sdk.latency_model import (
    MAC_PARAMS,
    PARAMS,
    GroupFit,
    GroupKey,
    LatencyFit,
    Measurement,
    ModelFeatures,
    Params,
    features,
    fit,
    group_key,
    model_seconds,
    node_seconds,
    runtime_family,
)
from edge_sdk.measurement import BenchmarkResult, Prediction, Source
from edge_sdk.model import Model, load_model
from edge_sdk.profile import Precision, TargetProfile
from edge_sdk.runner import file_sha256
from edge_sdk.store import open_store
from edge_sdk.targets import list_targets, load_target
from edge_sdk.tflite_features import TfliteModel, load_tflite
from edge_sdk.zoo import reference_models

# calibrate_host and the measurement helpers are part of this module's API (edge_sdk.calibrate holds them)
__all__ = [
    "FeatureCache",
    "calibrate_host",
    "predict",
    "predict_targets",
    "reference_measurements",
    "store_measurements",
    "zoo_cache",
]

log = logging.getLogger(__name__)

BAND_Z = 1.96  # the band spans +-1.96 sigma of the log error: 95% if the errors are log-normal
# Added (in quadrature) to the donor fit's log sigma when its parameters move to another group. These are
# judgments, not fits: the cross-device error has too few published points here to be estimated.
# Same device, other thread count: compute scales ideally with busy cores, memory not at all. XNNPACK's
# published Pixel numbers (research/reference_latencies.csv) scale 1.7-3.2x from 1 thread to 2-4 big
# cores, up to 1.7x short of ideal: exp(1.96 x 0.3) = 1.8.
THREADS_LOG_SIGMA = 0.3
PEAK_LOG_SIGMA = 0.35  # another device with a published peak: its efficiency may differ by ~2x
# No peak for one side (the host profile gives none): clock x cores ignores the work per cycle. This
# host's fits scaled that way to the published Pi 3B+/Pi 4 latencies came out 7-11x too fast
# (benchmarks/predict_bench.py), so the band must span about 10x: exp(1.96 x 1.2) = 10.5.
CLOCK_LOG_SIGMA = 1.2
FEW_MODELS_LOG_SIGMA = 0.35  # a fit of fewer than 3 models has no residuals to derive a band from
VELA_LOG_SIGMA = 0.35  # Vela's estimate has not been checked on silicon (research/devices.md)
FAR_BAND = 1.5  # a scaled prediction whose high end is over +50% says how to measure instead


@dataclass(frozen=True)
class Scale:
    """Multipliers that move fitted parameters from a donor group to the predicted group."""

    compute: float
    memory: float
    overhead: float
    basis: str
    log_sigma: float


def predict(
    model: Model | TfliteModel | str | Path,
    target: TargetProfile | str,
    *,
    precision: Precision | None = None,
    threads: int | None = None,
    runtime: str | None = None,
    measurements: LatencyFit | Sequence[Measurement] = (),
    tflite: bytes | Path | None = None,
    targets_dirs: Sequence[str | Path] = (),
) -> BenchmarkResult:
    """Predicted latency of `model` on `target`. Defaults: the model's own precision (int8 if it has
    Q/DQ nodes, else fp32) when the target runs it, else the target's default; all the target's cores;
    its first runtime. `measurements` are (features, result) pairs, or a fit already made from them.
    Ethos-U targets need `tflite`, the int8 TFLite model Vela compiles (a .tflite `model` is its own).
    A .tflite file from any converter is read as it is (its operators, already fused)."""
    profile = target if isinstance(target, TargetProfile) else load_target(target, targets_dirs)
    loaded = _load(model)
    precision = precision or _default_precision(loaded, profile)
    threads = threads or profile.compute.cores or 1
    family = runtime_family(runtime or profile.deploy.runtimes[0])
    if "vela-tflite" in profile.deploy.formats:
        own = loaded.flatbuffer if isinstance(loaded, TfliteModel) else None
        return _vela_prediction(loaded, profile, precision, tflite if tflite is not None else own)
    fitted = measurements if isinstance(measurements, LatencyFit) else fit(measurements)
    key = GroupKey(profile.id, family, threads, precision)
    donor, scale = _choose_fit(fitted, key, profile, targets_dirs)
    params = _within_peak(donor.params.scaled(scale.compute, scale.memory, scale.overhead), profile, key)
    if isinstance(loaded, TfliteModel):
        feats = loaded.features(profile, precision=precision, runtime=family)
    else:
        feats = features(loaded, profile, precision=precision, runtime=family)
    latency_ms = model_seconds(feats, params) * 1e3
    fit_sigma = donor.log_sigma if donor.log_sigma is not None else FEW_MODELS_LOG_SIGMA
    half_width = BAND_Z * math.hypot(fit_sigma, scale.log_sigma)
    method = "roofline-fit" if donor.key == key else f"roofline-fit of {donor.key}, scaled by {scale.basis}"
    prediction = Prediction(
        latency_ms, latency_ms * math.exp(-half_width), latency_ms * math.exp(half_width), method, donor.models
    )
    log.info("predicted %s on %s: %.3f ms (%s)", loaded.name, profile.id, latency_ms, method)
    extra = _explain(key, donor, scale, feats, params)
    if donor.key != key and prediction.high_ms > FAR_BAND * latency_ms:
        extra["warning"] = _far_warning(key, donor.key, scale)
    return _result(loaded, profile, prediction, extra)


def _far_warning(key: GroupKey, donor: GroupKey, scale: Scale) -> str:
    bench = f"edge-sdk bench MODEL --device USER@HOST --target {key.target}"
    device = "" if key.target == "host" else f"measure on the device ({bench}) or "
    return (
        f"no measured model for {key}: scaled from {donor} by {scale.basis}, so the band is wide; "
        f"{device}calibrate this host (edge-sdk profile --calibrate) to tighten it"
    )


def _within_peak(params: Params, profile: TargetProfile, key: GroupKey) -> Params:
    """No op class faster than the peak: a class the data barely constrain can fit an efficiency above 1."""
    peak = _peak(profile, key.precision, key.threads)
    if not peak:
        return params
    floor = 2.0 / (peak * 1e9)  # seconds per MAC at the peak (2 ops per MAC)
    return Params(
        tuple(max(v, floor) if name in MAC_PARAMS else v for name, v in zip(PARAMS, params.values, strict=True))
    )


def _explain(key: GroupKey, donor: GroupFit, scale: Scale, feats: ModelFeatures, params: Params) -> dict:
    """What the prediction rests on, for `extra`: the group, the fitted parameters and the time per op class."""
    compute, memory = node_seconds(feats, params)
    per_class: dict[str, float] = {}
    for op, unit, seconds in zip(feats.op_class, feats.on_unit, np.maximum(compute, memory), strict=True):
        name = op.value if unit else "fallback"
        per_class[name] = per_class.get(name, 0.0) + (float(seconds) + params["node"]) * 1e3
    per_class["transfer"] = (params["transfer"] * feats.transfers + params["byte"] * feats.transfer_bytes) * 1e3
    return {
        "runtime": key.runtime,
        "threads": key.threads,
        "precision": key.precision.value,
        "fit_group": str(donor.key),
        "scale": {"compute": scale.compute, "memory": scale.memory, "overhead": scale.overhead},
        "params": dict(zip(PARAMS, params.values, strict=True)),
        "per_class_ms": per_class,
        "fallback_nodes": sum(not u for u in feats.on_unit),
        "transfers": feats.transfers,
    }


def predict_targets(
    model: str | Path | Model,
    targets: Sequence[str | TargetProfile],
    *,
    threads: int | None = None,
    db: str | Path | None = None,
    models: Sequence[Model] = (),
    targets_dirs: Sequence[str | Path] = (),
    reference: str | Path | None = None,
    failures: list[tuple[str, str]] | None = None,
    precisions: Mapping[str, Precision] | None = None,
) -> list[BenchmarkResult]:
    """Predict an ONNX model on each target, fitted on every measurement whose graph is at hand: the
    published latencies (`reference`, default: the CSV shipped in targets/), and the stored runs, on this
    host and on each target, of the SDK's zoo (`calibrate_host`), of this model and of `models`.
    With `failures`, a target that cannot be predicted adds (target id, reason) there instead of raising.
    `precisions` (by target id) overrides `predict`'s default precision, e.g. int8 for a float ONNX model.
    The runtime is the one the target's own measurements are in, when only one of its runtimes has them
    (the published Raspberry Pi latencies are LiteRT's); else ONNX Runtime where the target lists it and
    anything was measured with it (the .onnx file measured on this host); else its first measured one."""
    loaded = _load(model)
    cache = zoo_cache()
    cache.add(loaded, file_sha256=file_sha256(Path(model)) if isinstance(model, str | Path) else None)
    for other in models:
        cache.add(other)
    profiles = [t if isinstance(t, TargetProfile) else load_target(t, targets_dirs) for t in targets]
    measured = reference_measurements(reference or reference_csv(), reference_models(), list_targets(targets_dirs))
    with open_store(db) as store:
        measured += store_measurements(store, load_target("host", targets_dirs), cache)
        for profile in profiles:
            measured += store_measurements(store, profile, cache) if profile.id != "host" else []
    groups = {group_key(f, r) for f, r in measured}
    runtimes = [_runtime_for(p, groups) for p in profiles]
    fitted = fit([m for m in measured if m[0].runtime in runtimes])  # fitting is the slow part: only what is used
    results = []
    for profile, runtime in zip(profiles, runtimes, strict=True):
        try:
            results.append(
                predict(
                    loaded,
                    profile,
                    precision=(precisions or {}).get(profile.id),
                    threads=threads,
                    runtime=runtime,
                    measurements=fitted,
                    targets_dirs=targets_dirs,
                )
            )
        except EdgeSdkError as exc:  # with `failures`, one target that cannot be predicted does not stop the rest
            if failures is None:
                raise
            failures.append((profile.id, str(exc)))
    return results


def _runtime_for(profile: TargetProfile, groups: Collection[GroupKey]) -> str:
    families = list(dict.fromkeys(runtime_family(r) for r in profile.deploy.runtimes))
    own = [f for f in families if any(k.target == profile.id and k.runtime == f for k in groups)]
    anywhere = [f for f in families if any(k.runtime == f for k in groups)]
    measured = own or anywhere or families
    return "onnxruntime" if "onnxruntime" in measured else measured[0]


def _load(model: Model | TfliteModel | str | Path) -> Model | TfliteModel:
    if isinstance(model, Model | TfliteModel):
        return model
    return load_tflite(model) if Path(model).suffix.lower() == ".tflite" else load_model(model)


def _default_precision(model: Model | TfliteModel, profile: TargetProfile) -> Precision:
    if isinstance(model, TfliteModel):
        own = model.precision
    else:
        quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.proto.graph.node)
        own = Precision.INT8 if quantized else Precision.FP32
    return own if own in profile.deploy.precisions else profile.deploy.default_precision


def _result(model: Model | TfliteModel, profile: TargetProfile, prediction: Prediction, extra: dict) -> BenchmarkResult:
    from edge_sdk import __version__  # at call time: edge_sdk/__init__ may import this module

    return BenchmarkResult(
        source=Source.PREDICTED,
        model_name=model.name,
        model_sha256=model.sha256,
        target=profile.id,
        device=None,
        init_ms=None,
        first_run_ms=None,
        stats=None,
        samples_ms=(),
        peak_rss_mb=None,
        conditions=None,
        sdk_version=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        prediction=prediction,
        extra=extra,
    )


# --- which fit answers ------------------------------------------------------------------------------


def _choose_fit(
    fitted: LatencyFit, key: GroupKey, profile: TargetProfile, targets_dirs: Sequence[str | Path]
) -> tuple[GroupFit, Scale]:
    """The group's own fit; else the same target at other threads or precision; else another target,
    preferring ones whose profile gives a peak (host first), then the most models."""
    own = fitted.groups.get(key)
    if own is not None:
        return own, Scale(1.0, 1.0, 1.0, "nothing", 0.0)
    candidates = [g for g in fitted.groups.values() if g.key.runtime == key.runtime]
    device = f"measure on the device (edge-sdk bench MODEL --device USER@HOST --target {key.target})"
    if not candidates:
        host = "calibrate this host (edge-sdk profile --calibrate) or " if key.runtime in SUFFIXES else ""
        raise UsageError(f"no {key.runtime} measurements to predict {key.target} from; {host}{device}")
    reasons = []
    for donor in sorted(candidates, key=lambda g: _donor_rank(g, key, profile, targets_dirs)):
        donor_profile = profile if donor.key.target == profile.id else load_target(donor.key.target, targets_dirs)
        scale = _scale(donor_profile, donor.key, profile, key)
        if isinstance(scale, Scale):
            return donor, scale
        reasons.append(f"{donor.key}: {scale}")
    raise UsageError(f"cannot scale any measured group to {key} ({'; '.join(reasons)}); {device}")


def _donor_rank(g: GroupFit, key: GroupKey, profile: TargetProfile, dirs: Sequence[str | Path]) -> tuple:
    same_target = g.key.target == key.target
    donor_profile = profile if same_target else load_target(g.key.target, dirs)
    has_peak = _peak(donor_profile, g.key.precision, g.key.threads) is not None
    return (not same_target, not has_peak, g.key.target != "host", g.key.threads != key.threads, -g.models)


def _peak(profile: TargetProfile, precision: Precision, threads: int) -> float | None:
    """Peak GOPS with `threads` of the profile's cores busy (the peak is for all cores)."""
    peak = profile.compute.peak_gops.get(precision)
    cores = profile.compute.cores
    if peak is None:
        return None
    return peak * min(threads, cores) / cores if cores else peak


def _clock(profile: TargetProfile, threads: int) -> float | None:
    """MHz x busy cores: the throughput basis when a profile gives no peak (the host's)."""
    c = profile.compute
    return c.clock_mhz * min(threads, c.cores) if c.clock_mhz and c.cores else None


def _scale(donor: TargetProfile, dkey: GroupKey, target: TargetProfile, key: GroupKey) -> Scale | str:
    """Scale from donor to target, or why it cannot be done. Compute time scales with the peak ops at the
    thread counts used (or clock x cores); memory time with the bandwidths, else with the one-core compute
    ratio; per-op overhead with the clocks, else with the one-core compute ratio."""
    if donor.kind is not target.kind:  # a CPU's efficiencies say nothing about an accelerator's
        return f"{donor.kind.value.upper()} fits do not carry over to {target.kind.value.upper()}s"
    ratio = _compute_ratio(donor, dkey, target, key)
    single = _compute_ratio(donor, replace(dkey, threads=1), target, replace(key, threads=1))
    if ratio is None or single is None:
        return "the profiles give neither peaks for both precisions nor clocks and cores"
    (compute, basis), one_core = ratio, single[0]
    if donor.id == target.id:
        return Scale(compute, 1.0, 1.0, basis, THREADS_LOG_SIGMA)
    d_bw, t_bw = donor.memory.bandwidth_gbps, target.memory.bandwidth_gbps
    d_mhz, t_mhz = donor.compute.clock_mhz, target.compute.clock_mhz
    memory = d_bw / t_bw if d_bw and t_bw else one_core
    overhead = d_mhz / t_mhz if d_mhz and t_mhz else one_core
    return Scale(compute, memory, overhead, basis, PEAK_LOG_SIGMA if basis == "peak ratio" else CLOCK_LOG_SIGMA)


def _compute_ratio(
    donor: TargetProfile, dkey: GroupKey, target: TargetProfile, key: GroupKey
) -> tuple[float, str] | None:
    """Donor throughput / target throughput: by peak ops when both profiles give one, else by clock x busy
    cores (times the precision's peak ratio from either profile)."""
    d_peak, t_peak = _peak(donor, dkey.precision, dkey.threads), _peak(target, key.precision, key.threads)
    if d_peak and t_peak:
        return d_peak / t_peak, "peak ratio"
    d_clock, t_clock = _clock(donor, dkey.threads), _clock(target, key.threads)
    factor = _precision_factor(target, donor, dkey.precision, key.precision)
    if not (d_clock and t_clock) or factor is None:
        return None
    return d_clock / t_clock * factor, "clock x cores ratio"


def _precision_factor(target: TargetProfile, donor: TargetProfile, have: Precision, want: Precision) -> float | None:
    if have == want:
        return 1.0
    for p in (target, donor):
        peaks = p.compute.peak_gops
        if have in peaks and want in peaks:
            return peaks[have] / peaks[want]
    return None


# --- Ethos-U -----------------------------------------------------------------------------------------


def _vela_prediction(
    model: Model | TfliteModel, profile: TargetProfile, precision: Precision, tflite: bytes | Path | None
) -> BenchmarkResult:
    """Vela's own estimate for the Ethos-U. It covers the NPU part only: ops Vela leaves to the Cortex-M
    are not timed, so with CPU ops the estimate is a lower bound and says so in `extra`."""
    if tflite is None:
        raise UsageError(
            f"{profile.id} latency is Vela's estimate for the int8 TFLite model; quantize and export "
            "the model for this target, then pass the .tflite file (or its bytes) as tflite="
        )
    from edge_sdk.vela import compile_for_ethos_u

    vela = compile_for_ethos_u(tflite, profile)
    latency_ms = vela.inference_time_ms
    half_width = BAND_Z * VELA_LOG_SIGMA
    prediction = Prediction(
        latency_ms, latency_ms * math.exp(-half_width), latency_ms * math.exp(half_width), "vela-estimate", 0
    )
    if vela.cpu_ops:
        log.warning("%s: Vela leaves %d ops on the CPU; their time is not in the estimate", profile.id, vela.cpu_ops)
    extra = {
        "precision": precision.value,
        "runtime": "vela",
        "npu_ops": vela.npu_ops,
        "cpu_ops": vela.cpu_ops,
        "cycles": vela.cycles,
        "system_config": vela.system_config,
        "vela_version": vela.vela_version,
        "cpu_ops_not_timed": vela.cpu_ops > 0,
    }
    return _result(model, profile, prediction, extra)
