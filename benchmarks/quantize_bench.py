"""Quantization side by side: ONNX Runtime's quantize_static, nncf.quantize and edge_sdk's quantize()
on the same model, the same calibration and evaluation data and the same threads, in one run.

Each quantization runs in its own subprocess, so its wall time (the quantize call only) and its
peak RSS (the process's VmHWM, imports and calibration data included) are its own. The parent then
verifies every result on the held-out evaluation data twice: as written (exact Q/DQ arithmetic,
what an int8 target computes) and with this host's ONNX Runtime int8 kernels; and times float and
int8 models, interleaved, at 1 and 2 threads.

    python benchmarks/quantize_bench.py                  # all models, writes benchmarks/results/quantize.json
    python benchmarks/quantize_bench.py --models demo --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import ort_quantize_static
from models import CACHE, efficientnet_lite0_onnx

ROOT = Path(__file__).resolve().parents[1]
WORK = CACHE / "quantize_bench"
TARGET = "rpi5"
THREADS = (1, 2)


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    path: Callable[[], Path]
    input_shapes: dict[str, tuple[int, ...]] | None
    data: Callable[[int], dict[str, np.ndarray]]  # eval count -> calib_x, calib_y, eval_x, eval_y (+ extras)
    eval_count: int
    quick_eval_count: int


def _efficientnet_data(eval_count: int) -> dict[str, np.ndarray]:
    from photos import crops, imagenet_nchw

    return {"calib_x": imagenet_nchw(crops(100, seed=1)), "eval_x": imagenet_nchw(crops(eval_count, seed=2))}


def _demo_data(eval_count: int) -> dict[str, np.ndarray]:
    from edge_sdk import load_model
    from edge_sdk.calibration import load_calibration

    model = load_model(ROOT / "edge_sdk" / "assets" / "demo_mnist.onnx")
    recipe = ROOT / "calibration" / "demo.toml"
    calib = load_calibration(recipe, model)
    evaluation = load_calibration(recipe, model, split="evaluation", max_samples=eval_count)
    return {
        "calib_x": np.concatenate([s["input"] for s in calib.samples]),
        "calib_y": calib.labels,
        "eval_x": np.concatenate([s["input"] for s in evaluation.samples]),
        "eval_y": evaluation.labels,
    }


def _ocr_data(eval_count: int) -> dict[str, np.ndarray]:
    from ocr_text import paddle_cls_nchw, strips

    calib, calib_y, _ = strips(100, seed=1)
    evaluation, eval_y, eval_sources = strips(eval_count, seed=2)
    return {
        "calib_x": paddle_cls_nchw(calib),
        "calib_y": calib_y,
        "eval_x": paddle_cls_nchw(evaluation),
        "eval_y": eval_y,
        "eval_sources": eval_sources,
    }


def _ocr_path() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


BENCHES = {
    b.name: b
    for b in (
        Bench(
            "efficientnet-lite0",
            "EfficientNet-Lite0 (pretrained), 100 calibration / {n} evaluation photo crops, no labels",
            efficientnet_lite0_onnx,
            None,
            _efficientnet_data,
            300,
            40,
        ),
        Bench(
            "demo",
            "demo MNIST model, calibration/demo.toml: 256 calibration / {n} labelled evaluation digits",
            lambda: ROOT / "edge_sdk" / "assets" / "demo_mnist.onnx",
            None,
            _demo_data,
            1000,
            200,
        ),
        Bench(
            "ppocr-cls",
            "PP-OCR text-direction classifier (0/180), 100 calibration / {n} labelled evaluation text strips",
            _ocr_path,
            {"x": (1, 3, 48, 192)},
            _ocr_data,
            300,
            60,
        ),
    )
}

# method -> its table label. edge-sdk gets the same calibration samples as the baselines; with the
# auto engine it holds out the last fifth of them itself to choose between engines.
METHODS = {
    "ort": "onnxruntime quantize_static QDQ, per-channel, MinMax ({n} calib)",
    "nncf": "nncf.quantize defaults ({n} calib)",
    "sdk": "edge-sdk quantize rpi5, auto ({c} calib + {s} held out to choose) -> {engine}",
    "sdk-ort": "edge-sdk quantize rpi5 --engine onnxruntime ({n} calib)",
    "sdk-minmax": "edge-sdk quantize rpi5 --engine onnxruntime --ranges minmax ({n} calib)",
}
DEFAULT_METHODS = ("ort", "nncf", "sdk", "sdk-ort", "sdk-minmax")


# ---------------------------------------------------------------- child: one quantization


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _samples(x: np.ndarray, name: str) -> list[dict[str, np.ndarray]]:
    return [{name: x[i : i + 1]} for i in range(len(x))]


def _quantize_ort(model, samples: list[dict], out: Path) -> dict:
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "float.onnx"
        onnx.save(model.proto, source)
        return {"seconds": ort_quantize_static(source, out, samples, per_channel=True)}


def _quantize_nncf(model, samples: list[dict], out: Path) -> dict:
    import nncf
    import onnx

    start = time.perf_counter()
    proto = nncf.quantize(model.proto, nncf.Dataset(samples), subset_size=len(samples))
    seconds = time.perf_counter() - start
    onnx.save(proto, out)
    return {"seconds": seconds, "nncf": nncf.__version__}


def _quantize_sdk(
    model, samples: list[dict], labels: np.ndarray | None, out: Path, *, engine: str, ranges: str = "mse"
) -> dict:
    import onnx

    from edge_sdk.calibration import CalibrationData
    from edge_sdk.quantize import quantize

    calibration = CalibrationData(tuple(samples), labels, f"bench calibration ({len(samples)} samples)")
    start = time.perf_counter()
    result = quantize(model, TARGET, calibration, engine=engine, ranges=ranges, speed_threads=())
    seconds = time.perf_counter() - start
    onnx.save(result.model, out)
    candidates = [
        {
            "engine": c.engine.value,
            "seconds": c.seconds,
            "unfused_nodes": c.unfused_nodes,
            "removed_activations": c.removed_activations,
            "fidelity": c.fidelity.to_dict(),
        }
        for c in result.candidates
    ]
    return {
        "seconds": seconds,
        "calib_samples": len(samples),
        "select_samples": _held_out(result.selected_on),
        "engine": result.engine.value,
        "selected_on": result.selected_on,
        "candidates": candidates,
        "prepass": result.prepass,
        "warnings": list(result.warnings),
        "float_nodes": [f"{f.node} ({f.op_type}): {f.reason}" for f in result.plan.float_nodes],
    }


def _held_out(selected_on: str) -> int:
    """How many calibration samples the SDK held out to choose its engine (from its own words)."""
    first = selected_on.split()[0]
    return int(first) if "held out" in selected_on and first.isdigit() else 0


def child(bench_name: str, method: str, out: Path) -> None:
    os.environ["NNCF_CI"], os.environ["CI"] = "1", "true"  # before nncf is imported (no telemetry)
    from edge_sdk import load_model

    bench = BENCHES[bench_name]
    model = load_model(bench.path(), input_shapes=bench.input_shapes)
    calib_x = np.load(WORK / f"{bench_name}.calib_x.npy")
    labels_path = WORK / f"{bench_name}.calib_y.npy"
    labels = np.load(labels_path) if labels_path.exists() else None
    samples = _samples(calib_x, model.inputs[0].name)
    # what the call needs is imported before the clock starts, as for a user who imported it already
    start = time.perf_counter()
    import onnxruntime.quantization  # noqa: F401

    if method != "ort":
        import nncf  # noqa: F401
    record: dict = {"import_seconds": time.perf_counter() - start, "calib_samples": len(samples)}
    record["rss_before_bytes"] = _peak_rss_bytes()
    model_path = out.with_suffix(".onnx")
    try:
        if method == "ort":
            record |= _quantize_ort(model, samples, model_path)
        elif method == "nncf":
            record |= _quantize_nncf(model, samples, model_path)
        else:
            engine = "auto" if method == "sdk" else "onnxruntime"
            ranges = "minmax" if method == "sdk-minmax" else "mse"
            record |= _quantize_sdk(model, samples, labels, model_path, engine=engine, ranges=ranges)
        record["model"] = str(model_path)
    except Exception:
        record["error"] = traceback.format_exc()
    record["peak_rss_bytes"] = _peak_rss_bytes()
    out.write_text(json.dumps(record, indent=2))


# ---------------------------------------------------------------- parent


def prepare(bench: Bench, eval_count: int) -> dict[str, np.ndarray]:
    """The bench's data as .npy under the cache (shared with the children), generated once."""
    WORK.mkdir(parents=True, exist_ok=True)
    stamp = WORK / f"{bench.name}.eval{eval_count}.done"
    keys = ("calib_x", "calib_y", "eval_x", "eval_y", "eval_sources")
    if not stamp.exists():
        for key in keys:
            (WORK / f"{bench.name}.{key}.npy").unlink(missing_ok=True)
        for key, array in bench.data(eval_count).items():
            np.save(WORK / f"{bench.name}.{key}.npy", array)
        for old in WORK.glob(f"{bench.name}.eval*.done"):
            old.unlink()
        stamp.touch()
    return {k: np.load(WORK / f"{bench.name}.{k}.npy") for k in keys if (WORK / f"{bench.name}.{k}.npy").exists()}


def run_child(bench: Bench, method: str) -> dict:
    out = WORK / "runs" / f"{bench.name}.{method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    args = [sys.executable, __file__, "--child", bench.name, method, str(out)]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if not out.exists():
        return {"error": f"child exited {done.returncode}:\n{done.stderr[-4000:]}"}
    record = json.loads(out.read_text())
    record["child_wall_seconds"] = time.perf_counter() - start
    record["stderr_tail"] = done.stderr[-2000:]
    return record


def fidelity(quantized, reference, samples: list[dict], labels: np.ndarray | None) -> dict:
    from edge_sdk.qdq import unfused_compute_nodes
    from edge_sdk.verify import verify

    row = {"unfused_nodes": len(unfused_compute_nodes(quantized))}
    for mode, optimized in (("sim", False), ("host", True)):
        out = verify(quantized, reference, samples, labels=labels, optimized=optimized).outputs[0]
        row[mode] = {
            "sqnr_db": out.sqnr_db,
            "top1_agreement": out.top1_agreement,
            "accuracy_float": out.accuracy_float,
            "accuracy": out.accuracy_quant,
        }
    return row


def latencies(models: dict[str, bytes], sample: dict, rounds: int, runs: int) -> dict[str, dict[int, float]]:
    """Median over `rounds` of ort_latency_ms (median of `runs` after 10 warm-up runs), models interleaved."""
    from edge_sdk.timing import ort_latency_ms

    times: dict[str, dict[int, list[float]]] = {name: {t: [] for t in THREADS} for name in models}
    for _ in range(rounds):
        for threads in THREADS:
            for name, data in models.items():
                times[name][threads].append(ort_latency_ms(data, sample, threads=threads, warmup=10, runs=runs))
    return {name: {t: statistics.median(v) for t, v in per.items()} for name, per in times.items()}


def _ocr_source_accuracy(reference, data: dict[str, np.ndarray], samples: list[dict]) -> dict[str, float]:
    from edge_sdk.verify import run_outputs

    predicted = next(iter(run_outputs(reference, samples).values())).argmax(axis=1)
    correct = predicted == data["eval_y"]
    return {str(s): float(correct[data["eval_sources"] == s].mean()) for s in np.unique(data["eval_sources"])}


def _log(message: str, since: float) -> None:
    print(f"  [{time.perf_counter() - since:6.0f} s] {message}", file=sys.stderr, flush=True)


def bench_model(bench: Bench, eval_count: int, methods: list[str], since: float) -> dict:
    """Quantize with every method (one subprocess each), then verify each result."""
    import onnx

    from edge_sdk import load_model

    data = prepare(bench, eval_count)
    model = load_model(bench.path(), input_shapes=bench.input_shapes)
    samples = _samples(data["eval_x"], model.inputs[0].name)
    labels = data.get("eval_y")
    report: dict = {
        "title": bench.title.format(n=len(samples)),
        "calib_samples": len(data["calib_x"]),
        "eval_samples": len(samples),
        "rows": {},
    }
    if "eval_sources" in data:
        report["float_accuracy_by_source"] = _ocr_source_accuracy(model.proto, data, samples)
    for method in methods:
        _log(f"{bench.name}: quantizing with {method}", since)
        record = run_child(bench, method)
        if "model" in record:
            _log(f"{bench.name}: verifying {method} on {len(samples)} samples", since)
            start = time.perf_counter()
            record |= fidelity(onnx.load(record["model"]), model, samples, labels)
            record["verify_seconds"] = time.perf_counter() - start
        report["rows"][method] = record
    report["float_model"] = model.proto.SerializeToString()
    report["sample"] = samples[0]
    return report


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _label(method: str, record: dict, calib_count: int) -> str:
    n_select = record.get("select_samples", 0)
    engine = record.get("engine", "?")
    return METHODS[method].format(n=calib_count, c=calib_count - n_select, s=n_select, engine=engine)


def print_table(name: str, report: dict) -> None:
    float_ms = report["latency_ms"]["fp32"]
    first = next(r for r in report["rows"].values() if "sim" in r) if report["rows"] else None
    acc_float = first["sim"]["accuracy_float"] if first else None
    print(f"\n{name}: {report['title']}")
    if acc_float is not None:
        print(f"float top-1 accuracy on the evaluation set: {acc_float:.2%}")
    if "float_accuracy_by_source" in report:
        parts = ", ".join(f"{k} {v:.1%}" for k, v in report["float_accuracy_by_source"].items())
        print(f"float accuracy by source photo: {parts}")
    header = (
        f"{'method':72} {'SQNR sim':>8} {'agree sim':>9} {'acc sim (drop)':>15} {'SQNR host':>9} "
        f"{'agree host':>10} {'acc host':>8} {'ms fp32 1t/2t':>14} {'ms int8 1t/2t':>14} "
        f"{'quantize s':>10} {'peak GB':>7} {'unfused':>7}"
    )
    print(header)
    print("-" * len(header))
    for method, row in report["rows"].items():
        label = _label(method, row, report["calib_samples"])
        if "sim" not in row:
            print(f"{label:72} FAILED: {row.get('error', '?').strip().splitlines()[-1]}")
            continue
        sim, host = row["sim"], row["host"]
        drop = None if sim["accuracy"] is None else (sim["accuracy"] - sim["accuracy_float"]) * 100
        acc = "-" if drop is None else f"{sim['accuracy']:.2%} ({drop:+.2f})"
        ms = report["latency_ms"][method]
        print(
            f"{label:72} {sim['sqnr_db']:>8.2f} {_fmt(sim['top1_agreement'], '>9.1%')} {acc:>15} "
            f"{host['sqnr_db']:>9.2f} {_fmt(host['top1_agreement'], '>10.1%'):>10} "
            f"{_fmt(host['accuracy'], '>8.2%'):>8} {float_ms[1]:>6.2f}/{float_ms[2]:<7.2f} "
            f"{ms[1]:>6.2f}/{ms[2]:<7.2f} {row['seconds']:>10.1f} {row['peak_rss_bytes'] / 1e9:>7.2f} "
            f"{row['unfused_nodes']:>7}"
        )


def print_op_classes(report: dict) -> None:
    """Where each model spends its time at 1 thread, per op class (ONNX Runtime's profiler): the why
    behind an int8 model that is slower than float."""
    per = report["op_class_ms_1t"]
    classes = sorted({c for times in per.values() for c in times}, key=lambda c: -per["fp32"].get(c, 0.0))
    print(f"  ms per op class at 1 thread: {'method':12} " + " ".join(f"{c:>11}" for c in classes))
    for name, times in per.items():
        print(f"  {'':29}{name:12} " + " ".join(f"{times.get(c, 0.0):>11.3f}" for c in classes))


def _host() -> dict:
    import onnxruntime

    from edge_sdk.hostinfo import read_host_info

    info = read_host_info()
    return {
        "cpu": info.cpu_model,
        "cores": info.cores,
        "isa": list(info.isa),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def main() -> None:
    import onnx

    from edge_sdk.timing import op_class_ms

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(DEFAULT_METHODS), help="default: all of them"
    )
    parser.add_argument("--quick", action="store_true", help="fewer evaluation samples and timing runs (smoke run)")
    args = parser.parse_args()
    start = time.perf_counter()
    rounds, runs = (1, 20) if args.quick else (3, 50)
    reports = {}
    for name in args.models:
        bench = BENCHES[name]
        count = bench.quick_eval_count if args.quick else bench.eval_count
        reports[name] = bench_model(bench, count, args.methods, start)
    _log("timing float and int8 models (interleaved)", start)
    load_before = os.getloadavg()
    for report in reports.values():
        models = {"fp32": report.pop("float_model")}
        models |= {m: onnx.load(r["model"]).SerializeToString() for m, r in report["rows"].items() if "model" in r}
        sample = report.pop("sample")
        report["latency_ms"] = latencies(models, sample, rounds, runs)
        report["op_class_ms_1t"] = {name: op_class_ms(data, sample, runs=runs) for name, data in models.items()}
    load = {"before_timing": load_before, "after_timing": os.getloadavg()}  # other jobs share the cores
    total = time.perf_counter() - start
    for name, report in reports.items():
        print_table(name, report)
        print_op_classes(report)
    print(
        f"\nlatency: ONNX Runtime CPU EP, median over {rounds} interleaved round(s) of the median of {runs} runs "
        f"after 10 warm-up runs, batch 1. Fidelity 'sim' = Q/DQ evaluated exactly (ORT optimizations off); "
        f"'host' = this host's ORT int8 kernels. Quantize s = the quantize call only, in its own process; "
        f"peak GB = that process's VmHWM (imports and calibration data included). Load average (1 min) "
        f"{load['before_timing'][0]:.1f} before / {load['after_timing'][0]:.1f} after timing on "
        f"{os.cpu_count()} cores. Total {total:.0f} s."
    )
    out = Path(__file__).resolve().parent / "results" / ("quantize.quick.json" if args.quick else "quantize.json")
    out.parent.mkdir(exist_ok=True)
    settings = {
        "target": TARGET,
        "methods": args.methods,
        "edge_sdk_selection": "auto: the SDK holds out the last fifth of the calibration set to choose the engine",
        "threads": THREADS,
        "latency_rounds": rounds,
        "latency_runs": runs,
        "load": load,
    }
    payload = {"host": _host(), "settings": settings, "total_seconds": total, "models": reports}
    out.write_text(json.dumps(_finite(payload), indent=2, default=str))
    print(f"wrote {out}")


def _finite(value):
    """JSON-safe: numpy scalars to Python, inf/nan (identical outputs) to null."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    else:
        main()
