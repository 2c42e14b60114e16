"""Latency prediction, held out: fit the per-op model on some models measured on this host, predict
others, compare with their measurements. LiteRT (.tflite from lower_to_tflite) and ONNX Runtime (.onnx),
1 and 2 threads.

    python benchmarks/predict_bench.py            # full zoo, 7 interleaved repeats (~4-5 min on 2 cores)
    python benchmarks/predict_bench.py --quick    # a smaller zoo, 3 repeats (~1 min)
    python benchmarks/predict_bench.py --reuse    # evaluate the measurements of the previous run again

Splits: "2-fold" (models of each family alternate by MACs between two folds; each fold's fit predicts
the other) and "family-out" (each family predicted by a fit on all the other families). Every model
is measured `repeats` times in a shuffled order (the host is shared) and the median of the repeats'
medians is its latency. On a loaded host that latency partly measures the load, so the evaluation is
repeated with each run's fastest sample in place of its median (contention-robust), which shows the
model's own error. Also, when research/reference_latencies.csv is found: published Raspberry Pi
XNNPACK latencies predicted leave-one-out on the same Pi, from the other Pi, and from this host.
Prints tables; writes benchmarks/results/predict_bench.json (and the measurements to predict_bench.sqlite).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_zoo import ZooModel, zoo

from edge_sdk.benchmark import benchmark
from edge_sdk.latency_model import Measurement, fit
from edge_sdk.lower.lower import lower_to_tflite
from edge_sdk.model import Model, load_model
from edge_sdk.predict import FeatureCache, predict, reference_measurements, store_measurements
from edge_sdk.profile import Precision, TargetProfile
from edge_sdk.runner import file_sha256
from edge_sdk.store import open_store
from edge_sdk.targets import list_targets, load_target

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "research" / "reference_latencies.csv"
RUNTIMES = {"litert": ".tflite", "onnxruntime": ".onnx"}
THREADS = (1, 2)


@dataclass(frozen=True)
class Built:
    entry: ZooModel
    model: Model
    files: dict[str, Path]  # runtime -> file


def build(entries: list[ZooModel], where: Path, cache: FeatureCache) -> list[Built]:
    built = []
    for entry in entries:
        model = load_model(entry.build())
        files = {"onnxruntime": where / f"{entry.name}.onnx", "litert": where / f"{entry.name}.tflite"}
        onnx.save(model.proto, files["onnxruntime"])
        files["litert"].write_bytes(lower_to_tflite(model).flatbuffer)
        for path in files.values():
            cache.add(model, file_sha256=file_sha256(path), precision=Precision.FP32)
        built.append(Built(entry, model, files))
    return built


def measure(built: list[Built], db: Path, host: TargetProfile, *, repeats: int, budget_s: float) -> None:
    jobs = [(b, rt, t) for b in built for rt in RUNTIMES for t in THREADS]
    rng = random.Random(0)
    start = time.perf_counter()
    with open_store(db) as store:
        for repeat in range(repeats):
            rng.shuffle(jobs)  # spread each configuration over the run: the host's load changes
            for b, runtime, threads in jobs:
                result = benchmark(
                    b.files[runtime], threads=threads, runs=40, budget_s=budget_s, warmup=3, min_runs=5, target=host
                )
                store.add(result)
            print(f"  repeat {repeat + 1}/{repeats} done after {time.perf_counter() - start:.0f} s", flush=True)


def fastest(m: Measurement) -> Measurement:
    """The run with its fastest sample as its latency: the least disturbed by other processes."""
    f, result = m
    assert result.stats is not None
    return f, replace(result, stats=replace(result.stats, median_ms=result.stats.min_ms))


def measured_latency(measurements: list[Measurement]) -> dict[tuple[str, str, int], list[float]]:
    """(model, runtime, threads) -> the medians of its repeats."""
    table: dict[tuple[str, str, int], list[float]] = {}
    for f, result in measurements:
        assert result.conditions is not None
        table.setdefault((f.model_name, f.runtime, result.conditions.threads), []).append(result.latency_ms)
    return table


def splits(built: list[Built]) -> dict[str, list[tuple[set[str], set[str]]]]:
    """name -> list of (train models, test models)."""
    ordered = sorted(built, key=lambda b: (b.entry.family, sum(_macs(b.model))))
    folds = [{b.model.name for b in ordered[i::2]} for i in range(2)]
    names = {b.model.name for b in built}
    families = sorted({b.entry.family for b in built})
    by_family = [{b.model.name for b in built if b.entry.family == f} for f in families]
    return {
        "2-fold": [(names - folds[0], folds[0]), (names - folds[1], folds[1])],
        "family-out": [(names - fam, fam) for fam in by_family],
    }


def _macs(model: Model) -> list[int]:
    from edge_sdk.costs import Graph, node_costs

    return [c.macs for c in node_costs(Graph(model))]


def evaluate(built: list[Built], measurements: list[Measurement], host: TargetProfile) -> list[dict]:
    latency = measured_latency(measurements)
    rows = []
    for split, folds in splits(built).items():
        for train, test in folds:
            fitted = fit([m for m in measurements if m[0].model_name in train])
            for b in built:
                if b.model.name not in test:
                    continue
                for runtime in RUNTIMES:
                    for threads in THREADS:
                        if (b.model.name, runtime, threads) not in latency:
                            continue  # --reuse after the model or its lowering changed: no measurement
                        p = predict(
                            b.model,
                            host,
                            precision=Precision.FP32,
                            threads=threads,
                            runtime=runtime,
                            measurements=fitted,
                        ).prediction
                        assert p is not None
                        truth = statistics.median(latency[(b.model.name, runtime, threads)])
                        rows.append(
                            {
                                "split": split,
                                "model": b.model.name,
                                "family": b.entry.family,
                                "runtime": runtime,
                                "threads": threads,
                                "measured_ms": truth,
                                "predicted_ms": p.latency_ms,
                                "low_ms": p.low_ms,
                                "high_ms": p.high_ms,
                                "fit_models": p.fit_models,
                            }
                        )
    return rows


def summarize(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    summary = []
    for key, members in sorted(groups.items()):
        errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1.0) for r in members]
        inside = [r["low_ms"] <= r["measured_ms"] <= r["high_ms"] for r in members]
        summary.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": len(members),
                "mdape_pct": 100 * statistics.median(errors),
                "within_10_pct": 100 * sum(e <= 0.10 for e in errors) / len(errors),
                "within_25_pct": 100 * sum(e <= 0.25 for e in errors) / len(errors),
                "band_covers_pct": 100 * sum(inside) / len(inside),
                "band_width_x": statistics.median(r["high_ms"] / r["low_ms"] for r in members),
            }
        )
    return summary


def noise(measurements: list[Measurement]) -> list[dict]:
    """How much the repeats of one configuration differ: the floor under any prediction error."""
    spread: dict[tuple[str, int], list[float]] = {}
    for (_, runtime, threads), values in measured_latency(measurements).items():
        mid = statistics.median(values)
        spread.setdefault((runtime, threads), []).extend(abs(v / mid - 1.0) for v in values)
    return [
        {"runtime": rt, "threads": t, "repeat_mdape_pct": 100 * statistics.median(v)}
        for (rt, t), v in sorted(spread.items())
    ]


def reference_rows(built: list[Built], host_measurements: list[Measurement], path: Path) -> list[dict]:
    """Published Pi latencies: leave-one-model-out on the same Pi, from the other Pi, from this host."""
    models = {b.entry.reference_name: b.model for b in built if b.entry.reference_name}
    targets = list_targets()
    refs = reference_measurements(path, models, targets)
    by_model = {b.model.name: b.entry.reference_name for b in built}
    rows = []
    for f, result in refs:
        assert result.conditions is not None
        target = load_target(f.target)
        threads, truth = result.conditions.threads, result.latency_ms
        sources = {
            "same Pi, model left out": [m for m in refs if m[0].target == f.target and m[0].model_name != f.model_name],
            "other Pi (peak ratio)": [m for m in refs if m[0].target != f.target],
            "this host (clock x cores)": [m for m in host_measurements if m[0].runtime == "litert"],
        }
        for how, train in sources.items():
            if not train:
                continue
            model = models[by_model[f.model_name] or ""]
            p = predict(
                model, target, precision=f.precision, threads=threads, runtime="litert", measurements=fit(train)
            ).prediction
            assert p is not None
            rows.append(
                {
                    "split": how,
                    "target": f.target,
                    "model": result.model_name,
                    "threads": threads,
                    "runtime": "litert",
                    "measured_ms": truth,
                    "predicted_ms": p.latency_ms,
                    "low_ms": p.low_ms,
                    "high_ms": p.high_ms,
                    "method": p.method,
                }
            )
    return rows


def print_table(title: str, summary: list[dict], keys: tuple[str, ...]) -> None:
    print(f"\n{title}")
    head = " ".join(f"{k:>12}" for k in keys)
    print(f"{head} {'n':>4} {'MdAPE %':>8} {'<=10% %':>8} {'<=25% %':>8} {'in band %':>9} {'band x':>7}")
    for s in summary:
        cells = " ".join(f"{s[k]!s:>12}" for k in keys)
        print(
            f"{cells} {s['n']:>4} {s['mdape_pct']:>8.1f} {s['within_10_pct']:>8.0f} {s['within_25_pct']:>8.0f} "
            f"{s['band_covers_pct']:>9.0f} {s['band_width_x']:>7.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller zoo and 3 repeats")
    parser.add_argument("--reuse", action="store_true", help="evaluate the stored measurements of the last run")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="reference_latencies.csv")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    suffix = ".quick" if args.quick else ""
    db = RESULTS / f"predict_bench{suffix}.sqlite"
    repeats, budget_s = (3, 0.3) if args.quick else (7, 0.35)
    started = time.perf_counter()
    host = load_target("host")
    cache = FeatureCache()
    with tempfile.TemporaryDirectory() as tmp:
        built = build(zoo(quick=args.quick), Path(tmp), cache)
        print(f"{len(built)} models built in {time.perf_counter() - started:.0f} s")
        if not args.reuse:
            for stale in RESULTS.glob(f"predict_bench{suffix}.sqlite*"):
                stale.unlink()
            measure(built, db, host, repeats=repeats, budget_s=budget_s)
    with open_store(db) as store:
        measurements = store_measurements(store, host, cache)
    document = {
        "command": "python benchmarks/predict_bench.py" + (" --quick" if args.quick else ""),
        "host": {"cpu": host.soc, "cores": host.compute.cores, "clock_mhz": host.compute.clock_mhz},
        "repeats": repeats,
        "budget_s_per_measurement": budget_s,
        "models": [b.model.name for b in built],
        **report(built, measurements, host, args.reference),
        "seconds": time.perf_counter() - started,
    }
    print(f"\ntotal {document['seconds']:.0f} s")
    out = RESULTS / f"predict_bench{suffix}.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")


def report(built: list[Built], measurements: list[Measurement], host: TargetProfile, reference: Path) -> dict:
    keys = ("split", "runtime", "threads")
    rows = evaluate(built, measurements, host)
    summary = summarize(rows, keys)
    print_table("held-out prediction on this host (fit on some models, predict the others): run medians", summary, keys)
    fastest_measurements = [fastest(m) for m in measurements]
    fastest_rows = evaluate(built, fastest_measurements, host)
    fastest_summary = summarize(fastest_rows, keys)
    print_table("the same with each run's fastest sample (contention-robust)", fastest_summary, keys)
    repeat_noise, fastest_noise = noise(measurements), noise(fastest_measurements)
    print("\nrepeatability (median |repeat / median of the repeats - 1|): the floor under any prediction error")
    for n, f in zip(repeat_noise, fastest_noise, strict=True):
        print(f"  {n['runtime']:>12} {n['threads']}t  run medians {n['repeat_mdape_pct']:4.1f} %   "
              f"fastest samples {f['repeat_mdape_pct']:4.1f} %")  # fmt: skip
    ref_rows = reference_rows(built, measurements, reference) if reference.exists() else []
    ref_summary = summarize(ref_rows, ("split", "target"))
    if ref_rows:
        print_table("published Raspberry Pi XNNPACK latencies (4 threads), predicted", ref_summary, ("split", "target"))
        for r in ref_rows:
            print(f"  {r['split']:28} {r['target']:11} {r['model']:20} measured {r['measured_ms']:7.1f} ms  "
                  f"predicted {r['predicted_ms']:7.1f} [{r['low_ms']:.1f}, {r['high_ms']:.1f}]")  # fmt: skip
    return {
        "summary": summary,
        "repeatability": repeat_noise,
        "predictions": rows,
        "fastest_summary": fastest_summary,
        "fastest_repeatability": fastest_noise,
        "fastest_predictions": fastest_rows,
        "reference_summary": ref_summary,
        "reference_predictions": ref_rows,
    }


if __name__ == "__main__":
    main()
