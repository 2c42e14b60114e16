"""The SSH side of device runs: an asyncssh connection behind remote.py's `Shell` protocol.

Keys: the device's identity file, else the user's own (agent and ~/.ssh). Host keys are checked
against known_hosts like OpenSSH does: an unknown key only with `accept_new` (then recorded, like
`StrictHostKeyChecking=accept-new`), a changed key never.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_sdk.errors import DependencyError, DeviceError
from edge_sdk.remote import KNOWN_HOSTS, Completed, Connect, ConnectionDropped, Device, Shell

log = logging.getLogger(__name__)

_KEEPALIVE_S = 15.0  # a device that vanishes mid-run shows up as a lost connection after ~1 min


def ssh_connect(
    *, known_hosts: str | Path | None = None, accept_new: bool = False, connect_timeout_s: float = 15.0
) -> Connect:
    """A `Connect` over asyncssh with the user's keys (or the device's identity file), checking host
    keys against `known_hosts` (default ~/.ssh/known_hosts)."""
    path = Path(known_hosts if known_hosts is not None else KNOWN_HOSTS).expanduser()

    async def connect(device: Device) -> Shell:
        return await _connect(device, path, accept_new=accept_new, timeout_s=connect_timeout_s)

    return connect


async def _connect(device: Device, known_hosts: Path, *, accept_new: bool, timeout_s: float) -> Shell:
    asyncssh = _asyncssh()
    check = _HostKeyCheck(device, known_hosts, accept_new)
    keys = _client_keys(device)
    try:
        conn = await asyncssh.connect(
            device.host,
            device.port,
            username=device.user,
            client_keys=keys,
            known_hosts=check.known,
            client_factory=check.client_factory(),
            connect_timeout=timeout_s,
            keepalive_interval=_KEEPALIVE_S,
            keepalive_count_max=4,
        )
    except (OSError, asyncio.TimeoutError, asyncssh.Error, asyncio.IncompleteReadError) as exc:
        raise check.failure or _connect_error(device, exc, timeout_s) from None
    return _SshShell(conn, device.address)


def _asyncssh() -> Any:
    try:
        import asyncssh
    except ImportError:
        raise DependencyError("running on a device over SSH needs asyncssh: pip install asyncssh") from None
    return asyncssh


def _client_keys(device: Device) -> Any:
    """() lets asyncssh load the default ~/.ssh keys and use the agent, like OpenSSH."""
    if device.identity_file is None:
        return ()
    asyncssh = _asyncssh()
    path = Path(device.identity_file).expanduser()
    try:
        return asyncssh.load_keypairs([str(path)])
    except (OSError, asyncssh.KeyImportError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise DeviceError(
            f"{device.address}: identity file '{path}' cannot be used ({reason}); fix identity_file, or leave it "
            "out to use ~/.ssh and the ssh agent"
        ) from None


def _keys_tried(device: Device) -> str:
    if device.identity_file is not None:
        return f"key {device.identity_file}"
    files = sorted(str(p) for p in Path("~/.ssh").expanduser().glob("id_*") if p.suffix != ".pub")
    agent = " and the ssh agent's keys" if os.environ.get("SSH_AUTH_SOCK") else ""
    return (f"keys {', '.join(files)}" if files else "no key (none in ~/.ssh)") + agent


def _connect_error(device: Device, exc: BaseException, timeout_s: float) -> DeviceError:
    asyncssh = _asyncssh()
    address = device.address
    if isinstance(exc, asyncssh.PermissionDenied):
        return DeviceError(
            f"{address}: authentication failed with {_keys_tried(device)}; add the public key to "
            f"~{device.user}/.ssh/authorized_keys on the device (ssh-copy-id), or set identity_file"
        )
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return DeviceError(f"{address}: host key not accepted ({exc.reason}); check known_hosts")
    if isinstance(exc, asyncssh.ConnectionLost | ConnectionResetError | BrokenPipeError | asyncio.IncompleteReadError):
        return ConnectionDropped(f"{address}: connection lost while connecting ({_reason(exc)})")
    if isinstance(exc, socket.gaierror):
        return DeviceError(
            f"{address}: unreachable: cannot resolve host '{device.host}' ({exc.strerror}); check the name"
        )
    if isinstance(exc, ConnectionRefusedError):
        return DeviceError(
            f"{address}: unreachable: connection refused; is sshd running and listening on port {device.port}?"
        )
    if isinstance(exc, asyncio.TimeoutError):
        return DeviceError(
            f"{address}: unreachable: no SSH answer within {timeout_s:g} s; is the device on and on this network?"
        )
    if isinstance(exc, OSError):
        return DeviceError(f"{address}: unreachable: {exc.strerror or exc}")
    return DeviceError(f"{address}: SSH failed: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc or type(exc).__name__)


class _HostKeyCheck:
    """known_hosts for one connection. asyncssh asks `validate` only about a key that known_hosts
    does not trust; the answer tells an unknown host (maybe accepted) from a changed key (never)."""

    def __init__(self, device: Device, path: Path, accept_new: bool):
        self.device, self.path, self.accept_new = device, path, accept_new
        self.failure: DeviceError | None = None
        try:
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            self.known = _asyncssh().import_known_hosts(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DeviceError(f"known_hosts file {path} cannot be read ({exc}); fix or move it") from None

    def client_factory(self) -> Callable[[], Any]:
        import asyncssh

        check = self

        class HostKeyClient(asyncssh.SSHClient):
            def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
                return check.validate(host, addr, port, key)

        return HostKeyClient

    def validate(self, host: str, addr: str, port: int, key: Any) -> bool:
        pattern = host if port == 22 else f"[{host}]:{port}"
        where, fingerprint = self.device.address, key.get_fingerprint()
        host_keys, ca_keys, *_ = self.known.match(host, addr, None if port == 22 else port)
        if host_keys or ca_keys:
            self.failure = DeviceError(
                f"{where}: host key for {pattern} does not match known_hosts: possible man-in-the-middle; the "
                f"device offered {fingerprint}; if it was reinstalled, remove the old key with "
                f"ssh-keygen -R '{pattern}' -f {self.path} and connect again"
            )
            return False
        if not self.accept_new:
            self.failure = DeviceError(
                f"{where}: host key for {pattern} is unknown (not in {self.path}; the device offered {fingerprint}); "
                f"add it with ssh-keyscan -p {port} {host} >> {self.path} after checking the fingerprint, "
                "or pass --accept-new-host-key to accept and record it"
            )
            return False
        return self._record(pattern, key)

    def _record(self, pattern: str, key: Any) -> bool:
        algorithm, data = key.export_public_key("openssh").decode().split()[:2]
        line = f"{pattern} {algorithm} {data}\n"
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            old = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(("\n" if old and not old.endswith("\n") else "") + line)
        except OSError as exc:
            self.failure = DeviceError(
                f"{self.device.address}: cannot record its host key in {self.path} ({exc.strerror})"
            )
            return False
        log.info("recorded the host key of %s in %s", pattern, self.path)
        return True


class _SshShell:
    def __init__(self, conn: Any, address: str):
        self._conn, self._address = conn, address

    async def run(self, command: str, *, stdin: bytes = b"", timeout_s: float | None = None) -> Completed:
        asyncssh = _asyncssh()
        try:
            done = await self._conn.run(command, input=stdin, encoding=None, timeout=timeout_s)
        except asyncssh.TimeoutError:
            raise asyncio.TimeoutError from None
        except (asyncssh.Error, OSError, asyncio.IncompleteReadError) as exc:
            raise ConnectionDropped(f"{self._address}: connection lost ({_reason(exc)})") from None
        if done.exit_status is None and done.exit_signal is None:  # the channel closed with the connection
            raise ConnectionDropped(f"{self._address}: connection lost before the command ended")
        stdout, stderr = (x.decode("utf-8", "replace") if x else "" for x in (done.stdout, done.stderr))
        return Completed(done.exit_status if done.exit_signal is None else None, stdout, stderr)

    async def close(self) -> None:
        self._conn.close()
        await self._conn.wait_closed()
