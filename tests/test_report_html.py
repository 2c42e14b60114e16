"""report.html from a report.json dict: deterministic bytes, escaping of every string from the report,
one mark per datum in each of the five plots, graceful output for empty and all-null reports, and
(slow) the page as a real headless Chromium renders it: the DOM it builds, no console errors, and a
screenshot with the plots' colours in it."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from edge_sdk import report_svg as svg
from edge_sdk.report_html import render_report_html
from edge_sdk.report_svg import PALETTE, scale

PLOT_IDS = (
    "plot-latency",
    "plot-measured-vs-predicted",
    "plot-accuracy-latency",
    "plot-op-breakdown",
    "plot-layer-sensitivity",
)
EVIL = '<script>alert("x")</script>'


def _fidelity(sqnr: float | None, top1: float | None, acc: tuple[float, float] | None) -> dict[str, Any]:
    return {
        "samples": 1000,
        "verified_on": "evaluation data (1000 samples, recipe demo)",
        "outputs": [
            {
                "name": "logits",
                "sqnr_db": sqnr,
                "cosine": 0.9998,
                "max_abs_error": 0.03,
                "top1_agreement": top1,
                "accuracy_float": acc[0] if acc else None,
                "accuracy_quant": acc[1] if acc else None,
            }
        ],
    }


def _layers(offset: float, names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"tensor": name, "op": "Conv" if i % 2 else "Relu", "sqnr_db": None if i == 1 else offset + 3.0 * ((i * 7) % 5)}
        for i, name in enumerate(names)
    ]


def _predicted(median_ms: float, low_ms: float, high_ms: float, method: str = "roofline-fit") -> dict[str, Any]:
    return {"median_ms": median_ms, "low_ms": low_ms, "high_ms": high_ms, "method": method, "threads": 4}


def _target(target: str, name: str, kind: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "target": target,
        "name": name,
        "kind": kind,
        "unit": "4x Cortex-A76 (XNNPACK)",
        "format": "tflite",
        "precision": "int8",
        "bundle": target,
        "artifact": {"file": f"{target}/demo_mnist.int8.tflite", "sha256": "ab" * 32, "size_bytes": 123456},
        "float_nodes": [],
        "fidelity": None,
        "latency": None,
        "op_breakdown": None,
        "layer_sensitivity": [],
        "vela": None,
        "warnings": [],
        "seconds": 1.8,
    }
    return base | fields


LAYER_NAMES = ("conv1_out", "relu1_out", "conv2_out", EVIL, "conv3_out", "pool_out", "fc_out", "logits")


def _cpu_targets() -> list[dict[str, Any]]:
    """The build machine (timed here and predicted) and a Raspberry Pi (predicted and timed on the device)."""
    return [
        _target(
            "host",
            "This machine",
            "cpu",
            fidelity=_fidelity(36.2, 0.995, (0.986, 0.984)),
            latency={
                "host": {"median_ms": 0.05, "p90_ms": 0.06, "runs": 200, "threads": 2, "runtime": "litert 2.3.0"},
                "device": None,
                "predicted": _predicted(0.045, 0.04, 0.06),
                "notes": [],
            },
            op_breakdown={"source": "measured", "ms": {"conv": 0.03, "elementwise": 0.01, "fallback": 0.01}},
            layer_sensitivity=_layers(30.0, LAYER_NAMES),
        ),
        _target(
            "rpi5",
            "Raspberry Pi 5",
            "cpu",
            fidelity=_fidelity(35.9, 0.994, (0.986, 0.983)),
            latency={
                "host": None,
                "device": {
                    "median_ms": 3.1,
                    "p90_ms": 3.3,
                    "runs": 100,
                    "threads": 4,
                    "runtime": "litert 2.3.0",
                    "device": "pi@10.0.0.2:22",
                },
                "predicted": _predicted(0.4, 0.3, 0.55),
                "notes": [],
            },
            op_breakdown={
                "source": "predicted",
                "ms": {"conv": 0.25, "depthwise": 0.1, "elementwise": 0.05, "transfer": 0.0},
            },
            layer_sensitivity=_layers(28.0, LAYER_NAMES),
            float_nodes=[{"node": "Softmax_12", "op": "Softmax", "reason": 'kept float: <b>&</b> "probabilities"'}],
            warnings=['1 node stays float & runs on the CPU: <Softmax_12> "fallback"'],
        ),
    ]


def _accelerator_targets() -> list[dict[str, Any]]:
    """An NPU with a Vela estimate and no timing, a Coral with nothing but a note, a GPU with a prediction."""
    return [
        _target(
            "ethos-u55-128",
            "Arm Ethos-U55 (128 MACs)",
            "npu",
            unit="Ethos-U55-128",
            format="vela-tflite",
            fidelity=_fidelity(None, 0.99, None),  # identical outputs: inf dB arrives as null
            latency={
                "host": None,
                "device": None,
                "predicted": _predicted(0.121, 0.1, 0.15, "vela-estimate"),
                "notes": [],
            },
            op_breakdown={"source": "predicted", "ms": {"conv": 0.08, "elementwise": 0.03, "transfer": 0.011}},
            vela={
                "npu_ops": 16,
                "cpu_ops": 0,
                "sram_bytes": 11120,
                "cycles": 60500,
                "inference_ms": 0.121,
                "accelerator": "ethos-u55-128",
            },
        ),
        _target(
            "coral-edgetpu-usb",
            "Coral USB Accelerator",
            "npu",
            format="edgetpu-tflite",
            latency={
                "host": None,
                "device": None,
                "predicted": None,
                "notes": ["coral-edgetpu-usb: no measurements to predict from; run edge-sdk bench --device"],
            },
        ),
        _target(
            "jetson-orin-nano",
            "Jetson Orin Nano",
            "gpu",
            format="onnx",
            precision="fp16",
            fidelity=_fidelity(52.0, 1.0, None),
            latency={"predicted": _predicted(5.0, 3.0, 9.0)},  # no "host"/"device"/"notes" keys at all
            artifact={"file": "jetson-orin-nano/demo_mnist.fp16.onnx", "sha256": "cd" * 32, "size_bytes": 60000},
        ),
    ]


def realistic_report() -> dict[str, Any]:
    return {
        "schema": 1,
        "sdk_version": "0.1.0",
        "versions": {"edge-sdk": "0.1.0", "onnxruntime": "1.22.0", "ai-edge-litert": "2.3.0"},
        "model": {
            "name": "demo_mnist",
            "sha256": "0123456789abcdef" * 4,
            "macs": 922336,
            "params": 12345,
            "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "dtype": "float32"}],
            "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}],
        },
        "calibration": "recipe demo: 256 samples of the training split",
        "evaluation": "recipe demo, evaluation split (1000 samples)",
        "host": {"cpu": "AMD EPYC 7B13", "threads": 2},
        "targets": _cpu_targets() + _accelerator_targets(),
        "notes": ["built with --no-device: device timings are predictions"],
        "seconds": 12.3,
    }


def figure(page: str, plot_id: str) -> str:
    found = re.search(rf'<figure id="{plot_id}">(.*?)</figure>', page, re.S)
    assert found, f"no figure {plot_id}"
    return found.group(1)


def marks(page: str, plot_id: str) -> int:
    body = figure(page, plot_id)
    count = body.count('class="mark"')
    assert body.count('<g class="mark"><title>') == count, "every mark carries a <title> tooltip"
    return count


def expected_marks(report: dict[str, Any]) -> dict[str, int]:
    """What each plot should draw, worked out from the report independently of the renderer."""
    targets = report["targets"]

    def latency(t: dict[str, Any], key: str) -> Any:
        return (t["latency"] or {}).get(key)

    def measured(t: dict[str, Any]) -> Any:
        return latency(t, "device") or (latency(t, "host") if t["target"] == "host" else None)

    def accuracy(t: dict[str, Any]) -> Any:
        return t["fidelity"] and t["fidelity"]["outputs"][0]["accuracy_quant"]

    with_layers = [t for t in targets if t["layer_sensitivity"]][:8]
    return {
        "plot-latency": sum(latency(t, k) is not None for t in targets for k in ("host", "device", "predicted")),
        "plot-measured-vs-predicted": sum(bool(latency(t, "predicted") and measured(t)) for t in targets),
        "plot-accuracy-latency": sum(bool(accuracy(t) and t["latency"]) for t in targets),
        "plot-op-breakdown": sum(v > 0 for t in targets if t["op_breakdown"] for v in t["op_breakdown"]["ms"].values()),
        "plot-layer-sensitivity": sum(len(t["layer_sensitivity"]) for t in with_layers),
    }


def test_same_report_same_bytes():
    report = realistic_report()
    first = render_report_html(report)
    assert render_report_html(copy.deepcopy(report)) == first
    assert render_report_html(json.loads(json.dumps(report))) == first


def test_same_bytes_in_another_process(tmp_path: Path):
    """Nothing depends on the hash seed (set order) or on anything but the report."""
    (tmp_path / "report.json").write_text(json.dumps(realistic_report()))
    script = (
        "import json, sys; from edge_sdk.report_html import render_report_html; "
        "sys.stdout.write(render_report_html(json.load(open(sys.argv[1]))))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "report.json")],
        env={**os.environ, "PYTHONHASHSEED": "0"},  # this process runs with a random one
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout == render_report_html(realistic_report())


def test_page_is_self_contained():
    page = render_report_html(realistic_report())
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    assert "<title>demo_mnist: edge-sdk build report</title>" in page
    for fetches in ("<script", "<link", "src=", "url(", "@import", "http"):
        assert fetches not in page.lower()


def test_strings_from_the_report_are_escaped():
    report = realistic_report()
    report["targets"][0]["name"] = EVIL
    report["model"]["name"] = "mnist <b>&</b>"
    page = render_report_html(report)
    assert "<script" not in page and "<b>&</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # in the worst-layers table and tooltips
    assert "&lt;Softmax_12&gt; &quot;fallback&quot;" in page  # the warning
    assert "<h1>mnist &lt;b&gt;&amp;&lt;/b&gt;</h1>" in page
    assert "onnxruntime 1.22.0" in page


def test_each_plot_has_one_mark_per_datum():
    report = realistic_report()
    page = render_report_html(report)
    expected = expected_marks(report)
    assert expected == {
        "plot-latency": 6,
        "plot-measured-vs-predicted": 2,
        "plot-accuracy-latency": 2,
        "plot-op-breakdown": 9,
        "plot-layer-sensitivity": 16,
    }
    assert {plot_id: marks(page, plot_id) for plot_id in PLOT_IDS} == expected
    for plot_id in PLOT_IDS:
        body = figure(page, plot_id)
        assert body.count("<svg") == 1 and body.count("<figcaption>") == 1


def test_tooltips_carry_the_numbers():
    page = render_report_html(realistic_report())
    latency = figure(page, "plot-latency")
    assert "<title>rpi5: predicted 0.400 ms (0.300-0.550), roofline-fit, 4 threads</title>" in latency
    assert (
        "<title>rpi5: device-measured 3.10 ms, pi@10.0.0.2:22, litert 2.3.0, p90 3.30 ms, 4 threads, 100 runs</title>"
        in latency
    )
    assert "<title>host: host-measured 0.0500 ms, litert 2.3.0, p90 0.0600 ms, 2 threads, 200 runs</title>" in latency
    assert "coral-edgetpu-usb" in latency and "not measured" in latency
    assert "log scale" in latency  # 0.04 .. 9 ms spans more than 50x


def test_measured_vs_predicted_compares_like_with_like():
    report = realistic_report()
    # a host timing of a device target says nothing about the device: not a point
    report["targets"][2]["latency"]["host"] = {"median_ms": 0.9, "runs": 10}
    page = render_report_html(report)
    scatter = figure(page, "plot-measured-vs-predicted")
    assert marks(page, "plot-measured-vs-predicted") == 2
    assert "ethos-u55-128" not in scatter
    assert 'class="diagonal"' in scatter


def test_accuracy_axis_falls_back_to_agreement_then_sqnr():
    report = realistic_report()
    page = render_report_html(report)
    assert "quantized accuracy (%)" in figure(page, "plot-accuracy-latency")
    for t in report["targets"]:
        if t["fidelity"]:
            t["fidelity"]["outputs"][0]["accuracy_quant"] = None
    page = render_report_html(report)
    assert "top-1 agreement with the float model (%)" in figure(page, "plot-accuracy-latency")
    assert marks(page, "plot-accuracy-latency") == 4
    for t in report["targets"]:
        if t["fidelity"]:
            t["fidelity"]["outputs"][0]["top1_agreement"] = None
    page = render_report_html(report)
    assert "worst output SQNR (dB)" in figure(page, "plot-accuracy-latency")
    assert marks(page, "plot-accuracy-latency") == 3  # the identical (inf dB) target has no finite y


def test_summary_shows_identical_and_not_measured():
    page = render_report_html(realistic_report())
    summary = page.split("<h2>Targets</h2>")[1].split("<h2>")[0]
    assert summary.count("<tr>") == 6  # header and five targets
    assert ">identical<" in summary  # ethos: SQNR null = identical outputs
    assert ">not measured<" in summary  # coral: fidelity null
    assert "35.9 dB" in summary and "98.6% &rarr; 98.3%" in summary
    assert "0.400<br><small>[0.300-0.550]</small>" in summary
    assert "120.6 KB" in summary
    assert "Vela ethos-u55-128: 16 NPU + 0 CPU ops, SRAM 10.9 KB, 0.121 ms" in summary  # under the NPU's unit


def test_worst_layers_are_listed_below_the_plot():
    page = render_report_html(realistic_report())
    after = page.split('<figure id="plot-layer-sensitivity">')[1].split("</figure>", 1)[1].split("<h2>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", after)
    assert len(rows) == 1 + 2 * 5  # header, five per target with layers
    assert "&lt;script&gt;" in after


@pytest.mark.parametrize(
    "report",
    [
        {},
        {"schema": 1, "targets": []},
        {"schema": None, "model": None, "host": None, "targets": None, "notes": None, "seconds": None},
        {"targets": [None, {}, {key: None for key in _target("x", "x", "cpu")}]},
        {"targets": [{"target": "odd", "latency": {"host": {"median_ms": float("inf")}, "predicted": "?"}}]},
        {"targets": [{"target": "nan", "fidelity": {"outputs": [{"sqnr_db": float("nan"), "top1_agreement": True}]}}]},
    ],
    ids=["empty", "no-targets", "all-null", "null-targets", "non-finite", "nan"],
)
def test_empty_and_null_reports_render(report: dict[str, Any]):
    page = render_report_html(report)
    for plot_id in PLOT_IDS:
        assert marks(page, plot_id) == 0
    if not report.get("targets"):
        assert "no targets in this report" in page
    else:
        assert "no target has both a measurement and a prediction" in page
        assert "no layer sensitivity in this build" in page


def test_targets_with_the_same_layers_share_a_line():
    report = realistic_report()
    report["targets"][1]["layer_sensitivity"] = copy.deepcopy(report["targets"][0]["layer_sensitivity"])
    page = render_report_html(report)
    plot = figure(page, "plot-layer-sensitivity")
    assert marks(page, "plot-layer-sensitivity") == len(LAYER_NAMES)
    assert ">host, rpi5</text>" in plot  # the legend
    table = page.split('<figure id="plot-layer-sensitivity">')[1].split("</figure>", 1)[1].split("<h2>")[0]
    assert table.count("<td>host, rpi5</td>") == 5


def test_close_points_get_labels_on_separate_lines():
    points = [svg.Point(1.0, 98.6, name, PALETTE[0], name) for name in ("host", "rpi5", "coral-edgetpu-usb")]
    plot = svg.scatter(points, x_title="ms", y_title="%", label="close", empty="-", diagonal=False)
    baselines = re.findall(r'<text x="[0-9.]+" y="([0-9.]+)">(?:host|rpi5|coral-edgetpu-usb)</text>', plot)
    assert len(set(baselines)) == 3


def test_more_lines_than_colours_are_named_not_drawn():
    report = realistic_report()
    extra = [_target(f"t{i}", f"T{i}", "cpu", layer_sensitivity=_layers(20.0 + i, LAYER_NAMES)) for i in range(8)]
    report["targets"] += extra
    page = render_report_html(report)
    assert marks(page, "plot-layer-sensitivity") == 8 * len(LAYER_NAMES)
    assert "Not drawn (more than 8 lines): t6; t7." in figure(page, "plot-layer-sensitivity")


@pytest.mark.parametrize(
    ("values", "zero", "ticks", "labels"),
    [
        ([0.3, 7.2], True, (0, 2, 4, 6, 8), ("0", "2", "4", "6", "8")),
        ([0.12, 0.55], False, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6), ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6")),
        ([98.3, 98.7], False, (98.3, 98.4, 98.5, 98.6, 98.7), ("98.3", "98.4", "98.5", "98.6", "98.7")),
        ([5.0], True, (0, 1, 2, 3, 4, 5), ("0", "1", "2", "3", "4", "5")),
        ([], False, (0, 0.2, 0.4, 0.6, 0.8, 1), ("0.0", "0.2", "0.4", "0.6", "0.8", "1.0")),
    ],
)
def test_linear_ticks_are_nice_numbers(values, zero, ticks, labels):
    s = scale(values, 0.0, 100.0, zero=zero, log_ratio=50)
    assert not s.log
    assert s.ticks == pytest.approx(ticks) and s.labels == labels
    assert s(s.lo) == 0.0 and s(s.hi) == 100.0


def test_log_ticks_span_whole_decades():
    s = scale([0.04, 9.0], 0.0, 300.0, log_ratio=50)
    assert s.log and s.labels == ("0.01", "0.1", "1", "10")
    assert s(1.0) == pytest.approx(200.0)
    narrow = scale([1.5, 90.0], 0.0, 100.0, log_ratio=50)
    assert narrow.labels == ("1", "2", "5", "10", "20", "50", "100")
    assert all(math.isclose(t, float(label)) for t, label in zip(narrow.ticks, narrow.labels, strict=True))


# --- the page in a real browser -------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("install chromium (Debian package `chromium`) to render the report in a headless browser")


def _palette_pixels(png: Path) -> tuple[Counter[tuple[int, int, int]], float]:
    image = Image.open(png).convert("RGB")
    pixels = Counter({rgb: n for n, rgb in image.getcolors(maxcolors=image.width * image.height) or []})
    non_white = 1 - pixels[(255, 255, 255)] / (image.width * image.height)
    return pixels, non_white


@pytest.mark.slow
def test_chromium_renders_the_plots(tmp_path: Path):
    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    page.write_text(render_report_html(realistic_report()), encoding="utf-8")
    # one run both prints the DOM the browser built and takes the screenshot; console messages go to stderr
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    command += ["--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--window-size=1280,3000"]
    command += [f"--screenshot={shot}", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    expected = expected_marks(realistic_report())
    for plot_id in PLOT_IDS:
        assert "<svg" in figure(done.stdout, plot_id)
        assert marks(done.stdout, plot_id) == expected[plot_id]
    assert "<script" not in done.stdout
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console

    pixels, non_white = _palette_pixels(shot)
    assert 0.03 < non_white < 0.9, f"{non_white:.1%} of the screenshot is not white"
    assert len(pixels) > 100, "a page of text and plots has many distinct colours"
    for colour in PALETTE[:5]:  # one per target: its bars and dots
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert pixels[rgb] > 50, f"target colour {colour} barely appears in the screenshot"
