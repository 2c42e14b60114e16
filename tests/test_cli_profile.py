"""profile, bench and results as a user runs them: one JSON document with --json, one error line
otherwise, and a results store that keeps every run."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sshd import SshKit


FAST = ["--runs", "5", "--budget-s", "0.5"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_sdk.cli", *args], capture_output=True, text=True, timeout=300)


def one_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_profile_measures_stores_and_results_list_show_export(tmp_path: Path, tiny_model_path: Path):
    db = str(tmp_path / "runs.sqlite")
    done = run("profile", str(tiny_model_path), "--per-op", "--threads", "1", *FAST, "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    (stored,) = json.loads(done.stdout)["runs"]
    assert stored["source"] == "host" and stored["stats"]["count"] == 5
    assert stored["conditions"]["threads"] == 1 and stored["per_op"]
    listed = json.loads(run("results", "list", "--db", db, "--json").stdout)["runs"]
    assert [r["id"] for r in listed] == [stored["id"]]
    shown = json.loads(run("results", "show", str(stored["id"]), "--db", db, "--json").stdout)
    assert shown["samples_ms"] == stored["samples_ms"]
    exported = run(
        "results", "export", "--csv", str(tmp_path / "r.csv"), "--json-file", str(tmp_path / "r.json"), "--db", db
    )
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "r.csv").read_text().count("\n") == 2
    assert json.loads((tmp_path / "r.json").read_text())[0]["id"] == stored["id"]
    text = run("profile", str(tiny_model_path), *FAST, "--db", db)
    assert "median" in text.stdout and "stored as run(s) 2" in text.stdout


def test_profile_of_a_corrupt_model_is_one_line_and_stores_nothing(tmp_path: Path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\0" * 40)
    db = tmp_path / "runs.sqlite"
    one_error(run("profile", str(bad), *FAST, "--db", str(db)), 3, "bad.tflite")
    listed = run("results", "list", "--db", str(db), "--json")
    assert json.loads(listed.stdout)["runs"] == []


def test_a_store_that_is_not_a_store_is_left_alone(tmp_path: Path, tiny_model_path: Path):
    db = tmp_path / "notes.sqlite"
    db.write_text("my notes\n")
    one_error(run("profile", str(tiny_model_path), *FAST, "--db", str(db)), 10, "not an edge-sdk results store")
    assert db.read_text() == "my notes\n"


def test_results_show_unknown_id(tmp_path: Path):
    one_error(run("results", "show", "42", "--db", str(tmp_path / "r.sqlite")), 2, "42")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "exactly one of --device"),
        (["--device", "no-at-sign"], "is not USER@HOST[:PORT]"),
    ],
)
def test_bench_usage_errors(tiny_model_path: Path, args: list[str], fragment: str):
    one_error(run("bench", str(tiny_model_path), *args), 2, fragment)


def test_bench_on_a_device_over_ssh_and_errors(ssh_kit: SshKit, tiny_model_path: Path, tmp_path: Path):
    server = ssh_kit.start()
    db = str(tmp_path / "runs.sqlite")
    ssh = ["--identity", str(ssh_kit.client_key), "--known-hosts", str(ssh_kit.known_hosts), "--python", sys.executable]
    device = f"{ssh_kit.device(server.port).user}@127.0.0.1:{server.port}"
    done = run("bench", str(tiny_model_path), "--device", device, "--target", "rpi5", *ssh, *FAST, "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    (stored,) = json.loads(done.stdout)["runs"]
    assert stored["source"] == "device" and stored["target"] == "rpi5" and stored["device"] == device
    untrusted = ssh_kit.start("untrusted", trusted=False)
    refused = run("bench", str(tiny_model_path), "--device", f"root@127.0.0.1:{untrusted.port}", *ssh, *FAST)
    one_error(refused, 9, "unknown", "--accept-new-host-key")
    closed = run("bench", str(tiny_model_path), "--device", f"root@127.0.0.1:{ssh_kit.free_port()}", *ssh, *FAST)
    one_error(closed, 9, "127.0.0.1")


def test_profile_calibrate_then_predict_on_a_pi_from_the_same_store(tmp_path: Path, tiny_model_path: Path):
    from edge_sdk.zoo import CALIBRATION

    db = str(tmp_path / "runs.sqlite")
    calibrated = run("profile", "--calibrate", "--runs", "3", "--budget-s", "0.02", "--db", db)
    assert calibrated.returncode == 0, calibrated.stderr
    assert f"of {len(CALIBRATION)} models in the results store" in calibrated.stdout
    done = run("profile", str(tiny_model_path), "--target", "rpi4b", "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    (predicted,) = json.loads(done.stdout)["runs"]
    p = predicted["prediction"]
    assert predicted["target"] == "rpi4b" and predicted["source"] == "predicted" and p["fit_models"] > 1
    assert p["low_ms"] <= p["latency_ms"] <= p["high_ms"]


def test_profile_needs_a_model_or_calibrate():
    one_error(run("profile"), 2, "needs a MODEL", "--calibrate")


def test_a_far_fetched_prediction_renders_its_warning():
    from rich.console import Console

    from edge_sdk.measurement import BenchmarkResult, Prediction, Source
    from edge_sdk.render_profile import latency_table

    warning = "no measured model for rpi5/onnxruntime/4t/fp32: ...; calibrate this host (edge-sdk profile --calibrate)"
    predicted = BenchmarkResult(
        Source.PREDICTED, "m", "sha", "rpi5", None, None, None, None, (), None, None, "0.1.0", "",
        prediction=Prediction(1.0, 0.1, 10.0, "roofline-fit of host/onnxruntime/2t/fp32", 11),
        extra={"runtime": "onnxruntime", "warning": warning},
    )  # fmt: skip
    console = Console(record=True, width=200)
    console.print(latency_table([predicted, replace(predicted, target="rpi4b", extra={})], "m"))
    text = console.export_text()
    assert text.count("warning:") == 1 and "warning: rpi5: no measured model" in text
    assert "edge-sdk profile --calibrate" in text and "onnxruntime: roofline-fit" in text
