"""The measurements latency prediction is fitted on, and the models behind them.

A measured file is known by its sha256 only, so a `FeatureCache` holds the loaded models by the sha256
of every file measured from them and turns stored runs into (features, result) pairs. The SDK's own zoo
(edge_sdk.zoo) is always known: `zoo_cache()` registers each zoo model under the sha256 of the .onnx and
the .tflite file `calibrate_host` writes for it (builds are deterministic, so the hashes match in every
process). The published latencies (targets/reference_latencies.csv) are read against the zoo's graphs.

    results = calibrate_host()                     # measure the calibration models here, store the runs
    cache = zoo_cache()                            # + cache.add(model, file_sha256=...) for your own
    with open_store() as store:
        runs = store_measurements(store, load_target("host"), cache)
    runs += reference_measurements(reference_csv(), zoo.reference_models(), list_targets())
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import onnx

from edge_sdk.errors import UsageError
from edge_sdk.latency_model import Measurement, ModelFeatures, features, runtime_family
from edge_sdk.measurement import BenchmarkResult, Conditions, LatencyStats, Source
from edge_sdk.model import Model, load_model
from edge_sdk.profile import Precision, TargetProfile
from edge_sdk.store import ResultStore, open_store
from edge_sdk.targets import data_dir, load_target
from edge_sdk.tflite_features import TfliteModel
from edge_sdk.zoo import CALIBRATION, REFERENCE_NAMES, calibration_models, zoo_model

log = logging.getLogger(__name__)

# Per measurement. The calibration models run in 0.5-40 ms here, so 0.5 s gives 12-50 timed runs and the
# whole default set (11 models, 2 runtimes, 2 thread counts) measures in about 30 s on 2 cores.
CALIBRATION_RUNS = 50
CALIBRATION_BUDGET_S = 0.5
CALIBRATION_WARMUP = 3
SUFFIXES = {"litert": ".tflite", "onnxruntime": ".onnx"}  # the file each runtime measures


class FeatureCache:
    """Loaded models by the sha256 of every file measured from them, and their features per target."""

    def __init__(self) -> None:
        self._models: dict[str, tuple[Model | TfliteModel, Precision]] = {}
        self._features: dict[tuple[str, str, str], ModelFeatures] = {}

    def add(
        self, model: Model | TfliteModel, *, file_sha256: str | None = None, precision: Precision = Precision.FP32
    ) -> None:
        """Register `model` under its own sha256 and that of a file made from it (a .tflite export)."""
        for sha in {model.sha256, file_sha256} - {None}:
            self._models[str(sha)] = (model, precision)

    def features(self, sha256: str, target: TargetProfile, runtime: str) -> ModelFeatures | None:
        if sha256 not in self._models:
            return None
        model, precision = self._models[sha256]
        key = (model.sha256, target.id, runtime_family(runtime))
        if key not in self._features:
            if isinstance(model, TfliteModel):
                self._features[key] = model.features(target, precision=precision, runtime=runtime)
            else:
                self._features[key] = features(model, target, precision=precision, runtime=runtime)
        return self._features[key]

    def measurement(self, result: BenchmarkResult, target: TargetProfile) -> Measurement | None:
        """The result with its model's features, or None for a prediction or a model not in the cache."""
        if result.stats is None or result.conditions is None:
            return None
        found = self.features(result.model_sha256, target, result.conditions.runtime)
        return None if found is None else (found, result)


def store_measurements(store: ResultStore, target: TargetProfile, cache: FeatureCache) -> list[Measurement]:
    """Every measured run of `target` in the store whose model the cache knows (host runs stored
    without a target count for `host`)."""
    runs = [r.result for r in store.list_runs(target=target.id)]
    if target.id == "host":
        runs += [r.result for r in store.list_runs(source=Source.HOST) if r.result.target is None]
    pairs = [cache.measurement(r, target) for r in runs if r.source is not Source.PREDICTED]
    found = [p for p in pairs if p is not None]
    if len(found) < len(pairs):
        log.info("%d stored runs of %s skipped: their models are not in the cache", len(pairs) - len(found), target.id)
    return found


# --- the zoo ------------------------------------------------------------------------------------------


def zoo_files(model: Model, runtimes: Sequence[str] = tuple(SUFFIXES)) -> dict[str, bytes]:
    """The file each runtime measures, by runtime: the ONNX graph as loaded and its TFLite lowering."""
    from edge_sdk.lower.lower import lower_to_tflite  # the lowering is only needed to write or hash files

    files = {}
    if "onnxruntime" in runtimes:
        files["onnxruntime"] = model.proto.SerializeToString(deterministic=True)
    if "litert" in runtimes:
        files["litert"] = lower_to_tflite(model).flatbuffer
    return files


@functools.cache
def _zoo_hashes() -> tuple[tuple[Model, str, str], ...]:
    """(model, .onnx sha256, .tflite sha256) of every calibration and reference model, once per process."""
    hashes = []
    for name in dict.fromkeys([*CALIBRATION, *REFERENCE_NAMES.values()]):
        model = zoo_model(name)
        files = {runtime: hashlib.sha256(data).hexdigest() for runtime, data in zoo_files(model).items()}
        hashes.append((model, files["onnxruntime"], files["litert"]))
    return tuple(hashes)


def zoo_cache() -> FeatureCache:
    """A new cache that knows every zoo model, under the sha256 of each file `calibrate_host` writes."""
    cache = FeatureCache()
    for model, onnx_sha, tflite_sha in _zoo_hashes():
        cache.add(model, file_sha256=onnx_sha)
        cache.add(model, file_sha256=tflite_sha)
    return cache


def calibrate_host(
    *,
    db: str | Path | None = None,
    threads: Sequence[int] | None = None,
    runtimes: Sequence[str] = ("litert", "onnxruntime"),
    quick: bool = False,
    runs: int = CALIBRATION_RUNS,
    budget_s: float = CALIBRATION_BUDGET_S,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[BenchmarkResult]:
    """Measure the calibration models (edge_sdk.zoo) on this host with each runtime (ONNX Runtime on the
    .onnx, LiteRT on the lowered .tflite) at each thread count (default 1 and every core), and store every
    run in the results store as it finishes (target "host"). `progress(done, total, what)` follows the
    measurements. Files are written to a temporary directory and removed."""
    from edge_sdk.benchmark import benchmark

    unknown = [r for r in runtimes if r not in SUFFIXES]
    if unknown or not runtimes:
        raise UsageError(f"calibration runtimes are {' and '.join(SUFFIXES)}; got {', '.join(unknown) or 'none'}")
    host = load_target("host")
    counts = tuple(dict.fromkeys(threads or (1, host.compute.cores or 1)))
    models = calibration_models(quick)
    total = len(models) * len(runtimes) * len(counts)
    results: list[BenchmarkResult] = []
    with tempfile.TemporaryDirectory(prefix="edge-sdk-calibrate-") as tmp, open_store(db) as store:
        for name, proto in models:
            paths = _write_files(name, proto, runtimes, Path(tmp))
            for runtime in runtimes:
                for count in counts:
                    if progress:
                        progress(len(results), total, f"{name} ({runtime}, {count} thread(s))")
                    result = benchmark(
                        paths[runtime],
                        threads=count,
                        runs=runs,
                        budget_s=budget_s,
                        warmup=min(CALIBRATION_WARMUP, runs),
                        min_runs=min(5, runs),
                        target=host,
                    )
                    store.add(result)
                    results.append(result)
    if progress:
        progress(total, total, "done")
    log.info("calibrated this host: %d runs of %d models stored", len(results), len(models))
    return results


def _write_files(name: str, proto: onnx.ModelProto, runtimes: Sequence[str], directory: Path) -> dict[str, Path]:
    """NAME.onnx and NAME.tflite as `zoo_cache` hashes them (so the runner names the runs NAME)."""
    paths = {}
    for runtime, data in zoo_files(load_model(proto, simplify=False), runtimes).items():
        paths[runtime] = directory / f"{name}{SUFFIXES[runtime]}"
        paths[runtime].write_bytes(data)
    return paths


# --- published latencies ------------------------------------------------------------------------------


def reference_csv() -> Path:
    """The published latencies shipped with the SDK (a copy of research/reference_latencies.csv)."""
    return data_dir("targets") / "reference_latencies.csv"


def reference_measurements(
    path: str | Path, models: Mapping[str, Model], targets: Sequence[TargetProfile]
) -> list[Measurement]:
    """Published latencies (reference_latencies.csv) of the models named in `models`, on the devices
    whose profile `soc` appears in brackets in the device column. "multi (all cores)" is taken as the
    profile's core count; rows on other devices, models or thread counts are skipped."""
    measured: list[Measurement] = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            profile = next((t for t in targets if t.soc and f"({t.soc})" in row["device"]), None)
            threads = {"1": 1, "multi (all cores)": profile.compute.cores if profile else None}.get(row["threads"])
            model = models.get(row["model"])
            if profile is None or model is None or not threads or row["precision"] not in {p.value for p in Precision}:
                continue
            result = _reference_result(row, model, profile, threads)
            measured.append(
                (features(model, profile, precision=Precision(row["precision"]), runtime=row["runtime"]), result)
            )
    return measured


def _reference_result(row: Mapping[str, str], model: Model, profile: TargetProfile, threads: int) -> BenchmarkResult:
    latency = float(row["latency_ms"])
    device = row["device"]
    return BenchmarkResult(
        source=Source.DEVICE,
        model_name=row["model"],
        model_sha256=model.sha256,
        target=profile.id,
        device=device,
        init_ms=None,
        first_run_ms=None,
        stats=LatencyStats.from_samples([latency]),
        samples_ms=(latency,),
        peak_rss_mb=None,
        conditions=Conditions(device, device, "", "", "", row["runtime"], "", threads),
        sdk_version="",
        created_at="",
        extra={"reference": row["source"]},
    )
