"""bench_device against real OpenSSH servers on 127.0.0.1 (tests/sshd.py), with the real runner and
the test machine's python (which has onnxruntime) as the device's python."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edge_sdk.errors import DeviceError, ModelError
from edge_sdk.measurement import Source
from edge_sdk.remote import ConnectionDropped, Device, bench_device
from edge_sdk.ssh import ssh_connect

if TYPE_CHECKING:
    from sshd import SshKit


FAST = {"runs": 5, "budget_s": 0.5, "timeout_s": 60.0}


def test_bench_device_runs_the_runner_and_cleans_up(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start()
    device = ssh_kit.device(server.port)
    result = bench_device(device, tiny_model_path, threads=1, known_hosts=ssh_kit.known_hosts, **FAST)
    assert result.source is Source.DEVICE
    assert result.device == f"{device.user}@127.0.0.1:{server.port}"
    assert result.target == "host"
    assert result.model_name == "tiny.onnx"
    assert result.model_sha256 == hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    assert len(result.samples_ms) == 5 and result.stats is not None and result.stats.count == 5
    assert all(s > 0 for s in result.samples_ms)
    assert result.conditions is not None and result.conditions.runtime == "onnxruntime"
    assert result.conditions.threads == 1
    assert server.work_dirs() == []


def test_unknown_host_key_is_refused_without_the_flag(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start(trusted=False)
    with pytest.raises(DeviceError, match=r"host key for .* is unknown") as info:
        bench_device(ssh_kit.device(server.port), tiny_model_path, known_hosts=ssh_kit.known_hosts, **FAST)
    message = str(info.value)
    assert f"127.0.0.1:{server.port}" in message
    assert "ssh-keyscan" in message and "--accept-new-host-key" in message
    assert ssh_kit.known_hosts.read_text() == ""


def test_unknown_host_key_is_accepted_and_recorded_with_the_flag(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start(trusted=False)
    device = ssh_kit.device(server.port)
    result = bench_device(device, tiny_model_path, known_hosts=ssh_kit.known_hosts, accept_unknown_host=True, **FAST)
    assert result.stats is not None
    assert ssh_kit.known_hosts.read_text() == server.known_hosts_line()
    # recorded: a second connection is accepted without the flag, and nothing more is written
    assert asyncio.run(_run(ssh_connect(known_hosts=ssh_kit.known_hosts), device, "echo hi")) == "hi\n"
    assert ssh_kit.known_hosts.read_text() == server.known_hosts_line()


async def _run(connect, device: Device, command: str) -> str:
    shell = await connect(device)
    try:
        return (await shell.run(command)).stdout
    finally:
        await shell.close()


def test_mismatched_host_key_is_refused_even_with_the_flag_and_not_retried(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start(trusted=False)
    counter = ssh_kit.proxy(server.port, drop_first=0)
    algorithm, other_key = ssh_kit.keygen("other_host_key").with_suffix(".pub").read_text().split()[:2]
    ssh_kit.known_hosts.write_text(
        "".join(f"[127.0.0.1]:{p} {algorithm} {other_key}\n" for p in (server.port, counter.port))
    )
    before = ssh_kit.known_hosts.read_text()
    for port in (server.port, counter.port):
        with pytest.raises(DeviceError, match="does not match known_hosts: possible man-in-the-middle") as info:
            bench_device(
                ssh_kit.device(port),
                tiny_model_path,
                known_hosts=ssh_kit.known_hosts,
                accept_unknown_host=True,
                retries=3,
                **FAST,
            )
        assert f"@127.0.0.1:{port}" in str(info.value) and "ssh-keygen -R" in str(info.value)
    assert counter.accepted == 1
    assert ssh_kit.known_hosts.read_text() == before


def test_wrong_key_is_an_authentication_failure_naming_the_key(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start()
    wrong = ssh_kit.keygen("wrong_key")
    counter = ssh_kit.proxy(server.port, drop_first=0)
    ssh_kit.known_hosts.write_text(server.known_hosts_line(counter.port))
    with pytest.raises(DeviceError, match="authentication failed") as info:
        bench_device(ssh_kit.device(counter.port, key=wrong), tiny_model_path, known_hosts=ssh_kit.known_hosts, **FAST)
    assert str(wrong) in str(info.value) and f"127.0.0.1:{counter.port}" in str(info.value)
    assert counter.accepted == 1  # not retried


def test_missing_identity_file_is_named(ssh_kit: SshKit, tiny_model_path: Path):
    missing = ssh_kit.root / "no_such_key"
    with pytest.raises(DeviceError, match=r"identity file .*no_such_key.* cannot be used"):
        bench_device(ssh_kit.device(ssh_kit.free_port(), key=missing), tiny_model_path, known_hosts=ssh_kit.known_hosts)


def test_closed_port_is_unreachable(ssh_kit: SshKit, tiny_model_path: Path):
    port = ssh_kit.free_port()
    with pytest.raises(DeviceError, match=f"@127.0.0.1:{port}: unreachable: connection refused"):
        bench_device(ssh_kit.device(port), tiny_model_path, known_hosts=ssh_kit.known_hosts, **FAST)


def test_silent_port_is_unreachable_after_the_connect_timeout(ssh_kit: SshKit):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never speaks SSH
        port = silent.getsockname()[1]
        connect = ssh_connect(known_hosts=ssh_kit.known_hosts, connect_timeout_s=0.5)
        with pytest.raises(DeviceError, match=f"@127.0.0.1:{port}: unreachable: no SSH answer within 0.5 s"):
            asyncio.run(_run(connect, ssh_kit.device(port), "true"))


def test_missing_model_is_a_model_error(ssh_kit: SshKit, tmp_path: Path):
    with pytest.raises(ModelError, match=r"missing\.onnx"):
        bench_device(ssh_kit.device(ssh_kit.free_port()), tmp_path / "missing.onnx", known_hosts=ssh_kit.known_hosts)


def test_runner_that_outlives_the_timeout_is_stopped_and_cleaned_up(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start()
    sleeper = ssh_kit.script("python-sleeps", "exec sleep 30\n")
    with pytest.raises(DeviceError, match=r"timeout after 1 s"):
        bench_device(
            ssh_kit.device(server.port, python=sleeper),
            tiny_model_path,
            known_hosts=ssh_kit.known_hosts,
            runs=5,
            timeout_s=1,
        )
    assert server.work_dirs() == []


def test_device_without_a_runtime_says_what_to_install(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start()
    python = ssh_kit.no_runtime_python()
    with pytest.raises(DeviceError, match="pip install onnxruntime") as info:
        bench_device(
            ssh_kit.device(server.port, python=python), tiny_model_path, known_hosts=ssh_kit.known_hosts, **FAST
        )
    assert str(info.value).startswith(f"{ssh_kit.device(server.port).address}: no ONNX Runtime")
    assert server.work_dirs() == []


def test_missing_python_is_named(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start()
    with pytest.raises(DeviceError, match="'/nonexistent/python3' not found on the device"):
        bench_device(
            ssh_kit.device(server.port, python="/nonexistent/python3"),
            tiny_model_path,
            known_hosts=ssh_kit.known_hosts,
            **FAST,
        )
    assert server.work_dirs() == []


def test_connection_dropped_mid_run_is_retried(ssh_kit: SshKit, tiny_model_path: Path):
    server = ssh_kit.start()
    started = ssh_kit.root / "first-run-started"
    # the first run marks that it started and stalls; the proxy then cuts that connection
    python = ssh_kit.script(
        "python-stalls-once",
        f'if [ ! -e {started} ]; then touch {started}; sleep 3; fi\nexec {sys.executable} "$@"\n',
    )
    proxy = ssh_kit.proxy(server.port, drop_first=1, cut_when=started)
    ssh_kit.known_hosts.write_text(server.known_hosts_line(proxy.port))
    device = ssh_kit.device(proxy.port, python=python)
    result = bench_device(device, tiny_model_path, known_hosts=ssh_kit.known_hosts, retries=1, **FAST)
    assert result.stats is not None and result.device == device.address
    assert proxy.accepted == 2
    assert server.work_dirs() == []  # the retry removed what the dropped attempt left


def test_connection_dropped_every_time_is_reported_after_the_retries(ssh_kit: SshKit, tiny_model_path: Path):
    proxy = ssh_kit.proxy(None)  # accepts and closes: a server that drops every connection
    with pytest.raises(ConnectionDropped, match=f"@127.0.0.1:{proxy.port}: connection lost") as info:
        bench_device(ssh_kit.device(proxy.port), tiny_model_path, known_hosts=ssh_kit.known_hosts, retries=2, **FAST)
    assert "after 3 attempts" in str(info.value)
    assert proxy.accepted == 3
