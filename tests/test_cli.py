"""The CLI as a user runs it: one JSON document with --json, and one error line, a non-zero exit
and no traceback for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
from conftest import conv_bn_relu_model, make_model, write_profile
from onnx import helper


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_targets_list_json_lists_every_shipped_target():
    from edge_sdk.targets import data_dir

    proc = run("targets", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    ids = {t["id"] for t in json.loads(proc.stdout)["targets"]}
    assert ids == {p.stem for p in data_dir("targets").glob("*.toml")}


def test_targets_show_text_and_json():
    proc = run("targets", "show", "rpi5")
    assert proc.returncode == 0 and "Cortex-A76" in proc.stdout and "sources" in proc.stdout
    doc = json.loads(run("targets", "show", "rpi5", "--json").stdout)
    assert doc["id"] == "rpi5" and doc["quantization"]["weights"]["per_channel"] is True


def test_inspect_table_and_json(tiny_model_path):
    proc = run("inspect", str(tiny_model_path), "--target", "rpi5", "--target", "ethos-u55-128")
    assert proc.returncode == 0, proc.stderr
    assert "rpi5" in proc.stdout and "ethos-u55-128" in proc.stdout
    doc = json.loads(run("inspect", str(tiny_model_path), "-t", "rpi5", "--json", "--per-node").stdout)
    assert [t["target"] for t in doc["targets"]] == ["rpi5"]


def test_inspect_with_input_shape(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(conv_bn_relu_model(batch="N"), path)
    doc = json.loads(run("inspect", str(path), "--input-shape", "x=1x3x16x16", "--json").stdout)
    assert doc["model"]["inputs"][0]["shape"] == [1, 3, 16, 16]


def _external_missing(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(conv_bn_relu_model(), path, save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    return path


def _opset(tmp_path, opset):
    path = tmp_path / f"op{opset}.onnx"
    onnx.save(make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])], opset=opset), path)
    return path


def _truncated(tmp_path, tiny):
    path = tmp_path / "cut.onnx"
    path.write_bytes(tiny.read_bytes()[:700])
    return path


def _dynamic(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(conv_bn_relu_model(batch="N"), path)
    return path


def _text(tmp_path):
    path = tmp_path / "readme.onnx"
    path.write_text("this is text\n")
    return path


@pytest.mark.parametrize(
    ("make", "extra", "fragments"),
    [
        (lambda tmp, tiny: tmp / "missing.onnx", [], ["no such file"]),
        (lambda tmp, tiny: _text(tmp), [], ["not an ONNX"]),
        (_truncated, [], ["truncated"]),
        (lambda tmp, tiny: _external_missing(tmp), [], ["external data file 'w.bin' is missing"]),
        (lambda tmp, tiny: _opset(tmp, 6), [], ["opset 6 is older than 7"]),
        (lambda tmp, tiny: _opset(tmp, 22), [], ["opset 22 is newer than 21"]),
        (lambda tmp, tiny: _dynamic(tmp), [], ["dynamic shape", "--input-shape x=1x3x16x16"]),
        (lambda tmp, tiny: tiny, ["--target", "rpi6"], ["unknown target 'rpi6'", "rpi5"]),
        (lambda tmp, tiny: tiny, ["--input-shape", "x:1x3"], ["is not NAME=DxDxD"]),
        (lambda tmp, tiny: tiny, ["--input-shape", "y=1x3x16x16"], ["model's inputs are: x"]),
        (lambda tmp, tiny: tiny, ["--precision", "fp64"], ["fp64"]),
        (lambda tmp, tiny: tiny, ["--target", "coral-edgetpu-usb", "--precision", "fp32"], ["does not run fp32"]),
        (lambda tmp, tiny: tiny, ["-t", "rpi5", "--targets-dir", "/nonexistent/dir"], ["does not exist"]),
    ],
)
def test_inspect_bad_input(tmp_path, tiny_model_path, make, extra, fragments):
    assert_one_line_error(run("inspect", str(make(tmp_path, tiny_model_path)), *extra), *fragments)


def test_invalid_target_file_is_one_line(tmp_path, tiny_model_path):
    path = write_profile(tmp_path, "bad")
    path.write_text(path.read_text().replace("[compute]", "[compute]\nturbo = true"))
    assert_one_line_error(
        run("targets", "list", "--targets-dir", str(tmp_path)), "bad.toml", "key 'compute.turbo' is not a known key"
    )


def test_unknown_target_in_show():
    assert_one_line_error(run("targets", "show", "ethos-u56-128"), "unknown target", "did you mean")


def test_json_mode_errors_are_json_too(tmp_path):
    proc = run("inspect", str(tmp_path / "nope.onnx"), "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == doc["exit_code"] == 3 and "no such file" in doc["error"]


def test_version():
    from edge_sdk import __version__

    assert run("--version").stdout.strip() == f"edge-sdk {__version__}"


def test_quantize_and_verify_commands(tmp_path):
    from edge_sdk.demo import DEMO_MODEL

    proc = run(
        "quantize",
        str(DEMO_MODEL),
        "-t",
        "rpi5",
        "--calib",
        "demo",
        "--data",
        "demo",
        "--engine",
        "onnxruntime",
        "-o",
        str(tmp_path),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["engine"] == "onnxruntime" and doc["plan"]["precision"] == "int8"
    quantized = tmp_path / "demo_mnist.int8.onnx"
    assert quantized.exists() and (tmp_path / "demo_mnist.int8.onnx.json").exists()
    proc = run("verify", str(quantized), "--reference", str(DEMO_MODEL), "--data", "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    fidelity = json.loads(proc.stdout)
    assert fidelity["samples"] == 1000 and fidelity["outputs"][0]["accuracy_quant"] > 0.98
    text = run("verify", str(quantized), "--reference", str(DEMO_MODEL), "--data", "demo", "--per-layer")
    assert "Per layer" in text.stdout


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--precision", "fp16", "-t", "coral-edgetpu-usb"], ["does not run fp16"]),
        (["--calib", "/nonexistent/photos"], ["/nonexistent/photos"]),
        (["--max-drop", "1", "--engine", "nncf", "--precision", "int16x8", "-t", "ethos-u55-128"], ["cannot serve"]),
    ],
)
def test_quantize_bad_input(tmp_path, extra, fragments):
    from edge_sdk.demo import DEMO_MODEL

    args = ["quantize", str(DEMO_MODEL), "-o", str(tmp_path / "out")]
    if "-t" not in extra:
        args += ["-t", "rpi5"]
    if "--calib" not in extra:
        args += ["--calib", "demo"]
    proc = run(*args, *extra)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_quantize_an_already_quantized_model(tmp_path):
    from edge_sdk.demo import DEMO_MODEL

    assert (
        run(
            "quantize", str(DEMO_MODEL), "-t", "rpi5", "--calib", "demo", "--engine", "onnxruntime", "-o", str(tmp_path)
        ).returncode
        == 0
    )
    proc = run(
        "quantize",
        str(tmp_path / "demo_mnist.int8.onnx"),
        "-t",
        "rpi5",
        "--calib",
        "demo",
        "-o",
        str(tmp_path / "again"),
    )
    assert_one_line_error(proc, "already quantized", "pass the float model")


def test_an_error_after_ctrl_c_is_reported_as_the_interruption(monkeypatch, capsys):
    """A library that swallows the KeyboardInterrupt (a bare except around an import) surfaces it as
    another error, e.g. a missing dependency; after Ctrl-C the CLI reports the interruption."""
    from edge_sdk import cli
    from edge_sdk.errors import DependencyError

    def interrupted_import(**_):
        cli._interrupted.set()
        raise DependencyError("quantized TFLite export needs ai-edge-quantizer: pip install ai-edge-quantizer")

    monkeypatch.setattr(cli, "app", interrupted_import)
    monkeypatch.setattr(cli, "_interrupted", type(cli._interrupted)())
    with pytest.raises(SystemExit) as exited:
        cli._run()
    assert exited.value.code == 130
    assert "interrupted; nothing was written" in capsys.readouterr().err
