"""Timing compile's bundles: each artifact on this host (where it can run here), on the user's
devices over SSH, and predicted for every target (Vela's estimate for Ethos-U)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk.benchmark import benchmark
from edge_sdk.errors import DeviceError, EdgeSdkError, UsageError
from edge_sdk.measurement import BenchmarkResult, Prediction
from edge_sdk.model import Model
from edge_sdk.profile import TargetProfile
from edge_sdk.timing import measured_class

if TYPE_CHECKING:
    from edge_sdk.compile import TargetBundle
    from edge_sdk.fleet import Inventory
    from edge_sdk.remote import Device

log = logging.getLogger(__name__)
Stage = Callable[[str], None]
HOST_BUDGET_S = 2.0  # per artifact: enough runs for a stable median of a sub-second model


@dataclass(frozen=True)
class ProfileOptions:
    host: bool = True  # time every artifact that runs on this host
    predict: bool = True
    threads: int | None = None  # on this host; None: every usable core
    budget_s: float = HOST_BUDGET_S
    devices: tuple[Device, ...] = ()  # each with its .target: a failure stops the compile
    fleet: Inventory | None = None  # devices whose target is compiled; a failing one becomes a note
    known_hosts: str | Path | None = None
    accept_unknown_host: bool = False
    db: str | Path | None = None  # the results store (default: edge_sdk.store's)
    store: bool = True  # add the host and device runs to the store
    targets_dirs: tuple[str | Path, ...] = ()

    def check(self, profiles: Sequence[TargetProfile]) -> None:
        """Refuse what would only fail after every bundle is built."""
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: give 1 or more (default: every usable core)")
        if not self.budget_s > 0:
            raise UsageError(f"a timing budget of {self.budget_s} s: give a positive number of seconds")
        ids = {p.id for p in profiles}
        for device in self.devices:
            if device.target not in ids:
                raise UsageError(
                    f"device {device.address} is for target '{device.target}', which is not compiled; "
                    f"pass it with --target or name one of {', '.join(sorted(ids))} (--device TARGET=USER@HOST)"
                )


@dataclass(frozen=True)
class TargetLatency:
    host: BenchmarkResult | None = None  # the artifact timed on this build machine
    device: BenchmarkResult | None = None  # timed on the real device
    predicted: Prediction | None = None
    predicted_threads: int | None = None
    op_breakdown_ms: dict[str, float] = field(default_factory=dict)  # time per op class or op type
    op_breakdown_source: str | None = None  # "measured" (ONNX Runtime's profiler) or "predicted"
    notes: tuple[str, ...] = ()


def profile_bundles(
    model: Model,
    profiles: Sequence[TargetProfile],
    bundles: Sequence[TargetBundle],
    options: ProfileOptions,
    stage: Stage,
) -> list[TargetLatency]:
    """One TargetLatency per bundle, in order."""
    host = _host_runs(bundles, options, stage) if options.host else {}
    predicted, notes = _predictions(model, profiles, bundles, options, stage) if options.predict else ({}, {})
    devices = _device_runs(bundles, options, stage, notes)
    if options.store:
        _store([*host.values(), *devices.values()], options, notes)
    return [_latency(b, host.get(b.target), devices.get(b.target), predicted.get(b.target), notes) for b in bundles]


def _host_runs(bundles: Sequence[TargetBundle], options: ProfileOptions, stage: Stage) -> dict[str, BenchmarkResult]:
    """Identical artifacts (several CPU targets often share one) are timed once."""
    runs: dict[str, BenchmarkResult] = {}
    by_sha: dict[str, BenchmarkResult] = {}
    for bundle in bundles:
        if not bundle.runnable_here:
            continue
        sha = bundle.artifact.sha256
        if sha not in by_sha:
            stage(f"{bundle.target}: timing {bundle.artifact.path.name} on this host")
            by_sha[sha] = benchmark(
                bundle.artifact.path,
                threads=options.threads,
                budget_s=options.budget_s,
                per_op=bundle.artifact.path.suffix == ".onnx",
                target=bundle.target,
            )
        runs[bundle.target] = by_sha[sha]
    return runs


def _predictions(
    model: Model,
    profiles: Sequence[TargetProfile],
    bundles: Sequence[TargetBundle],
    options: ProfileOptions,
    stage: Stage,
) -> tuple[dict[str, BenchmarkResult | Prediction], dict[str, list[str]]]:
    from edge_sdk.predict import predict_targets

    found: dict[str, BenchmarkResult | Prediction] = {}
    notes: dict[str, list[str]] = {}
    for bundle in bundles:
        if bundle.vela is not None:
            found[bundle.target] = Prediction(
                bundle.vela.inference_time_ms, bundle.vela.inference_time_ms, bundle.vela.inference_time_ms,
                "vela-estimate (the NPU part; CPU-placed ops not included)", 0,
            )  # fmt: skip
    rest = [p for p in profiles if p.id not in found]
    if not rest:
        return found, notes
    stage(f"predicting latency on {len(rest)} target(s)")
    failures: list[tuple[str, str]] = []
    precisions = {b.target: b.precision for b in bundles}
    try:
        results = predict_targets(
            model, rest, db=options.db, targets_dirs=options.targets_dirs, failures=failures, precisions=precisions
        )
    except EdgeSdkError as exc:  # a prediction problem (a locked store, say) must not sink the bundles
        failures = [(p.id, str(exc)) for p in rest]
        results = []
    found.update({r.target: r for r in results if r.target is not None})
    for target, reason in failures:
        notes.setdefault(target, []).append(f"no prediction: {reason}")
    return found, notes


def _device_runs(
    bundles: Sequence[TargetBundle], options: ProfileOptions, stage: Stage, notes: dict[str, list[str]]
) -> dict[str, BenchmarkResult]:
    from edge_sdk.remote import bench_device

    by_target = {b.target: b for b in bundles}
    runs: dict[str, BenchmarkResult] = {}
    pairs = [(d, True) for d in options.devices]
    if options.fleet is not None:
        pairs += [(f.device, False) for f in options.fleet.devices if f.device.target in by_target]
    for device, required in pairs:
        bundle = by_target[str(device.target)]
        if not bundle.runnable_here:
            notes.setdefault(bundle.target, []).append(f"{device.address}: Vela output runs in firmware, not over SSH")
            continue
        stage(f"{bundle.target}: timing on {device.address}")
        try:
            result = bench_device(
                device,
                bundle.artifact.path,
                known_hosts=options.known_hosts,
                accept_unknown_host=options.accept_unknown_host,
            )
        except DeviceError as exc:
            if required:
                raise
            notes.setdefault(bundle.target, []).append(f"{device.address}: {exc}")
            continue
        runs.setdefault(bundle.target, result)
    return runs


def _store(results: Sequence[BenchmarkResult], options: ProfileOptions, notes: dict[str, list[str]]) -> None:
    from edge_sdk.store import open_store

    if not results:
        return
    try:
        with open_store(options.db) as store:
            store.add_many(results)
    except EdgeSdkError as exc:
        log.warning("runs not stored: %s", exc)
        notes.setdefault(str(results[0].target), []).append(f"runs not stored: {exc}")


def _latency(
    bundle: TargetBundle,
    host: BenchmarkResult | None,
    device: BenchmarkResult | None,
    predicted: BenchmarkResult | Prediction | None,
    notes: dict[str, list[str]],
) -> TargetLatency:
    prediction = predicted.prediction if isinstance(predicted, BenchmarkResult) else predicted
    threads = predicted.extra.get("threads") if isinstance(predicted, BenchmarkResult) else None
    breakdown, source = _breakdown(host, predicted)
    if not bundle.runnable_here:
        notes.setdefault(bundle.target, []).append("not timed on this host: Vela's output needs the Ethos-U NPU")
    return TargetLatency(
        host=host,
        device=device,
        predicted=prediction,
        predicted_threads=threads,
        op_breakdown_ms=breakdown,
        op_breakdown_source=source,
        notes=tuple(notes.get(bundle.target, ())),
    )


def _breakdown(host: BenchmarkResult | None, predicted: Any) -> tuple[dict[str, float], str | None]:
    if host is not None and host.per_op:
        per_class: dict[str, float] = {}
        for op in host.per_op:
            name = measured_class(op.op_type)
            per_class[name] = per_class.get(name, 0.0) + op.mean_ms
        return per_class, "measured"
    if isinstance(predicted, BenchmarkResult) and predicted.extra.get("per_class_ms"):
        return {k: float(v) for k, v in predicted.extra["per_class_ms"].items()}, "predicted"
    return {}, None
