"""Bad input across every command, each run as a real CLI subprocess, as a user meets it.

Every case asserts the same contract: a non-zero exit, exactly one `error:` line on stderr that names
the thing and the next step, no traceback, with --json exactly one `{"error", "exit_code"}` document on
stdout, and no partial output: the output path does not exist afterwards (or the previous build in it
is byte-identical) and no staging (`.NAME.partial-*`), set-aside (`.NAME.old-*`) or `*.partial` file is
left beside it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import helper

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edge_sdk" / "assets" / "demo_mnist.onnx"  # input 'input' 1x1x28x28, output 'logits' 1x10
FAST = ["--no-host", "--no-predict"]  # only the build; timing and prediction are not what these cases test
FP32_RPI5 = ["-t", "rpi5", "--precision", "fp32", *FAST]  # the cheapest complete build (no calibration)
# LiteRT's C++ logger prints this when an interpreter is created; see test_litert_banner_stays_off_stderr
LITERT_BANNER = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."

Args = Callable[[Path], list[str]]


# --- running the CLI and checking its contract -------------------------------------------------


def env_for(tmp: Path) -> dict[str, str]:
    """The user's environment with a results store of the test's own and this checkout importable."""
    return {**os.environ, "EDGE_SDK_DB": str(tmp / "results.sqlite"), "PYTHONPATH": str(REPO)}


def cli(tmp: Path, *args: str, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp,
        env=env_for(tmp),
        **kwargs,
    )


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one non-blank stderr line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"want one error line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


def assert_refused(proc: subprocess.CompletedProcess, code: int | None, *fragments: str) -> None:
    """Exit `code` (any non-zero for None), one error line holding every fragment, no traceback, and
    with --json exactly one error document on stdout (nothing on stdout otherwise)."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if code is not None:
        assert proc.returncode == code, proc.stderr
    line = error_line(proc)
    for fragment in fragments:
        assert fragment in line, line
    if "--json" in proc.args:
        doc = json.loads(proc.stdout)  # raises on anything but exactly one document
        assert doc == {"error": doc["error"], "exit_code": proc.returncode}
        assert line == f"error: {doc['error']}"
    else:
        assert proc.stdout.strip() == "", proc.stdout


def leftovers(output: Path) -> list[str]:
    """Staging, set-aside and partial files beside `output` (and partial files inside it)."""
    parent = output.parent
    if not parent.is_dir():
        return []
    hidden = (f".{output.name}.partial-", f".{output.name}.old-")
    found = [p.name for p in parent.iterdir() if p.name.startswith(hidden) or p.name.endswith(".partial")]
    if output.is_dir():
        found += [str(p) for p in output.rglob("*") if ".partial" in p.name]
    return sorted(found)


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under `directory`: file bytes, or None for a directory."""
    return {str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes() for p in sorted(directory.rglob("*"))}


def assert_nothing_written(output: Path, before: dict[str, bytes | None] | None = None) -> None:
    if before is None:
        assert not output.exists(), f"{output} was left behind"
    else:
        assert snapshot(output) == before, f"the previous build in {output} changed"
    assert leftovers(output) == []


# --- inputs built in code ----------------------------------------------------------------------


def npz(tmp: Path, name: str, **arrays) -> str:
    path = tmp / name
    np.savez(path, **arrays)
    return str(path)


def demo_images(n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 1, 28, 28)).astype(np.float32)


def with_nan(tmp: Path) -> str:
    images = demo_images()
    images[3, 0, 5, 5] = np.nan
    return npz(tmp, "nan.npz", input=images)


def wrong_shape(tmp: Path) -> str:
    return npz(tmp, "wrong.npz", input=np.zeros((4, 1, 1, 32, 32), np.float32))


def object_array(tmp: Path) -> str:
    return npz(tmp, "pickled.npz", input=np.array([np.zeros(3), "x"], dtype=object))


def write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def folder(tmp: Path, name: str) -> str:
    (tmp / name).mkdir()
    return str(tmp / name)


def truncated_demo(tmp: Path) -> str:
    data = DEMO.read_bytes()
    return write(tmp, "cut.onnx", data[: len(data) // 2])


def save(tmp: Path, name: str, model: onnx.ModelProto) -> str:
    onnx.save(model, tmp / name)
    return str(tmp / name)


def dynamic_batch(tmp: Path) -> str:
    relu = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return save(tmp, "dynamic.onnx", make_model([relu], [("x", ["N", 1, 28, 28])], [("y", ["N", 1, 28, 28])]))


def log_softmax(tmp: Path) -> str:
    """LogSoftmax has no TFLite converter in the lowering (`edge-sdk export --list-ops`)."""
    node = helper.make_node("LogSoftmax", ["x"], ["y"], name="my_logsoftmax", axis=-1)
    return save(tmp, "logsoftmax.onnx", make_model([node], [("x", [1, 10])], [("y", [1, 10])]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- compile: every refusal, each leaving no output ---------------------------------------------


def model(make: Callable[[Path], str], *args: str | Callable[[Path], str]) -> Args:
    """The model `make` writes and `args`, where a callable makes its argument in the test's directory."""
    return lambda tmp: [make(tmp), *(a(tmp) if callable(a) else a for a in args)]


def demo(*args: str | Callable[[Path], str]) -> Args:
    return model(lambda _tmp: str(DEMO), *args)


COMPILE_CASES = [
    # the model
    pytest.param(model(lambda t: str(t / "missing.onnx"), *FP32_RPI5), 3, ["missing.onnx", "no such file"],
                 id="missing-model"),
    pytest.param(model(lambda t: folder(t, "model_dir"), *FP32_RPI5), 3, ["is a directory", "the .onnx file inside"],
                 id="directory-as-model"),
    pytest.param(model(lambda t: write(t, "empty.onnx", b""), *FP32_RPI5), 3, ["the file is empty", "export"],
                 id="empty-model"),
    pytest.param(model(lambda t: write(t, "notes.onnx", b"these are my notes\n"), *FP32_RPI5), 3,
                 ["not an ONNX file", "pass a .onnx model"], id="not-onnx"),
    pytest.param(model(truncated_demo, *FP32_RPI5), 3, ["cut.onnx", "truncated or corrupt"], id="truncated-onnx"),
    pytest.param(model(dynamic_batch, *FP32_RPI5), 3, ["input 'x' has a dynamic shape", "--input-shape x=1x1x28x28"],
                 id="dynamic-input-without-input-shape"),
    pytest.param(demo(*FP32_RPI5, "--input-shape", "input:1x1x28x28"), 2,
                 ["'input:1x1x28x28' is not NAME=DxDxD", "e.g. --input-shape"], id="input-shape-syntax"),
    # the targets, formats and precisions
    pytest.param(demo("-t", "rpi5x", "--precision", "fp32", *FAST), 4,
                 ["unknown target 'rpi5x'", "did you mean rpi5", "edge-sdk targets list"], id="unknown-target"),
    pytest.param(demo("-t", "rk3588-npu", "--calib", "demo", *FAST), 2,
                 ["'rk3588-npu' deploys rknn, not TFLite or ONNX", "vendor's compiler"], id="rknn-target"),
    pytest.param(demo("-t", "rpi5-hailo8l", "--calib", "demo", *FAST), 2,
                 ["'rpi5-hailo8l' deploys hef, not TFLite or ONNX", "vendor's compiler"], id="hef-target"),
    pytest.param(demo("-t", "coral-edgetpu-usb", "--calib", "demo", "--format", "onnx", *FAST), 2,
                 ["'coral-edgetpu-usb' deploys edgetpu-tflite, not onnx", "vendor's compiler"],
                 id="format-onnx-for-tflite-only-target"),
    pytest.param(demo(*FP32_RPI5, "--format", "pb"), 2, ["format 'pb'", "use tflite or onnx"], id="unknown-format"),
    pytest.param(demo("-t", "ethos-u55-128", "--precision", "fp16", "--calib", "demo", *FAST), 2,
                 ["'ethos-u55-128' does not run fp16", "it supports int8, int16x8"], id="precision-not-run"),
    pytest.param(demo("-t", "ethos-u55-128", *FAST), 2, ["runs int8", "needs calibration data: pass --calib"],
                 id="int8-without-calib"),
    # calibration data
    pytest.param(demo("-t", "rpi5", "--calib", "no/such/calib.npz", *FAST), 6, ["no/such/calib.npz", "no such file"],
                 id="calib-missing"),
    pytest.param(demo("-t", "rpi5", "--calib", wrong_shape, *FAST, "--json"), 6,
                 ["calibration input 'input' has shape 1x1x32x32", "the model expects 1x1x28x28"],
                 id="calib-wrong-shape-json"),
    pytest.param(demo("-t", "rpi5", "--calib", with_nan, *FAST), 6,
                 ["'input' has NaN or inf values in sample 3", "np.nan_to_num"], id="calib-nan"),
    pytest.param(demo("-t", "rpi5", "--calib", object_array, *FAST), 6,
                 ["holds object arrays", "never loads", "np.savez"], id="calib-pickled-object-array"),
    pytest.param(demo("-t", "rpi5", "--calib", lambda t: folder(t, "photos"), "--preprocess", "imagenet", *FAST), 6,
                 ["photos: no images found", "put images there"], id="calib-empty-image-folder"),
    pytest.param(demo("-t", "rpi5", "--calib", lambda t: folder(t, "photos"), "--preprocess", "imagenett", *FAST), 6,
                 ["unknown preprocessing 'imagenett'", "imagenet, imagenet-tf"], id="unknown-preprocess"),
    pytest.param(demo(*FP32_RPI5, "--calib", "demo", "--preprocess", "imagenett"), None,
                 ["unknown preprocessing 'imagenett'"], id="unknown-preprocess-with-a-recipe"),
    pytest.param(demo(*FP32_RPI5, "--max-drop", "-5"), None, ["--max-drop"],
                 id="negative-max-drop"),
    # measuring: devices, fleets, threads
    pytest.param(demo(*FP32_RPI5, "--device", "rpi5=no-at-sign"), 2,
                 ["--device 'no-at-sign' is not USER@HOST[:PORT]", "e.g. --device pi@"], id="device-malformed"),
    pytest.param(demo(*FP32_RPI5, "--device", "rpi4b=pi@127.0.0.1"), 2,
                 ["is for target 'rpi4b', which is not compiled", "pass it with --target"],
                 id="device-for-a-target-not-compiled"),
    pytest.param(demo(*FP32_RPI5, "--fleet", "no/such/inventory.toml"), 2,
                 ["no/such/inventory.toml", "no such file"], id="fleet-missing"),
    pytest.param(model(log_softmax, "-t", "rpi5", "--precision", "fp32", "--threads", "0"), 2,
                 ["--threads 0: give 1 or more"], id="threads-zero-before-any-work"),
]  # fmt: skip


@pytest.mark.parametrize(("make_args", "code", "fragments"), COMPILE_CASES)
def test_compile_refuses(tmp_path: Path, make_args: Args, code: int | None, fragments: list[str]):
    output = tmp_path / "out"
    proc = cli(tmp_path, "compile", *make_args(tmp_path), "-o", str(output))
    assert_refused(proc, code, *fragments)
    assert_nothing_written(output)


# --- compile: the output directory --------------------------------------------------------------


@pytest.fixture(scope="module")
def good_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete fp32 build, the previous build the failing cases must leave alone; it also shows
    the same compile succeeds when nothing is wrong (so the RLIMIT_FSIZE failure is the limit's)."""
    tmp = tmp_path_factory.mktemp("good")
    proc = cli(tmp, "compile", str(DEMO), *FP32_RPI5, "-o", str(tmp / "build"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp / "build" / "report.json").is_file()
    return tmp / "build"


def previous_build(good_build: Path, tmp: Path) -> tuple[Path, dict[str, bytes | None]]:
    output = tmp / "build"
    shutil.copytree(good_build, output)
    return output, snapshot(output)


def test_output_that_is_a_file_is_refused_and_kept(tmp_path: Path):
    output = tmp_path / "out"
    output.write_text("my notes\n")
    proc = cli(tmp_path, "compile", str(DEMO), *FP32_RPI5, "-o", str(output))
    assert_refused(proc, 2, "output", "is a file; pass a directory for -o")
    assert output.read_text() == "my notes\n" and leftovers(output) == []


def test_non_empty_output_without_a_build_is_refused_and_untouched(tmp_path: Path):
    output = tmp_path / "photos"
    (output / "2024").mkdir(parents=True)
    (output / "2024" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (output / "notes.txt").write_text("keep me\n")
    before = snapshot(output)
    proc = cli(tmp_path, "compile", str(DEMO), *FP32_RPI5, "-o", str(output))
    assert_refused(proc, 2, "is not empty and holds no edge-sdk build (report.json)", "new or empty directory")
    assert_nothing_written(output, before)


def test_unwritable_output_is_refused(tmp_path: Path):
    if os.geteuid() == 0:  # root writes through chmod; sysfs refuses mkdir with EPERM even to root
        output = Path("/sys/edge-sdk-test-out")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        output = locked / "out"
    try:
        proc = cli(tmp_path, "compile", str(DEMO), *FP32_RPI5, "-o", str(output))
        assert_refused(proc, 2, f"cannot create the output directory {output}", "choose another -o")
        assert_nothing_written(output)
    finally:
        if output.parent.name == "locked":
            output.parent.chmod(0o700)


def limit_file_size(limit: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_keeps_the_previous_build(tmp_path: Path, good_build: Path):
    """A 20 kB file-size limit (the artifact is ~150 kB) stands in for a disk that fills mid-build."""
    output, before = previous_build(good_build, tmp_path)
    args = ["compile", str(DEMO), *FP32_RPI5, "-o", str(output), "--json"]
    proc = cli(tmp_path, *args, preexec_fn=limit_file_size(20_000))
    assert_refused(proc, 2, "cannot write", "File too large", "free space")
    assert_nothing_written(output, before)


@pytest.fixture(scope="module")
def closed_port_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path, int]:
    tmp = tmp_path_factory.mktemp("closed-port")
    port = free_port()
    output = tmp / "out"
    device = f"rpi5=pi@127.0.0.1:{port}"
    proc = cli(tmp, "compile", str(DEMO), *FP32_RPI5, "--device", device, "-o", str(output), "--json")
    return proc, output, port


def test_unreachable_device_is_a_device_error_and_writes_nothing(closed_port_run):
    proc, output, port = closed_port_run
    assert_refused(proc, 9, f"pi@127.0.0.1:{port}", "connection refused", f"listening on port {port}")
    assert_nothing_written(output)


def test_litert_banner_stays_off_stderr(closed_port_run):
    proc, _, _ = closed_port_run
    assert LITERT_BANNER not in proc.stderr, proc.stderr


# --- compile: an interrupt ----------------------------------------------------------------------


def staging_dirs(output: Path) -> list[Path]:
    return list(output.parent.glob(f".{output.name}.partial-*"))


def interrupt_compile(tmp: Path, output: Path) -> subprocess.CompletedProcess:
    """SIGINT a three-target int8 compile once it is building (its staging directory exists)."""
    calib = npz(tmp, "calib.npz", input=demo_images())
    args = [sys.executable, "-m", "edge_sdk.cli", "compile", str(DEMO), "-o", str(output), "--calib", calib, *FAST]
    args += ["-t", "rpi5", "-t", "rpi4b", "-t", "ethos-u55-128"]
    with (tmp / "stdout").open("w+") as stdout, (tmp / "stderr").open("w+") as stderr:
        proc = subprocess.Popen(args, stdout=stdout, stderr=stderr, cwd=tmp, env=env_for(tmp))
        try:
            deadline = time.monotonic() + 90
            while not staging_dirs(output) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, f"compile ended before it was interrupted:\n{(tmp / 'stderr').read_text()}"
            assert staging_dirs(output), "compile did not start building within 90 s"
            time.sleep(0.5)  # into the first target's export
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return subprocess.CompletedProcess(
        args, proc.returncode, (tmp / "stdout").read_text(), (tmp / "stderr").read_text()
    )


@pytest.fixture(scope="module", params=[False, True], ids=["fresh", "over-a-build"])
def interrupted(request, tmp_path_factory: pytest.TempPathFactory, good_build: Path):
    tmp = tmp_path_factory.mktemp("interrupted")
    output, before = previous_build(good_build, tmp) if request.param else (tmp / "out", None)
    return interrupt_compile(tmp, output), output, before


def test_interrupt_leaves_no_partial_build(interrupted):
    proc, output, before = interrupted
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert_nothing_written(output, before)


def test_interrupt_exits_130_saying_so(interrupted):
    proc, _, _ = interrupted
    assert_refused(proc, 130, "interrupted")


# --- an already quantized model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("quantized")
    calib = npz(tmp, "calib.npz", input=demo_images())
    proc = cli(tmp, "quantize", str(DEMO), "-t", "rpi5", "--calib", calib, "--rounding", "nearest", "-o", str(tmp))
    assert proc.returncode == 0, proc.stderr
    return tmp / "demo_mnist.int8.onnx"


ALREADY_QUANTIZED = "the lowering fails on DequantizeLinear ('folding its constant inputs failed (No implementation')"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["compile", *FAST], id="compile"),
        pytest.param(["export"], id="export"),
        pytest.param(["quantize"], id="quantize"),
    ],
)  # fmt: skip
def test_an_already_quantized_model_is_refused(tmp_path: Path, quantized_model: Path, command: list[str]):
    output = tmp_path / "out"
    calib = npz(tmp_path, "calib.npz", input=demo_images())
    args = [command[0], str(quantized_model), "-t", "rpi5", "--calib", calib, *command[1:], "-o", str(output)]
    assert_refused(cli(tmp_path, *args), None, "already quantized", "pass the float model")
    assert_nothing_written(output)


# --- the other commands -------------------------------------------------------------------------

OTHER_CASES = [
    pytest.param(lambda t: ["inspect", str(t / "missing.onnx"), "--json"], 3, ["no such file"],
                 id="inspect-missing-model-json"),
    pytest.param(lambda t: ["export", log_softmax(t), "-t", "rpi5", "--precision", "fp32", "-o", str(t / "out")], 8,
                 ["node 'my_logsoftmax' (LogSoftmax", "no TFLite converter", "edge-sdk export --list-ops"],
                 id="export-unsupported-op"),
    pytest.param(lambda t: ["verify", str(DEMO), "--data", "demo"], 2, ["Missing option '--reference'"],
                 id="verify-without-reference"),
    pytest.param(lambda t: ["bench", str(DEMO)], 2, ["needs exactly one of --device", "or --fleet"],
                 id="bench-without-device-or-fleet"),
    pytest.param(lambda t: ["profile", str(t / "missing.onnx")], 3, ["missing.onnx not found", "check the path"],
                 id="profile-missing-model"),
    pytest.param(lambda t: ["results", "show", "4242"], 2, ["no run with id 4242", "list the stored runs"],
                 id="results-show-unknown-id"),
    pytest.param(lambda t: ["targets", "show", "rpi55", "--json"], 4,
                 ["unknown target 'rpi55'", "did you mean rpi5"], id="targets-show-unknown-json"),
    pytest.param(lambda t: ["demo", "-o", write(t, "out", b"a file\n")], 2, ["is a file; pass a directory"],
                 id="demo-output-is-a-file"),
]  # fmt: skip


@pytest.mark.parametrize(("make_args", "code", "fragments"), OTHER_CASES)
def test_other_commands_refuse(tmp_path: Path, make_args: Callable[[Path], list[str]], code: int, fragments):
    output = tmp_path / "out"
    args = make_args(tmp_path)
    before = output.read_bytes() if output.is_file() else None  # a case may make `out` a file on purpose
    assert_refused(cli(tmp_path, *args), code, *fragments)
    if before is None:
        assert_nothing_written(output)
    else:
        assert output.read_bytes() == before and leftovers(output) == []
