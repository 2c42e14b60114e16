"""Benchmark one model on every device of an inventory file, in parallel.

The inventory is TOML, one `[[device]]` table per device:

    [[device]]
    name = "pi4-lab"                     # unique in the file
    host = "192.168.1.40"
    user = "pi"
    port = 22                            # optional, default 22
    target = "rpi4b"                     # a target id or alias: edge-sdk targets list
    labels = ["pi", "arm64"]             # optional
    identity_file = "~/.ssh/id_ed25519"  # optional; relative to the inventory file
    python = "python3"                   # optional: the device's Python with a runtime installed

Devices run at the same time, each at most one job at a time (a lock per user@host:port); a device
that fails is reported with its error and does not stop the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import DeviceError, ModelError, TargetError, UsageError
from edge_sdk.measurement import BenchmarkResult
from edge_sdk.remote import Connect, Device, RunSettings, bench_device_async
from edge_sdk.ssh import ssh_connect
from edge_sdk.targets import load_target
from edge_sdk.tomltable import Table, read_toml

_HINT = "the inventory format in edge_sdk/fleet.py"


@dataclass(frozen=True)
class FleetDevice:
    name: str
    device: Device


@dataclass(frozen=True)
class Inventory:
    path: Path
    devices: tuple[FleetDevice, ...]

    def select(self, labels: Sequence[str] | None = None) -> tuple[FleetDevice, ...]:
        """The devices that carry every one of `labels` (all devices for None)."""
        if not labels:
            return self.devices
        chosen = tuple(d for d in self.devices if set(labels) <= set(d.device.labels))
        if not chosen:
            known = sorted({label for d in self.devices for label in d.device.labels})
            raise UsageError(
                f"no device in {self.path} has all of the labels {', '.join(labels)}; "
                f"labels there: {', '.join(known) or 'none'}"
            )
        return chosen


@dataclass(frozen=True)
class DeviceRun:
    name: str
    device: str  # user@host:port
    result: BenchmarkResult


@dataclass(frozen=True)
class DeviceFailure:
    name: str
    device: str  # user@host:port
    message: str


@dataclass(frozen=True)
class FleetReport:
    results: tuple[DeviceRun, ...]  # in inventory order
    errors: tuple[DeviceFailure, ...]  # in inventory order

    @property
    def ok(self) -> bool:
        return not self.errors


OnResult = Callable[[DeviceRun | DeviceFailure], None]


def load_inventory(path: str | Path, targets_dirs: Sequence[str | Path] = ()) -> Inventory:
    """Parse and check an inventory file; an unknown key, a duplicate name or an unknown target
    is an error naming the file."""
    path = Path(path)
    top = Table(read_toml(path, UsageError), "", path, error=UsageError, hint=_HINT)
    tables = top.get("device", list, required=True)
    top.done()
    devices = tuple(
        _device(Table(t, f"device[{i}]", path, error=UsageError, hint=_HINT), targets_dirs)
        for i, t in enumerate(tables)
    )
    names = [d.name for d in devices]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"{path}: device name '{name}' is used twice; names must be unique; see {_HINT}")
    if not devices:
        raise UsageError(f"{path}: no [[device]] tables; see {_HINT}")
    return Inventory(path, devices)


def _device(table: Table, targets_dirs: Sequence[str | Path]) -> FleetDevice:
    name = _text(table, "name")
    host, user = _text(table, "host"), _text(table, "user")
    port = table.get("port", int, 22)
    if not 0 < port < 65536:
        raise table.fail("port", f"is {port}, expected 1-65535")
    target = _text(table, "target")
    try:
        target = load_target(target, targets_dirs).id
    except TargetError as exc:
        raise TargetError(f"{table.path}: device '{name}': {exc}") from None
    identity = table.get("identity_file", str)
    if identity is not None:
        identity = str(table.path.parent / Path(identity).expanduser())
    device = Device(
        host=host,
        user=user,
        port=port,
        target=target,
        labels=table.get_list("labels", str),
        identity_file=identity,
        python=table.get("python", str, "python3"),
    )
    table.done()
    return FleetDevice(name, device)


def _text(table: Table, key: str) -> str:
    value: str = table.get(key, str, required=True)
    if not value.strip():
        raise table.fail(key, "is empty")
    return value


def bench_fleet(
    inventory: Inventory | str | Path,
    model_path: str | Path,
    *,
    threads: int | None = None,
    runs: int | None = None,
    budget_s: float | None = None,
    timeout_s: float = 300.0,
    known_hosts: str | Path | None = None,
    accept_unknown_host: bool = False,
    retries: int = 1,
    labels: Sequence[str] | None = None,
    max_parallel: int | None = None,
    on_result: OnResult | None = None,
) -> FleetReport:
    """Benchmark `model_path` on the inventory's devices (those with all `labels`), in parallel
    (at most `max_parallel` at once). `on_result` sees each device's outcome as it arrives."""
    if not isinstance(inventory, Inventory):
        inventory = load_inventory(inventory)
    settings = RunSettings(threads, runs, budget_s, timeout_s)
    connect = ssh_connect(known_hosts=known_hosts, accept_new=accept_unknown_host)
    devices = inventory.select(labels)
    return asyncio.run(
        bench_fleet_async(
            devices, model_path, settings, connect, retries=retries, max_parallel=max_parallel, on_result=on_result
        )
    )


async def bench_fleet_async(
    devices: Sequence[FleetDevice],
    model_path: str | Path,
    settings: RunSettings,
    connect: Connect,
    *,
    retries: int = 1,
    max_parallel: int | None = None,
    on_result: OnResult | None = None,
) -> FleetReport:
    """`bench_fleet` inside a running event loop, with the connections made by `connect`."""
    if max_parallel is not None and max_parallel < 1:
        raise UsageError(f"max_parallel must be at least 1, got {max_parallel}")
    if not Path(model_path).is_file():
        raise ModelError(f"model '{model_path}' not found; check the path")
    locks = {d.device.address: asyncio.Lock() for d in devices}
    slots = asyncio.Semaphore(max_parallel or max(1, len(devices)))

    async def one(entry: FleetDevice) -> DeviceRun | DeviceFailure:
        address = entry.device.address
        async with locks[address], slots:
            try:
                result = await bench_device_async(entry.device, model_path, settings, connect, retries=retries)
                outcome: DeviceRun | DeviceFailure = DeviceRun(entry.name, address, result)
            except DeviceError as exc:
                outcome = DeviceFailure(entry.name, address, str(exc))
        if on_result is not None:
            on_result(outcome)
        return outcome

    outcomes = await asyncio.gather(*(one(d) for d in devices))
    return FleetReport(
        results=tuple(o for o in outcomes if isinstance(o, DeviceRun)),
        errors=tuple(o for o in outcomes if isinstance(o, DeviceFailure)),
    )
