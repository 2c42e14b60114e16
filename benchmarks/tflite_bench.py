"""ONNX -> TFLite side by side: edge-sdk's lowering (no TensorFlow) against onnx2tf (TensorFlow, in its
own virtual environment, never a dependency) and ai-edge-quantizer's default int8 recipe, on the same
models, calibration and evaluation data and threads, in one run.

Every conversion runs in its own subprocess, so its wall time (calibration included for int8) and
peak RSS are its own. The parent then verifies every .tflite in LiteRT against the float ONNX model in
ONNX Runtime on the held-out evaluation data, and times them all, interleaved, at 1 and 2 threads.

    python benchmarks/tflite_bench.py                        # writes benchmarks/results/tflite.json
    python benchmarks/tflite_bench.py --models demo --quick

onnx2tf runs when ~/.cache/edge-sdk-bench/onnx2tf-venv exists (see benchmarks/onnx2tf_peer.py for
how it was made); otherwise its rows say so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import CACHE
from quantize_bench import BENCHES, Bench, _host, _peak_rss_bytes, prepare

ROOT = Path(__file__).resolve().parents[1]
WORK = CACHE / "tflite_bench"
PEER_PYTHON = CACHE / "onnx2tf-venv" / "bin" / "python"
TARGET = "rpi5"
THREADS = (1, 2)
METHODS = ("sdk-fp32", "sdk-int8", "aeq-default-int8", "onnx2tf")
LABELS = {
    "sdk-fp32": "edge-sdk fp32",
    "sdk-int8": "edge-sdk int8 (bias correction, min/max ranges, float I/O)",
    "aeq-default-int8": "ai-edge-quantizer default static int8 on edge-sdk's float .tflite",
    "onnx2tf-fp32": "onnx2tf fp32",
    "onnx2tf-int8": "onnx2tf full-integer int8 (int8 I/O)",
}


# ---------------------------------------------------------------- children: one conversion each


def _load(bench: Bench):
    from edge_sdk.model import load_model

    return load_model(bench.path(), input_shapes=bench.input_shapes)


def _calib(bench: Bench, model) -> list[dict[str, np.ndarray]]:
    x = np.load(WORK.parent / "quantize_bench" / f"{bench.name}.calib_x.npy")
    return [{model.inputs[0].name: x[i : i + 1]} for i in range(len(x))]


def convert_sdk(bench: Bench, precision: str, out: Path) -> dict:
    from edge_sdk.calibration import load_calibration
    from edge_sdk.export import _prepass
    from edge_sdk.lower.io_types import float_io
    from edge_sdk.lower.lower import lower_to_tflite
    from edge_sdk.profile import Precision
    from edge_sdk.quantize import Rounding
    from edge_sdk.tflite_quantize import quantize_tflite

    model = _load(bench)
    start = time.perf_counter()
    if precision == "fp32":
        data = lower_to_tflite(model).flatbuffer
    else:
        calib = load_calibration(_calib(bench, model), model)
        prepared, _ = _prepass(model, Precision.INT8, calib, Rounding.BIAS_CORRECT, lambda _: None)
        lowered = lower_to_tflite(prepared, int8_friendly=True)
        data = float_io(quantize_tflite(lowered.flatbuffer, Precision.INT8, calib.to_nhwc()))
    seconds = time.perf_counter() - start
    out.write_bytes(data)
    return {"seconds": seconds}


def convert_aeq_default(bench: Bench, out: Path) -> dict:
    from ai_edge_quantizer import quantizer, recipe

    from edge_sdk.lower.lower import lower_to_tflite

    model = _load(bench)
    float_model = lower_to_tflite(model).flatbuffer
    samples = [{k: v.transpose(0, 2, 3, 1) for k, v in s.items()} for s in _calib(bench, model)]
    start = time.perf_counter()
    q = quantizer.Quantizer(bytearray(float_model), recipe.static_wi8_ai8())
    result = q.quantize(q.calibrate({"serving_default": samples}), enable_progress_report=False)
    seconds = time.perf_counter() - start
    out.write_bytes(bytes(result.quantized_model))
    return {"seconds": seconds}


def child(bench_name: str, method: str, out: Path) -> None:
    bench = BENCHES[bench_name]
    tflite = out.with_suffix(".tflite")
    try:
        if method.startswith("sdk-"):
            record = convert_sdk(bench, method.split("-")[1], tflite)
        else:
            record = convert_aeq_default(bench, tflite)
        record.update(path=str(tflite), peak_rss_bytes=_peak_rss_bytes())
    except Exception:
        record = {"error": traceback.format_exc()}
    out.write_text(json.dumps(record))


def run_child(bench: Bench, method: str) -> dict:
    out = WORK / "runs" / f"{bench.name}.{method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, __file__, "--child", bench.name, method, str(out)], capture_output=True, text=True
    )
    if not out.exists():
        return {"error": f"child exited {done.returncode}: {done.stderr[-3000:]}"}
    return json.loads(out.read_text())


def run_onnx2tf(bench: Bench) -> dict[str, dict]:
    """onnx2tf in its own venv: fp32 and full-integer int8 with our calibration data (no download)."""
    if not PEER_PYTHON.exists():
        missing = {"error": f"no onnx2tf environment at {PEER_PYTHON.parent.parent}"}
        return {"onnx2tf-fp32": missing, "onnx2tf-int8": missing}
    model = _load(bench)
    calib = np.concatenate([s[model.inputs[0].name] for s in _calib(bench, model)]).transpose(0, 2, 3, 1)
    calib_file = WORK / f"{bench.name}.calib_nhwc.npy"
    np.save(calib_file, calib.astype(np.float32))
    out_dir = WORK / "onnx2tf" / bench.name
    args = [str(PEER_PYTHON), str(Path(__file__).with_name("onnx2tf_peer.py")), "--model", str(bench.path())]
    args += ["--out", str(out_dir), "--int8", "--calib", str(calib_file), "--mean", "0", "--std", "1"]
    for name, shape in (bench.input_shapes or {}).items():
        args += ["--input-shape", f"{name}=" + "x".join(map(str, shape))]
    done = subprocess.run(args, capture_output=True, text=True, cwd=WORK)
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError:
        error = {"error": f"onnx2tf_peer exited {done.returncode}: {done.stderr[-3000:]}"}
        return {"onnx2tf-fp32": error, "onnx2tf-int8": error}
    return {
        "onnx2tf-fp32": doc.get("fp32") or {"error": str(doc.get("errors"))},
        "onnx2tf-int8": doc.get("int8") or {"error": str(doc.get("errors"))},
    }


# ---------------------------------------------------------------- parent: verify and time


def verify(path: Path, model, samples: list[dict], labels) -> dict:
    from edge_sdk.lower.lower import lower_to_tflite  # noqa: F401 - imports LiteRT once
    from edge_sdk.tflite_verify import verify_tflite
    from edge_sdk.xnnpack import delegate_split

    data = path.read_bytes()
    out = verify_tflite(data, model, samples, labels=labels).outputs[0]
    split = delegate_split(data)
    return {
        "sqnr_db": out.sqnr_db,
        "top1_agreement": out.top1_agreement,
        "max_abs_error": out.max_abs_error,
        "accuracy_float": out.accuracy_float,
        "accuracy": out.accuracy_quant,
        "transposes": _op_count(path, "TRANSPOSE"),
        "xnnpack_pieces": split.partitions,
        "left_to_litert": split.builtin_ops,
        "size_bytes": len(data),
    }


def _op_count(path: Path, op_name: str) -> int:
    from edge_sdk.tflite_verify import litert_interpreter

    ops = litert_interpreter(path.read_bytes())._get_ops_details()
    return sum(1 for op in ops if op["op_name"] == op_name)


def latencies(paths: dict[str, Path], onnx_path: Path, sample: dict, rounds: int) -> dict[str, dict[int, float]]:
    from edge_sdk.timing import ort_latency_ms
    from edge_sdk.xnnpack import litert_latency_ms

    times: dict[str, dict[int, list[float]]] = {name: {t: [] for t in THREADS} for name in [*paths, "onnxruntime-fp32"]}
    onnx_bytes = onnx_path.read_bytes()
    for _ in range(rounds):
        for threads in THREADS:
            for name, path in paths.items():
                times[name][threads].append(litert_latency_ms(path.read_bytes(), threads=threads, runs=50))
            times["onnxruntime-fp32"][threads].append(ort_latency_ms(onnx_bytes, sample, threads=threads, runs=50))
    return {name: {t: statistics.median(v) for t, v in per.items()} for name, per in times.items()}


def bench_model(bench: Bench, eval_count: int, rounds: int) -> dict:
    data = prepare(bench, eval_count)
    model = _load(bench)
    name = model.inputs[0].name
    samples = [{name: data["eval_x"][i : i + 1]} for i in range(len(data["eval_x"]))]
    conversions = {m: run_child(bench, m) for m in METHODS if m != "onnx2tf"}
    conversions.update(run_onnx2tf(bench))
    paths = {m: Path(r["path"]) for m, r in conversions.items() if "path" in r and Path(r["path"]).exists()}
    for method, path in paths.items():
        conversions[method].update(verify(path, model, samples, data.get("eval_y")))
    onnx_file = WORK / f"{bench.name}.float.onnx"
    onnx_file.write_bytes(model.proto.SerializeToString())
    speed = latencies(paths, onnx_file, samples[0], rounds)
    return {"title": bench.title.format(n=len(samples)), "conversions": conversions, "latency_ms": speed}


def print_table(name: str, report: dict) -> None:
    print(f"\n{name}: {report['title']}")
    head = f"{'method':<62} {'convert s':>9} {'RSS GB':>6} {'SQNR dB':>8} {'top-1':>6} {'acc':>6} {'max err':>9}"
    head += f" {'TRANSP':>6} {'pieces':>6} {'1T ms':>7} {'2T ms':>7}"
    print(head)
    for method, r in report["conversions"].items():
        label = LABELS.get(method, method)
        if "error" in r:
            print(f"{label:<62} error: {r['error'].strip().splitlines()[-1][:80]}")
            continue
        lat = report["latency_ms"].get(method, {})
        print(
            f"{label:<62} {r['seconds']:>9.2f} {_fmt(r.get('peak_rss_bytes'), 1e9, '.2f'):>6} {r['sqnr_db']:>8.2f}"
            f" {_fmt(r['top1_agreement'], 0.01, '.1f'):>6} {_fmt(r['accuracy'], 0.01, '.1f'):>6}"
            f" {r['max_abs_error']:>9.2e} {r['transposes']:>6} {r['xnnpack_pieces']:>6}"
            f" {_fmt(lat.get(1), 1, '.2f'):>7} {_fmt(lat.get(2), 1, '.2f'):>7}"
        )
    ort = report["latency_ms"]["onnxruntime-fp32"]
    print(f"{'float ONNX in ONNX Runtime (reference)':<62} {'':>58} {ort[1]:>7.2f} {ort[2]:>7.2f}")


def _fmt(value, scale: float, spec: str) -> str:
    return "-" if value is None else format(value / scale, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--quick", action="store_true", help="fewer evaluation samples and timing rounds")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], Path(args.child[2]))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    report = {"host": _host(), "target": TARGET, "threads": list(THREADS), "models": {}}
    for name in args.models:
        bench = BENCHES[name]
        count = bench.quick_eval_count if args.quick else bench.eval_count
        report["models"][name] = bench_model(bench, count, rounds=1 if args.quick else 3)
        print_table(name, report["models"][name])
    out = ROOT / "benchmarks" / "results" / "tflite.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=_plain))
    print(f"\nwrote {out}")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    main()
