"""compile: bundles per target (artifact, manifest, runner, README), report.json and report.html,
measured here, predicted, measured on a real SSH device, written whole or not at all."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest
from onnx import helper
from sshd import entry, write_inventory

from edge_sdk import runner
from edge_sdk.compile import compile_model
from edge_sdk.compile_profile import ProfileOptions
from edge_sdk.demo import DEMO_MODEL
from edge_sdk.errors import DataError, ExportError, UsageError

if TYPE_CHECKING:
    from sshd import SshKit


TARGETS = ["host", "rpi5", "ethos-u55-128", "sd8gen2-hexagon", "rk3588-mali-g610"]
QUIET = ProfileOptions(host=False, predict=False, store=False)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory):
    output = tmp_path_factory.mktemp("compile") / "build"
    result = compile_model(DEMO_MODEL, TARGETS, calibration="demo", output=output)
    return result, json.loads((output / "report.json").read_text())


def test_every_target_gets_a_bundle_in_its_format(build):
    result, _ = build
    assert [b.target for b in result.bundles] == TARGETS
    formats = {b.target: (b.format, b.precision.value, b.artifact.path.name) for b in result.bundles}
    assert formats == {
        "host": ("tflite", "int8", "demo_mnist.int8.tflite"),
        "rpi5": ("tflite", "int8", "demo_mnist.int8.tflite"),
        "ethos-u55-128": ("vela-tflite", "int8", "demo_mnist.int8_vela.tflite"),
        "sd8gen2-hexagon": ("onnx", "int8", "demo_mnist.int8.onnx"),
        "rk3588-mali-g610": ("tflite", "fp16", "demo_mnist.fp16.tflite"),
    }
    assert sorted(p.name for p in result.output.iterdir()) == sorted([*TARGETS, "report.html", "report.json"])
    assert not [p for p in result.output.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_manifests_carry_hash_target_fidelity_versions_and_preprocessing(build):
    result, _ = build
    for bundle in result.bundles:
        data = bundle.artifact.path.read_bytes()
        manifest = json.loads(bundle.artifact.manifest_path.read_text())
        assert manifest["artifact"]["sha256"] == hashlib.sha256(data).hexdigest() == bundle.artifact.sha256
        assert manifest["target"] == bundle.target
        assert manifest["fidelity"]["outputs"][0]["sqnr_db"] > 30
        assert {"edge-sdk", "onnx", "onnxruntime", "numpy"} <= set(manifest["versions"])
    rpi5 = json.loads(result.bundles[1].artifact.manifest_path.read_text())
    assert rpi5["labels"] == [str(d) for d in range(10)]
    assert rpi5["preprocess"]["mean"] == [0.1307] and rpi5["preprocess"]["channel_order"] == "gray"


def test_device_files_runner_and_readme(build):
    result, _ = build
    for bundle in result.bundles:
        readme = (bundle.directory / "README.md").read_text()
        assert bundle.artifact.sha256 in readme and bundle.target in readme
        has_runner = (bundle.directory / "runner.py").exists()
        assert has_runner == (bundle.target != "ethos-u55-128")
        if has_runner:
            assert (bundle.directory / "runner.py").read_bytes() == Path(runner.__file__).read_bytes()
    assert "TensorFlow Lite Micro" in (result.output / "ethos-u55-128" / "README.md").read_text()


def test_the_bundled_runner_times_its_model_standalone(build):
    result, _ = build
    rpi5 = result.output / "rpi5"
    proc = subprocess.run(
        [sys.executable, "-I", "runner.py", "demo_mnist.int8.tflite", "--runs", "5", "--budget-s", "1"],
        cwd=rpi5,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model_sha256"] == result.bundles[1].artifact.sha256 and len(doc["samples_ms"]) == 5


def test_accuracy_holds_on_the_held_out_digits(build):
    _, report = build
    for target in report["targets"]:
        out = target["fidelity"]["outputs"][0]
        assert out["accuracy_float"] > 0.95
        assert out["accuracy_float"] - out["accuracy_quant"] <= 0.005, target["target"]
    assert "evaluation" in report["evaluation"]


def test_report_latencies_measured_here_predicted_and_from_vela(build):
    _, report = build
    by_id = {t["target"]: t for t in report["targets"]}
    for target in ("host", "rpi5", "sd8gen2-hexagon", "rk3588-mali-g610"):
        host = by_id[target]["latency"]["host"]
        assert host["median_ms"] > 0 and host["runs"] >= 5 and host["runtime"]
    assert by_id["ethos-u55-128"]["latency"]["host"] is None
    vela = by_id["ethos-u55-128"]["latency"]["predicted"]
    assert (
        vela["method"].startswith("vela-estimate")
        and vela["median_ms"] == by_id["ethos-u55-128"]["vela"]["inference_ms"]
    )
    rpi5 = by_id["rpi5"]["latency"]["predicted"]
    assert rpi5["low_ms"] <= rpi5["median_ms"] <= rpi5["high_ms"] and rpi5["threads"] == 4
    assert by_id["rpi5"]["op_breakdown"]["source"] == "predicted"
    measured = by_id["sd8gen2-hexagon"]["op_breakdown"]  # ONNX Runtime's profiler, in the predicted op classes
    assert measured["source"] == "measured" and {"conv", "quantize"} <= set(measured["ms"])
    assert set(measured["ms"]) <= {"conv", "fc", "quantize", "elementwise", "pool", "move"}
    assert any("no prediction" in n for n in by_id["rk3588-mali-g610"]["latency"]["notes"])  # GPU: no data


def test_report_layer_sensitivity_for_quantized_targets(build):
    _, report = build
    for target in report["targets"]:
        layers = target["layer_sensitivity"]
        if target["precision"] == "int8":
            assert len(layers) >= 5 and all(layer["tensor"] for layer in layers), target["target"]
            finite = [layer["sqnr_db"] for layer in layers if layer["sqnr_db"] is not None]
            assert finite and min(finite) > 10
        else:
            assert layers == []


def test_report_says_where_each_targets_nodes_run(build):
    result, report = build
    by_id = {t["target"]: t["placement"] for t in report["targets"]}
    assert by_id["rpi5"]["on_unit"] > 0 and by_id["rpi5"]["unsupported"] == 0
    assert by_id["ethos-u55-128"]["fallback_unit"] and by_id["rpi5"]["fits"] is True
    assert "nodes on unit/fallback/nowhere" in (result.output / "report.html").read_text()


def test_report_html_has_every_plot(build):
    result, _ = build
    html = (result.output / "report.html").read_text()
    for plot in ("latency", "measured-vs-predicted", "accuracy-latency", "op-breakdown", "layer-sensitivity"):
        assert f'id="plot-{plot}"' in html
    assert "http://" not in html and "https://" not in html.replace("https://github.com", "")


def test_artifacts_are_byte_identical_across_builds(tmp_path: Path):
    first = compile_model(
        DEMO_MODEL, ["rpi5", "sd8gen2-hexagon"], calibration="demo", output=tmp_path / "a", profiling=QUIET
    )
    second = compile_model(
        DEMO_MODEL, ["rpi5", "sd8gen2-hexagon"], calibration="demo", output=tmp_path / "b", profiling=QUIET
    )
    for a, b in zip(first.bundles, second.bundles, strict=True):
        assert a.artifact.path.read_bytes() == b.artifact.path.read_bytes()
        assert a.artifact.manifest_path.read_bytes() == b.artifact.manifest_path.read_bytes()
        assert (a.directory / "README.md").read_bytes() == (b.directory / "README.md").read_bytes()


def test_a_new_build_replaces_the_old_one_whole(tmp_path: Path):
    output = tmp_path / "build"
    compile_model(DEMO_MODEL, ["rpi5", "coral"], calibration="demo", output=output, profiling=QUIET)
    compile_model(DEMO_MODEL, ["host"], calibration="demo", output=output, profiling=QUIET)
    assert sorted(p.name for p in output.iterdir()) == ["host", "report.html", "report.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["build"]


def _with_log_softmax(path: Path) -> Path:
    """The demo model with a LogSoftmax on its output: ONNX Runtime quantizes it, the TFLite lowering refuses it."""
    model = onnx.load(DEMO_MODEL)
    out = model.graph.output[0]
    model.graph.node.append(helper.make_node("LogSoftmax", [out.name], ["log_probs"], name="log_softmax", axis=1))
    out_shape = [d.dim_value for d in out.type.tensor_type.shape.dim]
    model.graph.output.pop()
    model.graph.output.append(helper.make_tensor_value_info("log_probs", onnx.TensorProto.FLOAT, out_shape))
    onnx.save(model, path)
    return path


def test_a_failing_target_leaves_the_previous_build_untouched(tmp_path: Path):
    output = tmp_path / "build"
    compile_model(DEMO_MODEL, ["host"], calibration="demo", output=output, profiling=QUIET)
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    model = _with_log_softmax(tmp_path / "log_softmax.onnx")
    with pytest.raises(ExportError, match="LogSoftmax"):  # the ONNX target is built first, then rpi5 fails
        compile_model(model, ["sd8gen2-hexagon", "rpi5"], calibration="demo", output=output, profiling=QUIET)
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "log_softmax.onnx"]


def test_a_failed_build_leaves_no_parent_directories_behind(tmp_path: Path):
    model = _with_log_softmax(tmp_path / "log_softmax.onnx")
    with pytest.raises(ExportError, match="LogSoftmax"):
        compile_model(model, ["rpi5"], calibration="demo", output=tmp_path / "a" / "b" / "out", profiling=QUIET)
    assert [p.name for p in tmp_path.iterdir()] == ["log_softmax.onnx"]


@pytest.mark.parametrize(
    ("targets", "kwargs", "message"),
    [
        (["rk3588-npu"], {}, "deploys rknn"),
        (["rpi5", "rpi5-hailo8l"], {}, "deploys hef"),
        (["ethos-u55-128"], {"precision": "fp16"}, "does not run fp16"),
        (["rpi5"], {"calibration": None}, "needs calibration data"),
        (["coral"], {"fmt": "onnx"}, "not onnx"),
        ([], {}, "at least one --target"),
        (["rpi5"], {"max_drop": -1.0}, "--max-drop -1"),
        (["rpi5"], {"preprocess": "imagenett"}, "unknown preprocessing 'imagenett'"),
    ],
)
def test_refusals_come_before_any_work(tmp_path: Path, targets, kwargs, message):
    options = {"calibration": "demo", **kwargs}
    with pytest.raises((UsageError, DataError), match=message):
        compile_model(DEMO_MODEL, targets, output=tmp_path / "build", profiling=QUIET, **options)
    assert list(tmp_path.iterdir()) == []


def test_a_non_build_directory_is_never_replaced(tmp_path: Path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="holds no edge-sdk build"):
        compile_model(DEMO_MODEL, ["host"], calibration="demo", output=tmp_path, profiling=QUIET)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_onnx_format_and_fp32_where_the_target_allows(tmp_path: Path):
    result = compile_model(DEMO_MODEL, ["rpi5"], precision="fp32", fmt="onnx", output=tmp_path / "b", profiling=QUIET)
    bundle = result.bundles[0]
    assert bundle.artifact.path.name == "demo_mnist.fp32.onnx" and bundle.fidelity.outputs[0].max_abs_error == 0


def test_accuracy_budget_keeps_layers_in_float_on_tflite_targets(tmp_path: Path):
    result = compile_model(
        DEMO_MODEL, ["rpi5"], calibration="demo", min_sqnr_db=40.0, output=tmp_path / "b", profiling=QUIET
    )
    bundle = result.bundles[0]
    assert bundle.fidelity.outputs[0].sqnr_db >= 40 and bundle.float_nodes
    assert all(n.reason.startswith("accuracy fallback") for n in bundle.float_nodes)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert len(report["targets"][0]["float_nodes"]) == len(bundle.float_nodes)


def test_measured_on_a_real_device_over_ssh(ssh_kit: SshKit, tmp_path: Path):
    server = ssh_kit.start()
    device = ssh_kit.device(server.port)  # target "host": this machine, reached over SSH
    options = ProfileOptions(host=False, predict=False, store=False, devices=(device,), known_hosts=ssh_kit.known_hosts)
    result = compile_model(DEMO_MODEL, ["host"], calibration="demo", output=tmp_path / "b", profiling=options)
    measured = result.bundles[0].latency.device
    assert measured is not None and measured.device == device.address
    assert measured.model_sha256 == result.bundles[0].artifact.sha256
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["targets"][0]["latency"]["device"]["median_ms"] > 0
    assert server.work_dirs() == []


def test_a_fleet_device_that_fails_becomes_a_note(ssh_kit: SshKit, tmp_path: Path):
    from edge_sdk.fleet import load_inventory

    server = ssh_kit.start()
    inventory = write_inventory(
        tmp_path / "fleet.toml",
        entry("here", server.port, key=ssh_kit.client_key),
        entry("gone", ssh_kit.free_port(), key=ssh_kit.client_key),
    )
    options = ProfileOptions(
        host=False, predict=False, store=False, fleet=load_inventory(inventory), known_hosts=ssh_kit.known_hosts
    )
    result = compile_model(DEMO_MODEL, ["host"], calibration="demo", output=tmp_path / "b", profiling=options)
    latency = result.bundles[0].latency
    assert latency.device is not None and latency.device.device.endswith(f":{server.port}")
    assert any("refused" in note.lower() for note in latency.notes), latency.notes
    assert server.work_dirs() == []


def test_cli_compile_json(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "compile", str(DEMO_MODEL), "-t", "rpi5", "--calib", "demo",
         "-o", str(tmp_path / "b"), "--no-predict", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["output"] == str(tmp_path / "b") and doc["targets"][0]["target"] == "rpi5"
    assert np.isfinite(doc["targets"][0]["latency"]["host"]["median_ms"])


def test_options_check_devices_against_the_targets():
    from edge_sdk.remote import Device
    from edge_sdk.targets import load_target

    options = replace(QUIET, devices=(Device(host="pi", user="pi", target="rpi4b"),))
    with pytest.raises(UsageError, match="rpi4b"):
        options.check([load_target("rpi5")])
