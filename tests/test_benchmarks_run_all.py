"""benchmarks/run_all.py: collecting small synthetic results files shaped like the real ones (trimmed),
and running stand-in scripts; no real benchmark runs here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WRITTEN = 1_700_000_000  # 2023-11-14T22:13:20Z, the mtime given to every results file
LAT = {"1": 2.176219000830315, "2": 6.783996499507339}

QUANTIZE = {
    "host": {"cpu": "Test CPU", "cores": 2, "isa": ["avx2"], "python": "3.11.7", "onnxruntime": "1.32.0"},
    "settings": {
        "target": "rpi5",
        "methods": ["ort", "sdk"],
        "threads": [1, 2],
        "load": {"before_timing": [2.53, 1.6, 1.7], "after_timing": [2.35, 1.6, 1.7]},
    },
    "models": {
        "ppocr-cls": {
            "title": "PP-OCR text-direction classifier (0/180), 100 calibration / 300 labelled evaluation text strips",
            "calib_samples": 100,
            "eval_samples": 300,
            "rows": {
                "ort": {
                    "seconds": 3.6321035670007404,
                    "peak_rss_bytes": 238309376,
                    "unfused_nodes": 0,
                    "sim": {
                        "sqnr_db": 16.681418360485914,
                        "top1_agreement": 0.8966666666666666,
                        "accuracy_float": 0.8133333333333334,
                        "accuracy": 0.8433333333333334,
                    },
                    "host": {
                        "sqnr_db": 12.880278405965315,
                        "top1_agreement": 0.89,
                        "accuracy_float": 0.8133333333333334,
                        "accuracy": 0.79,
                    },
                },
                "sdk": {"error": "Traceback (most recent call last):\nQuantizeError: no calibration data"},
            },
            "latency_ms": {"fp32": LAT, "ort": {"1": 3.8014639994798927, "2": 8.194708499104308}},
        }
    },
}
PREPASS = {
    "model": "EfficientNet-Lite0",
    "calibration_crops": 100,
    "evaluation_crops": 300,
    "demo_float_accuracy": 0.986,
    "reports": {"none": []},
    "rows": [
        {"engine": "ort per-channel", "prepass": "none", "sqnr_db": 15.27, "top1_agreement": 0.9033,
         "demo_accuracy": 0.987, "prepass_seconds": 0.0},
        {"engine": "ort per-channel", "prepass": "round_weights", "sqnr_db": 19.68, "top1_agreement": 0.9367,
         "demo_accuracy": 0.986, "prepass_seconds": 56.7},
    ],
}  # fmt: skip
TFLITE = {
    "host": {"cpu": "Test CPU", "cores": 2},
    "target": "rpi5",
    "threads": [1, 2],
    "models": {
        "demo": {
            "title": "demo MNIST model, calibration/demo.toml: 256 calibration / 1000 labelled evaluation digits",
            "conversions": {
                "sdk-int8": {
                    "seconds": 0.801100200998917,
                    "peak_rss_bytes": 175640576,
                    "sqnr_db": 36.26337583015543,
                    "top1_agreement": 0.998,
                    "max_abs_error": 0.5070104598999023,
                    "accuracy_float": 0.986,
                    "accuracy": 0.986,
                    "transposes": 0,
                    "xnnpack_pieces": 2,
                    "left_to_litert": {"SOFTMAX": 1},
                    "size_bytes": 63728,
                },
                "onnx2tf-int8": {"error": "no onnx2tf environment at /root/.cache/edge-sdk-bench/onnx2tf-venv"},
            },
            "latency_ms": {
                "sdk-int8": {"1": 0.05835399861098267, "2": 0.03909799852408469},
                "onnxruntime-fp32": {"1": 0.10036350067821331, "2": 0.09900549957819749},
            },
        }
    },
}
RUNNER = {
    "demo fp32 1T": {"runner_ms": 0.037250000000000005, "tool_ms": 0.04, "ratio": 0.9312500000000001},
    "efficientnet-lite0 int8 2T": {"runner_ms": 8.5724435, "tool_ms": 8.71, "ratio": 0.9842070608495981},
}
SUMMARY = {
    "split": "2-fold",
    "runtime": "litert",
    "threads": 1,
    "n": 20,
    "mdape_pct": 7.4295672366061,
    "within_10_pct": 65.0,
    "within_25_pct": 95.0,
    "band_covers_pct": 100.0,
    "band_width_x": 2.2043354048992443,
}
PREDICT = {
    "command": "python benchmarks/predict_bench.py",
    "host": {"cpu": "Test CPU", "cores": 2, "clock_mhz": 2445.4},
    "repeats": 7,
    "models": ["mobilenet_v1_0.25_128", "demo_mnist"],
    "summary": [SUMMARY],
    "repeatability": [{"runtime": "litert", "threads": 1, "repeat_mdape_pct": 5.91827039173819}],
    "predictions": [],
    "fastest_summary": [SUMMARY | {"mdape_pct": 4.561653116259768}],
    "fastest_repeatability": [{"runtime": "litert", "threads": 1, "repeat_mdape_pct": 6.69306483702588}],
    "reference_summary": [SUMMARY | {"split": "same Pi, model left out", "target": "rpi4b", "n": 4}],
    "reference_predictions": [],
    "seconds": 223.7,
}
INSPECT = {
    "targets": 14,
    "demo_float_accuracy": 0.986,
    "rows": [
        {"model": "EfficientNet-Lite0", "counter": "edge-sdk inspect", "macs": 385187552, "params": 4631000,
         "seconds": 0.5291904489999979},
        {"model": "EfficientNet-Lite0", "counter": "published (tensorflow/tpu)", "macs": 407000000.0,
         "params": 4700000.0, "seconds": None},
    ],
}  # fmt: skip
COMPILE = {
    "model": "EfficientNet-Lite0",
    "target": "rpi5",
    "precision": "int8",
    "samples": {"calibration": 100, "evaluation": 300},
    "rounds": [{"seconds": 41.2, "peak_rss_mb": 801.0}, {"seconds": 40.1, "peak_rss_mb": 799.0}],
    "seconds": 40.65,
    "peak_rss_mb": 801.0,
    "budget": {"seconds": 60.0, "peak_rss_mb": 2048.0},
    "within_budget": True,
    "sqnr_db": 17.17,
    "top1_agreement": 0.903,
    "host_ms": 9.1,
    "predicted_ms": 8.2,
    "compile_command": "edge-sdk compile m.onnx --target rpi5",
    "machine": {"cpu": "AMD EPYC", "cores": 2},
}
DOCS = {
    "quantize": QUANTIZE,
    "prepass": PREPASS,
    "tflite": TFLITE,
    "runner": RUNNER,
    "predict_bench": PREDICT,
    "inspect": INSPECT,
    "compile": COMPILE,
}


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["run_all"]


def write_results(results: Path, docs: dict, mtime: int = WRITTEN) -> None:
    results.mkdir(parents=True, exist_ok=True)
    for stem, doc in docs.items():
        path = results / f"{stem}.json"
        path.write_text(json.dumps(doc))
        os.utime(path, (mtime, mtime))


def collect(run_all, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    out_json, out_md = tmp_path / "results.json", tmp_path / "results.md"
    args = ["--collect", "--results-dir", str(tmp_path / "results"), "--out-json", str(out_json)]
    code = run_all.main([*args, "--out-md", str(out_md), *extra])
    return code, json.loads(out_json.read_text()), out_md.read_text()


def test_collect_writes_side_by_side_tables_and_unrounded_numbers(run_all, tmp_path):
    write_results(tmp_path / "results", DOCS)
    code, doc, md = collect(run_all, tmp_path)
    assert code == 0
    benches = doc["benchmarks"]
    assert set(benches) == set(run_all.BENCHMARKS) and all(b["status"] == "ok" for b in benches.values())
    quantize = benches["quantize"]
    assert quantize["written"] == "2023-11-14T22:13:20Z"
    assert quantize["command"] == "python benchmarks/quantize_bench.py --models ppocr-cls --methods ort sdk"
    assert quantize["machine"] == {"cpu": "Test CPU", "cores": 2} and quantize["machine_recorded_in_results"]
    ort = quantize["numbers"]["ppocr-cls"]["methods"]["ort"]
    assert ort["sim"]["sqnr_db"] == 16.681418360485914 and ort["peak_rss_bytes"] == 238309376
    assert "QuantizeError" in quantize["numbers"]["ppocr-cls"]["methods"]["sdk"]["error"]
    assert benches["runner"]["machine_recorded_in_results"] is False
    assert benches["predict"]["numbers"]["summary"] == [SUMMARY]
    rows = [
        "| float model (fp32) | - | - | 81.3% | - | 2.18 / 6.78 | - | - | - | - |",
        "| ONNX Runtime quantize_static (per-channel MinMax) | 16.68 | 89.7% | 84.3% | 12.88 | 3.80 / 8.19 "
        "| 1.75 / 1.21 | 3.63 | 238 | 0 |",
        "| edge-sdk auto | error: QuantizeError: no calibration data | - | - | - | - | - | - | - | - |",
        "| ort per-channel | round_weights | 19.68 | 4.41 | 93.7% | 98.6% | 56.7 |",
        "| edge-sdk int8 (float I/O) | 0.80 | 176 | 36.26 | 99.8% | 98.6% | 0.507 | 0 | 2 | SOFTMAX 1 | 64 "
        "| 0.058 / 0.039 |",
        "| float ONNX in ONNX Runtime (reference) | - | - | - | - | - | - | - | - | - | - | 0.100 / 0.099 |",
        "| efficientnet-lite0 | int8 | 2 | 8.57 | 8.71 | 0.984 |",
        "| 2-fold | litert | 1 | 20 | 7.4 | 65% | 95% | 100% | 2.20 | 4.6 | 5.9 | 6.7 |",
        "| same Pi, model left out | rpi4b | 4 | 7.4 | 65% | 95% | 100% | 2.20 |",
        "| EfficientNet-Lite0 | published (tensorflow/tpu) | 407,000,000 | 4,700,000 | 1.057 | 1.015 | - |",
        "| EfficientNet-Lite0 | rpi5 | int8 | 100 / 300 | 40.6 | 801 | 60 s, 2048 MB | yes | 17.17 | 90.3% "
        "| 9.10 | 8.20 |",
    ]
    for row in rows:
        assert row in md.splitlines(), row
    assert "`python benchmarks/runner_bench.py`" in md
    assert "demo: onnx2tf-int8 has no result (no onnx2tf environment" in md


def test_collect_lists_a_missing_results_file_as_not_run(run_all, tmp_path):
    write_results(tmp_path / "results", {"inspect": INSPECT})
    code, doc, md = collect(run_all, tmp_path, "--only", "inspect,compile")
    assert code == 0
    assert list(doc["benchmarks"]) == ["compile", "inspect"]
    assert doc["benchmarks"]["compile"]["status"] == "not run"
    assert "## compile: compile time and peak memory" in md
    assert "Not run (no compile.json in" in md and "## quantize" not in md


def test_collect_is_deterministic_and_keeps_the_command_of_a_run(run_all, tmp_path):
    write_results(tmp_path / "results", DOCS)
    _, _, first = collect(run_all, tmp_path)
    first_json = (tmp_path / "results.json").read_bytes()
    _, _, second = collect(run_all, tmp_path)
    assert first == second and first_json == (tmp_path / "results.json").read_bytes()
    # a command an earlier collection knew (a run with --quick) survives a later --collect of the same file
    doc = json.loads(first_json)
    doc["benchmarks"]["tflite"]["command"] = "python benchmarks/tflite_bench.py --quick"
    (tmp_path / "results.json").write_text(json.dumps(doc))
    _, again, _ = collect(run_all, tmp_path)
    assert again["benchmarks"]["tflite"]["command"] == "python benchmarks/tflite_bench.py --quick"


def test_collect_takes_the_newer_quick_results(run_all, tmp_path):
    write_results(tmp_path / "results", {"quantize": QUANTIZE})
    quick = json.loads(json.dumps(QUANTIZE))
    quick["models"]["ppocr-cls"]["rows"]["ort"]["sim"]["sqnr_db"] = 11.0
    (tmp_path / "results" / "quantize.quick.json").write_text(json.dumps(quick))
    _, doc, _ = collect(run_all, tmp_path, "--only", "quantize")
    entry = doc["benchmarks"]["quantize"]
    assert entry["results_file"].endswith("quantize.quick.json") and entry["command"].endswith("--quick")
    assert entry["numbers"]["ppocr-cls"]["methods"]["ort"]["sim"]["sqnr_db"] == 11.0


def test_unreadable_results_are_reported_and_fail_the_run(run_all, tmp_path):
    write_results(tmp_path / "results", {"runner": {"demo fp32 1T": {"runner_ms": 1.0}}})
    code, doc, md = collect(run_all, tmp_path, "--only", "runner")
    assert code == 1 and doc["benchmarks"]["runner"]["status"] == "unreadable"
    assert "could not be read (KeyError" in md


def test_a_failing_script_is_reported_and_the_others_still_run(run_all, tmp_path, monkeypatch, capsys):
    scripts = tmp_path / "bench"
    (scripts / "results").mkdir(parents=True)
    (scripts / "quantize_bench.py").write_text("import sys\nsys.exit(3)\n")
    (scripts / "inspect_bench.py").write_text(
        "import argparse, json, pathlib\n"
        "p = argparse.ArgumentParser()\n"
        'p.add_argument("--quick", action="store_true")\n'
        "quick = p.parse_args().quick\n"
        f"doc = {INSPECT!r}\n"
        'doc["targets"] = 1 if quick else 14\n'
        'out = pathlib.Path(__file__).parent / "results" / "inspect.json"\n'
        "out.write_text(json.dumps(doc))\n"
    )
    monkeypatch.setattr(run_all, "HERE", scripts)
    out = ["--out-json", str(tmp_path / "r.json"), "--out-md", str(tmp_path / "r.md")]
    code = run_all.main(
        ["--only", "quantize,inspect,compile", "--quick", "--results-dir", str(scripts / "results"), *out]
    )
    assert code == 1
    doc = json.loads((tmp_path / "r.json").read_text())["benchmarks"]
    assert doc["quantize"]["failed"].startswith("exited with status 3 after") and doc["quantize"]["status"] == "not run"
    assert doc["compile"]["failed"] == "benchmarks/compile_bench.py does not exist"
    assert doc["inspect"]["status"] == "ok" and doc["inspect"]["numbers"]["targets"] == 1
    assert doc["inspect"]["command"] == "python benchmarks/inspect_bench.py --quick"
    assert "**This run failed: exited with status 3" in (tmp_path / "r.md").read_text()
    assert "quantize   FAILED" in capsys.readouterr().out


def test_command_line_collect_with_nothing_to_collect(tmp_path):
    out = [str(tmp_path / "r.json"), str(tmp_path / "r.md")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--collect", "--results-dir", str(tmp_path),
         "--out-json", out[0], "--out-md", out[1]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    statuses = {b["status"] for b in json.loads(Path(out[0]).read_text())["benchmarks"].values()}
    assert statuses == {"not run"}
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--collect", "--only", "nope"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown benchmark(s) nope" in bad.stderr
