"""The device runner: run alone as a script (no edge_sdk importable) and through `measure`."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import const, conv_bn_relu_model, make_model
from onnx import helper

from edge_sdk import runner
from edge_sdk.measurement import Conditions

RUNNER = Path(runner.__file__)
CONTRACT_KEYS = {
    "runner_version",
    "model_name",
    "model_sha256",
    "init_ms",
    "first_run_ms",
    "samples_ms",
    "peak_rss_mb",
    "conditions",
}
FAST = ["--runs", "5", "--warmup", "1", "--budget-s", "5"]


def write_add_tflite(path: Path) -> Path:
    """A float TFLite model z = x + y on [1, 8], with a serving_default signature, written with the
    schema object API (no TensorFlow)."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated", reason="needs ai-edge-litert")
    flatbuffers = pytest.importorskip("flatbuffers", reason="needs flatbuffers (an ai-edge-litert dependency)")

    def tensor(name: str) -> object:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), [1, 8], schema.TensorType.FLOAT32, 0
        return t

    def tensor_map(name: str, index: int) -> object:
        m = schema.TensorMapT()
        m.name, m.tensorIndex = name.encode(), index
        return m

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = [tensor("x"), tensor("y"), tensor("z")], [0, 1], [2]
    graph.operators, graph.name = [op], b"main"
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = b"serving_default", 0
    signature.inputs, signature.outputs = [tensor_map("x", 0), tensor_map("y", 1)], [tensor_map("z", 2)]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers, model.signatureDefs, model.description = [schema.BufferT()], [signature], b"edge-sdk test"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def chain_model() -> onnx.ModelProto:
    """Add -> Mul -> Sigmoid: three nodes ONNX Runtime runs as they are (nothing to fuse)."""
    nodes = [
        helper.make_node("Add", ["x", "c"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "a"], ["m"], name="mul"),
        helper.make_node("Sigmoid", ["m"], ["y"], name="sig"),
    ]
    return make_model(nodes, [("x", [1, 8])], [("y", [1, 8])], [const("c", np.ones((1, 8), np.float32))])


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(chain_model(), path)
    return path


@pytest.fixture
def tflite_path(tmp_path: Path) -> Path:
    return write_add_tflite(tmp_path / "add.tflite")


def _block(directory: Path, *packages: str) -> Path:
    """A PYTHONPATH entry where importing each package raises ImportError, as if not installed."""
    for name in packages:
        (directory / name).mkdir(parents=True, exist_ok=True)
        (directory / name / "__init__.py").write_text(f"raise ImportError('{name} blocked by the test')\n")
    return directory


def run_alone(tmp_path: Path, model: Path, *args: str, block: tuple[str, ...] = ()) -> tuple[int, dict]:
    """runner.py copied alone next to the model and run as a script, with edge_sdk not importable."""
    device = tmp_path / "device"
    device.mkdir(exist_ok=True)
    shutil.copy(RUNNER, device / "runner.py")
    if model.exists():
        shutil.copy(model, device / model.name)
    blocked = _block(tmp_path / "blocked", "edge_sdk", *block)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(blocked)
    done = subprocess.run(
        [sys.executable, "runner.py", model.name, *args],
        cwd=device,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len(done.stdout.strip().splitlines()) == 1, done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def test_runner_imports_only_stdlib_numpy_and_runtimes() -> None:
    tree = ast.parse(RUNNER.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    third_party = roots - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party <= {"numpy", "onnxruntime"}, third_party  # LiteRT/tflite-runtime load by name
    assert not re.search(r"^\s*(import|from)\s+edge_sdk", RUNNER.read_text(), re.MULTILINE)


def test_onnx_alone_prints_the_contract(tmp_path: Path, onnx_path: Path) -> None:
    code, doc = run_alone(tmp_path, onnx_path, *FAST, "--threads", "2")
    assert code == 0, doc
    assert set(doc) >= CONTRACT_KEYS and "per_op" not in doc
    assert doc["runner_version"] == 1
    assert doc["model_name"] == "chain.onnx"
    assert doc["model_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert doc["init_ms"] > 0 and doc["first_run_ms"] > 0 and doc["peak_rss_mb"] > 0
    assert len(doc["samples_ms"]) == 5 and all(s > 0 for s in doc["samples_ms"])
    conditions = doc["conditions"]
    assert set(conditions) == {f.name for f in dataclasses.fields(Conditions)}
    assert conditions["runtime"] == "onnxruntime" and conditions["runtime_version"]
    assert conditions["threads"] == 2
    assert conditions["load_avg"] is None or len(conditions["load_avg"]) == 3


def test_tflite_alone_runs_in_litert(tmp_path: Path, tflite_path: Path) -> None:
    code, doc = run_alone(tmp_path, tflite_path, *FAST, "--threads", "3")
    assert code == 0, doc
    assert set(doc) >= CONTRACT_KEYS
    assert doc["conditions"]["runtime"] == "litert"
    assert doc["conditions"]["threads"] == 3
    assert len(doc["samples_ms"]) == 5


def test_per_op_gives_one_entry_per_onnx_node_and_leaves_no_file(tmp_path: Path, onnx_path: Path) -> None:
    code, doc = run_alone(tmp_path, onnx_path, *FAST, "--per-op")
    assert code == 0, doc
    assert [(op["name"], op["op_type"]) for op in doc["per_op"]] == [("add", "Add"), ("mul", "Mul"), ("sig", "Sigmoid")]
    assert all(op["mean_ms"] > 0 for op in doc["per_op"])
    assert sorted(p.name for p in (tmp_path / "device").iterdir()) == ["chain.onnx", "runner.py"]


def test_per_op_profile_goes_to_a_temp_dir_that_is_removed(tmp_path: Path, onnx_path: Path, monkeypatch) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    doc = runner.measure(onnx_path, threads=1, runs=3, warmup=0, per_op=True)
    assert len(doc["per_op"]) == 3
    assert list(temp.iterdir()) == [] and sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_model_is_a_model_error(tmp_path: Path, suffix: str, damage: str, capsys) -> None:
    good = tmp_path / f"good{suffix}"
    if suffix == ".onnx":
        onnx.save(conv_bn_relu_model(), good)
    else:
        write_add_tflite(good)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not a model" * 20, "empty": b""}[damage])
    assert runner.main([str(bad)]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "model" and "bad" + suffix in doc["error"] and "\n" not in doc["error"]


def test_truncated_model_alone_exits_3(tmp_path: Path, onnx_path: Path) -> None:
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[:40])
    code, doc = run_alone(tmp_path, truncated)
    assert code == 3 and doc["kind"] == "model" and "cut.onnx" in doc["error"]


def test_missing_tflite_runtime_names_the_pip_package(tmp_path: Path, tflite_path: Path) -> None:
    code, doc = run_alone(tmp_path, tflite_path, block=("ai_edge_litert", "tflite_runtime"))
    assert code == 5 and doc["kind"] == "dependency"
    assert "pip install ai-edge-litert" in doc["error"] and "tflite-runtime" in doc["error"]


def test_missing_onnxruntime_names_the_pip_package(tmp_path: Path, onnx_path: Path) -> None:
    code, doc = run_alone(tmp_path, onnx_path, block=("onnxruntime",))
    assert code == 5 and "pip install onnxruntime" in doc["error"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["{dir}/missing.onnx"], 3, "not found"),
        (["{dir}/model.pt"], 2, ".onnx or .tflite"),
        (["{onnx}", "--runs", "0"], 2, "--runs"),
        (["{onnx}", "--threads", "many"], 2, "--threads"),
        (["{onnx}", "--budget-s", "0"], 2, "--budget-s"),
        (["{tflite}", "--per-op"], 2, "--per-op"),
        (["{onnx}", "--input", "{dir}/missing.npz"], 2, "missing.npz"),
    ],
)
def test_usage_and_missing_file_errors(tmp_path, onnx_path, tflite_path, capsys, args, code, words) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    argv = [a.format(dir=tmp_path, onnx=onnx_path, tflite=tflite_path) for a in args]
    assert runner.main(argv) == code
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"error", "kind"} and words in doc["error"]


def test_input_file_feeds_the_model(tmp_path: Path, onnx_path: Path, capsys) -> None:
    np.savez(tmp_path / "in.npz", x=np.ones((1, 8)))  # float64: cast to the model's float32
    assert runner.main([str(onnx_path), "--input", str(tmp_path / "in.npz"), "--runs", "2", "--warmup", "0"]) == 0
    assert len(json.loads(capsys.readouterr().out)["samples_ms"]) == 2


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"z": np.ones((1, 8), np.float32)}, "lack x"),
        ({"x": np.ones((2, 8), np.float32)}, "shape"),
        ({"x": np.ones((1, 8), np.complex64)}, "float32"),
    ],
)
def test_input_file_that_does_not_fit_is_a_usage_error(tmp_path, onnx_path, capsys, arrays, words) -> None:
    np.savez(tmp_path / "in.npz", **arrays)
    assert runner.main([str(onnx_path), "--input", str(tmp_path / "in.npz")]) == 2
    assert words in json.loads(capsys.readouterr().out)["error"]


def test_input_file_with_objects_is_never_unpickled(tmp_path: Path, onnx_path: Path, capsys) -> None:
    np.savez(tmp_path / "in.npz", x=np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "single.npy", np.ones((1, 8), np.float32))
    for name in ("in.npz", "single.npy"):
        assert runner.main([str(onnx_path), "--input", str(tmp_path / name)]) == 2
        assert "numpy.savez" in json.loads(capsys.readouterr().out)["error"]


def test_make_inputs_is_seeded_and_respects_dtype_ranges() -> None:
    specs = (
        runner.InputSpec("f", (None, 4), np.dtype(np.float32)),
        runner.InputSpec("u8", (64,), np.dtype(np.uint8)),
        runner.InputSpec("i8", (64,), np.dtype(np.int8)),
        runner.InputSpec("ids", (64,), np.dtype(np.int64)),
        runner.InputSpec("mask", (3,), np.dtype(np.bool_)),
    )
    feed = runner.make_inputs(specs)
    assert feed["f"].shape == (1, 4) and feed["f"].dtype == np.float32
    assert feed["u8"].dtype == np.uint8 and feed["u8"].max() > 127  # the whole 8-bit range
    assert feed["i8"].dtype == np.int8 and feed["i8"].min() < 0
    assert feed["ids"].dtype == np.int64 and feed["ids"].min() >= 0 and feed["ids"].max() <= runner.SMALL_INT_RANGE[1]
    assert feed["mask"].dtype == np.bool_
    again = runner.make_inputs(specs)
    assert all(np.array_equal(feed[k], again[k]) for k in feed)


def test_budget_stops_at_min_runs_and_progress_ends_full(onnx_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    doc = runner.measure(
        onnx_path, threads=1, runs=1000, budget_s=1e-9, warmup=0, min_runs=4, progress=lambda d, t: calls.append((d, t))
    )
    assert len(doc["samples_ms"]) == 4
    assert calls[:4] == [(1, 1000), (2, 1000), (3, 1000), (4, 1000)] and calls[-1] == (4, 4)


def test_runs_cap_min_runs(onnx_path: Path) -> None:
    doc = runner.measure(onnx_path, threads=1, runs=2, min_runs=5, warmup=0)
    assert len(doc["samples_ms"]) == 2


def test_missing_numpy_names_the_pip_package(tmp_path: Path, onnx_path: Path) -> None:
    code, doc = run_alone(tmp_path, onnx_path, block=("numpy",))
    assert code == 5 and doc == {"error": "no numpy: pip install numpy", "kind": "dependency"}
