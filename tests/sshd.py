"""Real OpenSSH servers for the remote, fleet, compile and example tests: a pytest plugin, loaded once
by tests/conftest.py (tests/ is on sys.path, as for `from conftest import ...`), plus the fleet
inventories (`write_inventory`, `entry`) that point at them.

Each server is `/usr/sbin/sshd -D -e` on 127.0.0.1 with its own ed25519 host key, one authorized client
key and `TMPDIR` set for its sessions to a directory of the test's tmp_path, so a test can see what
the remote side left behind. `DropProxy` is a TCP proxy in front of a server that cuts connections.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_sdk.remote import Device

SSHD = Path("/usr/sbin/sshd")
# As root, sshd's privilege separation needs this directory; without systemd nobody creates it.
PRIVSEP_DIR = Path("/run/sshd")

SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
SetEnv TMPDIR={remote_tmp}
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel ERROR
"""


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen | None = None, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


@dataclass
class SshServer:
    port: int
    host_public_key: str  # "ssh-ed25519 AAAA..."
    remote_tmp: Path  # TMPDIR of its sessions
    log: Path
    proc: subprocess.Popen

    def known_hosts_line(self, port: int | None = None) -> str:
        return f"[127.0.0.1]:{port or self.port} {self.host_public_key}\n"

    def work_dirs(self) -> list[str]:
        """What runs left in its TMPDIR (login scripts may leave plain files there)."""
        return sorted(p.name for p in self.remote_tmp.iterdir() if p.is_dir())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


@dataclass
class SshKit:
    """Client keys, a known_hosts file and a factory of servers, all under one tmp directory."""

    root: Path
    client_key: Path
    known_hosts: Path
    servers: list[SshServer]
    proxies: list[DropProxy]

    def start(self, name: str = "dev", *, trusted: bool = True) -> SshServer:
        """A new sshd; `trusted` writes its host key into `known_hosts`."""
        home = self.root / name
        home.mkdir()
        host_key = keygen(home / "host_key")
        remote_tmp = home / "remote-tmp"
        remote_tmp.mkdir()
        authorized = home / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        port = free_port()
        config = home / "sshd_config"
        config.write_text(
            SSHD_CONFIG.format(
                port=port,
                host_key=host_key,
                pid_file=home / "sshd.pid",
                authorized_keys=authorized,
                remote_tmp=remote_tmp,
            )
        )
        log = home / "sshd.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        server = SshServer(port, public, remote_tmp, log, proc)
        self.servers.append(server)
        try:
            wait_listening(port, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {log.read_text()}") from None
        if trusted:
            with self.known_hosts.open("a") as f:
                f.write(server.known_hosts_line())
        return server

    def keygen(self, name: str) -> Path:
        return keygen(self.root / name)

    def script(self, name: str, body: str) -> str:
        return write_script(self.root / name, body)

    def no_runtime_python(self) -> str:
        return no_runtime_python(self.root)

    @staticmethod
    def free_port() -> int:
        return free_port()

    def proxy(self, target_port: int | None, **kw) -> DropProxy:
        proxy = DropProxy(target_port, **kw)
        self.proxies.append(proxy)
        return proxy

    def device(self, port: int, *, python: str = sys.executable, key: Path | None = None, **kw) -> Device:
        return Device(
            host="127.0.0.1",
            user=getpass.getuser(),
            port=port,
            target="host",
            identity_file=str(key or self.client_key),
            python=python,
            **kw,
        )


@pytest.fixture
def ssh_kit(tmp_path: Path) -> Iterator[SshKit]:
    if not SSHD.exists():
        pytest.skip("install openssh-server (/usr/sbin/sshd is missing)")
    pytest.importorskip("asyncssh", reason="install asyncssh (edge_sdk.remote's SSH client)")
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
    root = tmp_path / "ssh"
    root.mkdir()
    kit = SshKit(root, keygen(root / "client_key"), root / "known_hosts", [], [])
    kit.known_hosts.touch()
    try:
        yield kit
    finally:
        for server in kit.servers:
            server.stop()
        for proxy in kit.proxies:
            proxy.close()


class DropProxy:
    """A TCP proxy to 127.0.0.1:`target_port` that cuts its first `drop_first` connections:
    at once (a server that accepts and closes), or, with `cut_when`, as soon as that file exists
    (a connection lost mid-run). Later connections are forwarded untouched."""

    def __init__(self, target_port: int | None, *, drop_first: int = 1_000_000, cut_when: Path | None = None):
        self.target_port, self.drop_first, self.cut_when = target_port, drop_first, cut_when
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            drop = self.accepted <= self.drop_first
            if drop and (self.cut_when is None or self.target_port is None):
                client.close()
                continue
            assert self.target_port is not None
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, drop), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket, cut: bool) -> None:
        pairs = [(client, upstream), (upstream, client)]
        threads = [threading.Thread(target=_copy, args=pair, daemon=True) for pair in pairs]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            if cut and self.cut_when is not None and self.cut_when.exists():
                break
            time.sleep(0.02)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def write_script(path: Path, body: str) -> str:
    """An executable shell script standing in for the device's python."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def no_runtime_python(root: Path) -> str:
    """The test machine's python with every inference runtime shadowed by a module raising ImportError."""
    shadow = root / "shadow"
    for name in ("onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorflow"):
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(f"raise ImportError('{name} is shadowed by the test')\n")
    return write_script(root / "python-no-runtime", f'PYTHONPATH={shadow} exec {sys.executable} "$@"\n')


def write_inventory(path: Path, *devices: str) -> Path:
    """A fleet inventory file of `entry` tables."""
    path.write_text("\n".join(textwrap.dedent(d) for d in devices))
    return path


def entry(name: str, port: int, *, key: Path | str, python: str = sys.executable, labels: str = "[]") -> str:
    """One [[device]] table for a server started here (target "host")."""
    return f"""
        [[device]]
        name = "{name}"
        host = "127.0.0.1"
        user = "{getpass.getuser()}"
        port = {port}
        target = "host"
        labels = {labels}
        identity_file = "{key}"
        python = "{python}"
    """
