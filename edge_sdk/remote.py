"""Run the device runner on one device over SSH.

`bench_device` copies runner.py and the model into a fresh `mktemp -d` directory on the device, runs
`python3 runner.py MODEL ...` there under a timeout, reads the one JSON document it prints and removes
the directory again, also after a failure (the remote shell removes it itself if the connection
drops; a retry removes what an earlier attempt left). Only a dropped connection is retried.

Every failure is one `DeviceError` naming the device (`user@host:port`) and the cause. The SSH
connection sits behind the small `Shell` protocol; `edge_sdk.ssh.ssh_connect` makes the asyncssh one, which checks
the host key against known_hosts like OpenSSH does (unknown keys only with `accept_new`, recorded
like `StrictHostKeyChecking=accept-new`; a changed key never).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_sdk.benchmark import RUNNER_FILE, result_from_runner_json
from edge_sdk.errors import DeviceError, EdgeSdkError, ModelError, UsageError
from edge_sdk.measurement import BenchmarkResult, Source

log = logging.getLogger(__name__)

KNOWN_HOSTS = Path("~/.ssh/known_hosts")
_GRACE_S = 30.0  # the model's upload, and after the remote `timeout` should have fired
_RETRY_DELAY_S = 0.5
_TIMEOUT_EXITS = (124, 137)  # GNU/busybox `timeout`: TERM sent, or KILL after -k
_COPY_FAILED = 96  # the run command's own exit code when the model cannot be written (disk full)


@dataclass(frozen=True)
class Device:
    host: str
    user: str
    port: int = 22
    target: str | None = None  # a target id (see edge_sdk.targets)
    labels: tuple[str, ...] = ()
    identity_file: str | None = None  # None: the default ~/.ssh keys and the ssh agent
    python: str = "python3"

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class RunSettings:
    """What the runner is asked to do; None leaves the runner's own default."""

    threads: int | None = None
    runs: int | None = None
    budget_s: float | None = None
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("threads", "runs", "budget_s", "timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"{name} must be greater than 0, got {value}")

    def runner_args(self) -> list[str]:
        flags = (("--threads", self.threads), ("--runs", self.runs), ("--budget-s", self.budget_s))
        return [str(part) for flag, value in flags if value is not None for part in (flag, value)]


@dataclass(frozen=True)
class Completed:
    exit_code: int | None  # None: ended by a signal
    stdout: str
    stderr: str


class Shell(Protocol):
    """One open connection to a device. `run` raises `ConnectionDropped` if the connection is lost
    and `asyncio.TimeoutError` after `timeout_s`; any exit code is returned, not raised."""

    async def run(self, command: str, *, stdin: bytes = b"", timeout_s: float | None = None) -> Completed: ...

    async def close(self) -> None: ...


Connect = Callable[[Device], Awaitable[Shell]]


class ConnectionDropped(DeviceError):
    """The connection was made and then lost (reset, closed by the peer, keepalive timeout)."""


@dataclass(frozen=True)
class _Job:
    device: Device
    runner: bytes
    model: bytes
    model_name: str
    settings: RunSettings


def bench_device(
    device: Device,
    model_path: str | Path,
    *,
    threads: int | None = None,
    runs: int | None = None,
    budget_s: float | None = None,
    timeout_s: float = 300.0,
    known_hosts: str | Path | None = None,
    accept_unknown_host: bool = False,
    retries: int = 1,
) -> BenchmarkResult:
    """Benchmark `model_path` on `device` over SSH (blocking; see `bench_device_async`)."""
    settings = RunSettings(threads, runs, budget_s, timeout_s)
    from edge_sdk.ssh import ssh_connect  # the asyncssh side imports this module's types

    connect = ssh_connect(known_hosts=known_hosts, accept_new=accept_unknown_host)
    return asyncio.run(bench_device_async(device, model_path, settings, connect, retries=retries))


async def bench_device_async(
    device: Device,
    model_path: str | Path,
    settings: RunSettings,
    connect: Connect,
    *,
    retries: int = 1,
) -> BenchmarkResult:
    """`bench_device` inside a running event loop, with the connection made by `connect`."""
    if retries < 0:
        raise UsageError(f"retries must be 0 or more, got {retries}")
    model = Path(model_path)
    job = _Job(
        device,
        _read(RUNNER_FILE, DeviceError, "reinstall edge-sdk"),
        _read(model, ModelError, "check the path"),
        model.name,
        settings,
    )
    doc = await _run_with_retries(job, connect, retries)
    return result_from_runner_json(doc, source=Source.DEVICE, target=device.target, device=device.address)


def _read(path: Path, error: type[EdgeSdkError], fix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"'{path}' cannot be read ({exc.strerror}); {fix}") from None


async def _run_with_retries(job: _Job, connect: Connect, retries: int) -> dict[str, Any]:
    leftovers: list[str] = []  # work directories a dropped attempt could not remove
    for attempt in range(retries + 1):
        try:
            return await _attempt(job, connect, leftovers)
        except ConnectionDropped as exc:
            if attempt == retries:
                tries = f" (gave up after {attempt + 1} attempts)" if attempt else ""
                raise ConnectionDropped(f"{exc}{tries}") from None
            log.info("%s; trying again", exc)
            await asyncio.sleep(_RETRY_DELAY_S)
    raise AssertionError("unreachable")


async def _attempt(job: _Job, connect: Connect, leftovers: list[str]) -> dict[str, Any]:
    shell = await connect(job.device)
    try:
        await _remove(shell, leftovers)
        workdir = await _make_workdir(shell, job)
        leftovers.append(workdir)
        try:
            done = await shell.run(
                _run_command(job, workdir), stdin=job.model, timeout_s=job.settings.timeout_s + _GRACE_S
            )
        except asyncio.TimeoutError:
            raise _timeout(job) from None
        leftovers.remove(workdir)  # the command's shell removed it when it exited
        return _runner_output(done, job)
    finally:
        await _remove(shell, leftovers)
        await shell.close()


async def _make_workdir(shell: Shell, job: _Job) -> str:
    """A fresh directory holding runner.py: one round trip, as each command starts a login shell."""
    done = await shell.run('d=$(mktemp -d) && cat > "$d/runner.py" && printf %s "$d"', stdin=job.runner)
    workdir = done.stdout.strip().rsplit("\n", 1)[-1]  # after anything a login script printed
    if done.exit_code != 0 or not workdir.startswith("/"):
        raise DeviceError(
            f"{job.device.address}: cannot create a temporary directory (mktemp -d) and copy runner.py into it: "
            f"{_last_line(done)}"
        )
    return workdir


async def _remove(shell: Shell, workdirs: list[str]) -> None:
    """Best effort: a failure here must not hide the error being raised."""
    if not workdirs:
        return
    try:
        done = await shell.run("rm -rf -- " + " ".join(shlex.quote(w) for w in workdirs), timeout_s=_GRACE_S)
    except (DeviceError, asyncio.TimeoutError) as exc:
        log.warning("could not remove %s: %s", ", ".join(workdirs), exc)
        return
    if done.exit_code == 0:
        workdirs.clear()


def _run_command(job: _Job, workdir: str) -> str:
    """Write the model from stdin, then run. The shell removes the directory when it exits, also
    when a dropped connection ends it; `timeout` (if the device has it) kills a runaway runner."""
    argv = [job.device.python, "runner.py", job.model_name, *job.settings.runner_args()]
    runner = " ".join(shlex.quote(a) for a in argv)
    model = shlex.quote(job.model_name)
    return (
        f'd={shlex.quote(workdir)}; cd "$d" || exit 1; trap \'rm -rf -- "$d"\' EXIT HUP TERM; '
        f"cat > {model} || exit {_COPY_FAILED}; "
        f"if command -v timeout >/dev/null 2>&1; then timeout -k 5 {math.ceil(job.settings.timeout_s)} {runner}; "
        f"else {runner}; fi"
    )


def _runner_output(done: Completed, job: _Job) -> dict[str, Any]:
    address = job.device.address
    doc = _json_doc(done.stdout)
    if done.exit_code == 0 and doc is not None and "error" not in doc:
        return doc
    if doc is not None and isinstance(doc.get("error"), str):
        raise DeviceError(f"{address}: {doc['error']}")
    if done.exit_code in _TIMEOUT_EXITS:
        raise _timeout(job)
    if done.exit_code == _COPY_FAILED:
        raise DeviceError(f"{address}: cannot copy the model to the device: {_last_line(done)}")
    if done.exit_code == 127:
        raise DeviceError(
            f"{address}: '{job.device.python}' not found on the device; install Python 3 or set python = ... "
            "for this device"
        )
    raise DeviceError(f"{address}: the runner failed (exit code {done.exit_code}): {_last_line(done)}")


def _timeout(job: _Job) -> DeviceError:
    return DeviceError(
        f"{job.device.address}: timeout after {job.settings.timeout_s:g} s; raise the timeout or lower runs/budget"
    )


def _json_doc(stdout: str) -> dict[str, Any] | None:
    text = stdout.strip()
    for candidate in (text, text.rsplit("\n", 1)[-1]):
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        return doc if isinstance(doc, dict) else None
    return None


def _last_line(done: Completed) -> str:
    lines = [line for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


# --- the asyncssh Shell ---------------------------------------------------------------------------
