"""The host benchmark stage and the runner-JSON -> BenchmarkResult parser."""

from __future__ import annotations

import copy
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import pytest
from test_runner import chain_model, write_add_tflite

import edge_sdk
from edge_sdk.benchmark import RUNNER_FILE, benchmark, result_from_runner_json
from edge_sdk.errors import DependencyError, DeviceError, EdgeSdkError, ModelError, UsageError
from edge_sdk.measurement import BenchmarkResult, Conditions, OpTime, Source

QUICK: dict[str, Any] = {"runs": 6, "warmup": 1, "budget_s": 5.0, "threads": 1}


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(chain_model(), path)
    return path


def runner_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "runner_version": 1,
        "model_name": "m.tflite",
        "model_sha256": "ab" * 32,
        "init_ms": 12.5,
        "first_run_ms": 3.0,
        "samples_ms": [2.0, 1.0, 4.0, 3.0],
        "peak_rss_mb": 80.0,
        "conditions": {
            "hostname": "pi",
            "cpu_model": "Raspberry Pi 5 Model B Rev 1.0",
            "machine": "aarch64",
            "os": "Linux-6.6-aarch64",
            "python": "3.11.2",
            "runtime": "litert",
            "runtime_version": "2.3.0",
            "threads": 4,
            "governor": "ondemand",
            "load_avg": [0.5, 0.25, 0.125],
            "temperature_c": 51.2,
            "throttled": "0x0",
        },
        "per_op": [{"name": "conv", "op_type": "Conv", "mean_ms": 1.5}],
    }
    doc.update(changes)
    return doc


def test_host_benchmark_of_onnx(onnx_path: Path) -> None:
    done: list[tuple[int, int]] = []
    result = benchmark(onnx_path, **QUICK, per_op=True, target="host", progress=lambda d, t: done.append((d, t)))
    assert isinstance(result, BenchmarkResult)
    assert result.source is Source.HOST and result.target == "host" and result.device is None
    assert result.model_name == "chain.onnx" and len(result.model_sha256) == 64
    assert result.sdk_version == edge_sdk.__version__
    created = datetime.fromisoformat(result.created_at)
    assert created.utcoffset() == timezone.utc.utcoffset(None)
    stats = result.stats
    assert stats is not None and stats.count == len(result.samples_ms) == 6
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p99_ms
    assert result.init_ms is not None and result.init_ms > 0 and result.first_run_ms is not None
    assert result.conditions is not None and result.conditions.threads == 1
    assert result.conditions.runtime == "onnxruntime"
    assert [op.op_type for op in result.per_op] == ["Add", "Mul", "Sigmoid"]
    assert done[-1] == (6, 6)


def test_host_benchmark_of_tflite(tmp_path: Path) -> None:
    path = write_add_tflite(tmp_path / "add.tflite")
    result = benchmark(path, **QUICK)
    assert result.conditions is not None and result.conditions.runtime == "litert"
    assert result.per_op == () and result.stats is not None and result.stats.count == 6


def test_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        benchmark(tmp_path / "missing.onnx")
    (tmp_path / "model.pt").write_bytes(b"torch")
    with pytest.raises(UsageError, match=r"\.onnx or \.tflite"):
        benchmark(tmp_path / "model.pt")


def test_corrupt_model_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.tflite"
    path.write_bytes(b"TFL3" * 8)
    with pytest.raises(ModelError, match=r"cut\.tflite"):
        benchmark(path, **QUICK)


def test_missing_runtime_is_a_dependency_error(tmp_path: Path, monkeypatch) -> None:
    path = write_add_tflite(tmp_path / "add.tflite")
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import fails
    with pytest.raises(DependencyError, match="pip install ai-edge-litert"):
        benchmark(path, **QUICK)


def test_per_op_on_tflite_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="per-op"):
        benchmark(write_add_tflite(tmp_path / "add.tflite"), per_op=True)


def test_runner_file_is_the_standalone_runner() -> None:
    assert RUNNER_FILE.name == "runner.py" and RUNNER_FILE.is_file()


def test_result_from_device_json() -> None:
    result = result_from_runner_json(runner_doc(), source=Source.DEVICE, target="rpi5", device="pi@10.0.0.2:22")
    assert result.source is Source.DEVICE and result.device == "pi@10.0.0.2:22" and result.target == "rpi5"
    assert result.samples_ms == (2.0, 1.0, 4.0, 3.0)
    assert result.stats is not None and result.stats.median_ms == 2.5 and result.stats.min_ms == 1.0
    assert result.latency_ms == 2.5
    assert result.conditions == Conditions(
        hostname="pi",
        cpu_model="Raspberry Pi 5 Model B Rev 1.0",
        machine="aarch64",
        os="Linux-6.6-aarch64",
        python="3.11.2",
        runtime="litert",
        runtime_version="2.3.0",
        threads=4,
        governor="ondemand",
        load_avg=(0.5, 0.25, 0.125),
        temperature_c=51.2,
        throttled="0x0",
    )
    assert result.per_op == (OpTime("conv", "Conv", 1.5),)


def test_optional_fields_may_be_null_or_absent() -> None:
    doc = runner_doc(peak_rss_mb=None)
    del doc["per_op"]
    doc["conditions"].update(governor=None, load_avg=None, temperature_c=None, throttled=None)
    result = result_from_runner_json(doc, source=Source.DEVICE, target=None, device="pi@h:22")
    assert result.peak_rss_mb is None and result.per_op == ()
    assert result.conditions is not None and result.conditions.load_avg is None


@pytest.mark.parametrize("key", ["model_sha256", "samples_ms", "conditions"])
def test_missing_key_is_a_device_error_naming_it(key: str) -> None:
    doc = runner_doc()
    del doc[key]
    with pytest.raises(DeviceError, match=key):
        result_from_runner_json(doc, source=Source.DEVICE, target=None, device="pi@h:22")


def test_missing_condition_is_a_device_error_naming_it() -> None:
    doc = runner_doc()
    del doc["conditions"]["threads"]
    with pytest.raises(DeviceError, match="threads"):
        result_from_runner_json(doc, source=Source.DEVICE, target=None, device="pi@h:22")


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("samples_ms",), [], "samples_ms"),
        (("samples_ms",), [1.0, "fast"], "samples_ms"),
        (("init_ms",), "12", "init_ms"),
        (("conditions", "threads"), 4.5, "conditions.threads"),
        (("conditions", "load_avg"), [1.0], "conditions.load_avg"),
        (("per_op",), [{"name": "conv", "op_type": "Conv"}], "per_op"),
        (("runner_version",), 2, "runner_version"),
    ],
)
def test_malformed_value_is_a_device_error_naming_it(path: tuple[str, ...], value: Any, words: str) -> None:
    doc = copy.deepcopy(runner_doc())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(DeviceError, match=words):
        result_from_runner_json(doc, source=Source.DEVICE, target=None, device="pi@h:22")


def test_not_an_object_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="not a JSON object"):
        result_from_runner_json([1, 2], source=Source.DEVICE, target=None, device="pi@h:22")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "host_error", "device_error"),
    [
        ("usage", UsageError, UsageError),
        ("model", ModelError, ModelError),
        ("dependency", DependencyError, DeviceError),
        ("internal", EdgeSdkError, DeviceError),
    ],
)
def test_error_docs_map_to_typed_errors(kind: str, host_error: type, device_error: type) -> None:
    doc = {"error": "no TFLite runtime: pip install ai-edge-litert", "kind": kind}
    with pytest.raises(host_error, match="ai-edge-litert") as raised:
        result_from_runner_json(doc, source=Source.HOST, target=None, device=None)
    assert type(raised.value) is host_error
    with pytest.raises(device_error, match=r"^pi@h:22: no TFLite runtime") as raised:
        result_from_runner_json(doc, source=Source.DEVICE, target=None, device="pi@h:22")
    assert type(raised.value) is device_error
