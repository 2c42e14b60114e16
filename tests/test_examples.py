"""examples/export_for_devices.py and examples/benchmark_fleet.py, each run as a user runs it: a
subprocess in tmp_path with a results store of its own; the fleet one against real OpenSSH servers
on 127.0.0.1 (tests/sshd.py)."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sshd import entry, write_inventory

from edge_sdk.demo import DEMO_MODEL

if TYPE_CHECKING:
    from sshd import SshKit


EXAMPLES = Path(__file__).parents[1] / "examples"


def run_example(script: str, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGE_SDK_DB": str(cwd / "results.sqlite")}
    command = [sys.executable, str(EXAMPLES / script), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr


def test_export_for_devices_builds_a_bundle_per_target_and_picks_one(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_quantizer", reason="int8 TFLite export needs ai-edge-quantizer")
    targets = ["rpi5", "sd8gen2-hexagon"]  # one TFLite and one ONNX target: both of compile's paths
    result = run_example(
        "export_for_devices.py", "--targets", ",".join(targets), "-o", "out", "--budget-ms", 1000, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["target", "file", "precision"] and lines[0].endswith("predicted ms")
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows["rpi5"][1:3] == ["demo_mnist.int8.tflite", "int8"]
    assert rows["sd8gen2-hexagon"][1:3] == ["demo_mnist.int8.onnx", "int8"]
    for fields in rows.values():
        assert float(fields[3]) > 10  # KB
        assert float(fields[4]) > 20  # SQNR dB: int8 close to the float model
        assert abs(float(fields[5])) < 2  # accuracy points lost on the demo's evaluation split
    assert f"report: {Path('out') / 'report.html'} (and report.json)" in lines
    assert any(line.startswith("best within 1000 ms: ") for line in lines), result.stdout

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [t["target"] for t in report["targets"]] == targets
    for target in report["targets"]:
        assert (tmp_path / "out" / target["artifact"]["file"]).stat().st_size == target["artifact"]["size_bytes"]
    assert (tmp_path / "out" / "report.html").is_file()


def test_export_for_devices_unknown_target_is_one_line(tmp_path: Path) -> None:
    result = run_example("export_for_devices.py", "--targets", "rpi5,rpi9", "-o", "out", cwd=tmp_path)
    assert_one_line_error(result, "unknown target 'rpi9'")
    assert result.returncode == 4  # TargetError.exit_code
    assert not (tmp_path / "out").exists()


def test_benchmark_fleet_reports_each_device_and_exits_9_on_a_failure(ssh_kit: SshKit, tmp_path: Path) -> None:
    server = ssh_kit.start()
    closed = ssh_kit.free_port()  # nothing listens there
    fleet = write_inventory(
        tmp_path / "fleet.toml",
        entry("good", server.port, key=ssh_kit.client_key),
        entry("gone", closed, key=ssh_kit.client_key),
    )
    result = run_example(
        "benchmark_fleet.py", DEMO_MODEL, "--fleet", fleet, "--known-hosts", ssh_kit.known_hosts, "--runs", 5,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 9, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["device", "target", "median", "ms", "p90", "ms"]
    good = next(line.split() for line in lines if line.startswith("good "))
    assert good[1] == "host" and 0 < float(good[2]) <= float(good[3]) and good[4] == "5"
    assert good[5] == "onnxruntime"
    failed = [line for line in lines if line.startswith("FAILED ")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED gone: {getpass.getuser()}@127.0.0.1:{closed}: ")
    assert "connection refused" in failed[0]
    assert server.work_dirs() == []  # the run cleaned up after itself


def test_benchmark_fleet_bad_inventory_is_one_line(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[device]]\nname = "a"\nhost = "h"\nuser = "u"\ntarget = "rpi9"\n')
    result = run_example("benchmark_fleet.py", DEMO_MODEL, "--fleet", fleet, cwd=tmp_path)
    assert_one_line_error(result, "device 'a': unknown target 'rpi9'")
