"""Inventory parsing, and bench_fleet against several real OpenSSH servers (tests/sshd.py)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sshd import entry, write_inventory

from edge_sdk.errors import ModelError, TargetError, UsageError
from edge_sdk.fleet import DeviceFailure, DeviceRun, bench_fleet, load_inventory

if TYPE_CHECKING:
    from sshd import SshKit


FAST = {"runs": 5, "budget_s": 0.5, "timeout_s": 60.0}


def test_inventory_is_parsed_with_defaults(tmp_path: Path):
    path = write_inventory(
        tmp_path / "fleet.toml",
        """
        [[device]]
        name = "pi"
        host = "pi4.local"
        user = "pi"
        target = "pi4"
        labels = ["arm64", "lab"]
        identity_file = "keys/id_pi"
        """,
        """
        [[device]]
        name = "x86"
        host = "10.0.0.2"
        user = "me"
        port = 2222
        target = "host"
        python = "/opt/venv/bin/python"
        """,
    )
    inventory = load_inventory(path)
    pi, x86 = inventory.devices
    assert pi.name == "pi" and pi.device.port == 22 and pi.device.target == "rpi4b"  # alias resolved
    assert pi.device.labels == ("arm64", "lab") and pi.device.python == "python3"
    assert pi.device.identity_file == str(tmp_path / "keys" / "id_pi")
    assert pi.device.address == "pi@pi4.local:22"
    assert x86.device.port == 2222 and x86.device.identity_file is None and x86.device.python == "/opt/venv/bin/python"
    assert inventory.select(["lab"]) == (pi,)
    assert inventory.select(None) == (pi, x86)
    with pytest.raises(UsageError, match=r"no device in .* has all of the labels gpu; labels there: arm64, lab"):
        inventory.select(["gpu"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('colour = "red"', r"key 'device\[0\].colour' is not a known key"),
        ("port = 70000", r"key 'device\[0\].port' is 70000"),
        ('labels = "lab"', r"key 'device\[0\].labels' must be a list"),
        ('host = ""', r"key 'device\[0\].host' is empty"),
    ],
)
def test_inventory_errors_name_the_file_and_key(tmp_path: Path, extra: str, message: str):
    base = 'name = "a"\nhost = "h"\nuser = "u"\ntarget = "host"\n'
    keys = dict(line.split(" = ", 1) for line in (base + extra).splitlines())
    path = tmp_path / "fleet.toml"
    path.write_text("[[device]]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    with pytest.raises(UsageError, match=message) as info:
        load_inventory(path)
    assert str(path) in str(info.value)


def test_inventory_rejects_unknown_targets_duplicates_and_top_level_keys(tmp_path: Path):
    device = '[[device]]\nname = "a"\nhost = "h"\nuser = "u"\ntarget = "{target}"\n'
    path = tmp_path / "fleet.toml"
    path.write_text(device.format(target="rpi9"))
    with pytest.raises(TargetError, match=r"fleet\.toml: device 'a': unknown target 'rpi9'"):
        load_inventory(path)
    path.write_text(device.format(target="host") * 2)
    with pytest.raises(UsageError, match="device name 'a' is used twice"):
        load_inventory(path)
    path.write_text("devices = []\n" + device.format(target="host"))
    with pytest.raises(UsageError, match="key 'devices' is not a known key"):
        load_inventory(path)
    path.write_text("")
    with pytest.raises(UsageError, match="key 'device' is missing"):
        load_inventory(path)


def barrier_python(kit: SshKit, name: str, other: str) -> str:
    """A device python that says it started, waits (up to 10 s) until `other` has started too, and
    notes whether it did: both notes prove the two devices ran at the same time."""
    flags = kit.root / "flags"
    flags.mkdir(exist_ok=True)
    body = (
        f"touch {flags}/{name}; i=0\n"
        f"while [ ! -e {flags}/{other} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n"
        f"[ -e {flags}/{other} ] && touch {flags}/{name}-saw-{other}\n"
        f'exec {sys.executable} "$@"\n'
    )
    return kit.script(f"python-{name}", body)


def test_fleet_runs_in_parallel_and_reports_a_dropped_device(ssh_kit: SshKit, tiny_model_path: Path):
    a, b = ssh_kit.start("a"), ssh_kit.start("b")
    dropper = ssh_kit.proxy(None)  # accepts and closes every connection
    path = write_inventory(
        ssh_kit.root / "fleet.toml",
        entry("a", a.port, key=ssh_kit.client_key, python=barrier_python(ssh_kit, "a", "b")),
        entry("b", b.port, key=ssh_kit.client_key, python=barrier_python(ssh_kit, "b", "a")),
        entry("dropped", dropper.port, key=ssh_kit.client_key),
    )
    seen: list[DeviceRun | DeviceFailure] = []
    report = bench_fleet(path, tiny_model_path, known_hosts=ssh_kit.known_hosts, on_result=seen.append, **FAST)
    assert [r.name for r in report.results] == ["a", "b"]
    assert all(r.result.stats is not None and r.result.stats.count == 5 for r in report.results)
    assert [r.result.device for r in report.results] == [f"{getpass.getuser()}@127.0.0.1:{s.port}" for s in (a, b)]
    assert [(e.name, e.device) for e in report.errors] == [("dropped", f"{getpass.getuser()}@127.0.0.1:{dropper.port}")]
    assert "connection lost" in report.errors[0].message and "after 2 attempts" in report.errors[0].message
    assert not report.ok
    assert sorted(o.name for o in seen) == ["a", "b", "dropped"]
    assert (ssh_kit.root / "flags" / "a-saw-b").exists() and (ssh_kit.root / "flags" / "b-saw-a").exists()
    assert a.work_dirs() == b.work_dirs() == []


def test_fleet_reports_a_mismatched_host_key_and_filters_by_label(ssh_kit: SshKit, tiny_model_path: Path):
    good, impostor = ssh_kit.start("good"), ssh_kit.start("impostor", trusted=False)
    algorithm, other_key = ssh_kit.keygen("expected_host_key").with_suffix(".pub").read_text().split()[:2]
    with ssh_kit.known_hosts.open("a") as handle:
        handle.write(f"[127.0.0.1]:{impostor.port} {algorithm} {other_key}\n")
    path = write_inventory(
        ssh_kit.root / "fleet.toml",
        entry("good", good.port, key=ssh_kit.client_key, labels='["lab"]'),
        entry("impostor", impostor.port, key=ssh_kit.client_key, labels='["lab"]'),
        entry("elsewhere", ssh_kit.free_port(), key=ssh_kit.client_key, labels='["home"]'),
    )
    report = bench_fleet(
        path, tiny_model_path, known_hosts=ssh_kit.known_hosts, accept_unknown_host=True, labels=["lab"], **FAST
    )
    assert [r.name for r in report.results] == ["good"]
    assert [e.name for e in report.errors] == ["impostor"]
    assert "does not match known_hosts" in report.errors[0].message
    assert "possible man-in-the-middle" in report.errors[0].message


def test_fleet_runs_one_job_at_a_time_per_device(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start()
    busy, overlap = ssh_kit.root / "busy", ssh_kit.root / "overlap"
    python = ssh_kit.script(
        "python-exclusive",
        # mkdir is atomic: it fails if the other job holds the directory
        f'mkdir {busy} 2>/dev/null || touch {overlap}\n{sys.executable} "$@"\nstatus=$?\nrmdir {busy}\nexit $status\n',
    )
    path = write_inventory(
        ssh_kit.root / "fleet.toml",
        entry("one", server.port, key=ssh_kit.client_key, python=python),
        entry("same-board", server.port, key=ssh_kit.client_key, python=python),
    )
    report = bench_fleet(path, tiny_model_path, known_hosts=ssh_kit.known_hosts, **FAST)
    assert [r.name for r in report.results] == ["one", "same-board"] and report.ok
    assert not overlap.exists()


def test_fleet_checks_its_arguments(tmp_path: Path, tiny_model_path: Path):
    path = write_inventory(tmp_path / "fleet.toml", entry("a", 22, key="k"))
    with pytest.raises(ModelError, match="not found"):
        bench_fleet(path, tmp_path / "missing.onnx")
    with pytest.raises(UsageError, match="max_parallel must be at least 1"):
        bench_fleet(path, tiny_model_path, max_parallel=0)
