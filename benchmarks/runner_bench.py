"""The device runner's timing against LiteRT's own benchmark tool (ai_edge_litert/tools/
benchmark_litert_model.py) on the same .tflite files and threads, interleaved, in one run.

The two differ in API: the runner uses the Interpreter (what tflite-runtime on a Pi has too), the
tool LiteRT 2's CompiledModel with TensorBuffers. Both time one inference call with perf_counter.

    python benchmarks/runner_bench.py            # writes benchmarks/results/runner.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import CACHE, efficientnet_lite0_onnx

ROOT = Path(__file__).resolve().parents[1]
WORK = CACHE / "runner_bench"
THREADS = (1, 2)
RUNS = 100


def models() -> dict[str, Path]:
    """fp32 and int8 .tflite of the demo model and EfficientNet-Lite0, exported by edge-sdk."""
    import numpy as np

    from edge_sdk.export import export_tflite

    WORK.mkdir(parents=True, exist_ok=True)
    files = {}
    rng = np.random.default_rng(0)
    sources = {
        "demo": ROOT / "edge_sdk" / "assets" / "demo_mnist.onnx",
        "efficientnet-lite0": efficientnet_lite0_onnx(),
    }
    for name, source in sources.items():
        for precision in ("fp32", "int8"):
            path = WORK / f"{name}.{precision}.tflite"
            if not path.exists():
                calib = "demo" if name == "demo" else [
                    {"inputs": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(16)
                ]  # fmt: skip
                result = export_tflite(
                    source, "rpi5", precision=precision, calibration=calib if precision == "int8" else None
                )
                path.write_bytes(result.flatbuffer)
            files[f"{name} {precision}"] = path
    return files


def runner_median(path: Path, threads: int) -> float:
    from edge_sdk.runner import measure

    doc = measure(path, threads=threads, runs=RUNS, budget_s=60.0, warmup=5)
    return statistics.median(doc["samples_ms"])


def tool_median(path: Path, threads: int) -> float:
    import ai_edge_litert.tools.benchmark_litert_model as tool

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        args = [sys.executable, tool.__file__, f"--model={path}", f"--num_runs={RUNS}", "--warmup_runs=5"]
        args += [f"--num_threads={threads}", f"--result_json={out}"]
        subprocess.run(args, capture_output=True, text=True, check=True)
        return float(json.loads(out.read_text())["latency"]["median_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    report: dict[str, dict] = {}
    print(f"{'model':<26} {'threads':>7} {'runner ms':>10} {'LiteRT tool ms':>15} {'runner/tool':>12}")
    for name, path in models().items():
        for threads in THREADS:
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(runner_median(path, threads))
                theirs.append(tool_median(path, threads))
            row = {"runner_ms": statistics.median(ours), "tool_ms": statistics.median(theirs)}
            row["ratio"] = row["runner_ms"] / row["tool_ms"]
            report[f"{name} {threads}T"] = row
            print(f"{name:<26} {threads:>7} {row['runner_ms']:>10.3f} {row['tool_ms']:>15.3f} {row['ratio']:>12.3f}")
    out = ROOT / "benchmarks" / "results" / "runner.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
