"""Measure a model on this host, and read the device runner's JSON into a `BenchmarkResult`.

`benchmark` calls the same `runner.measure` that runs on devices, so a host number and a device number
differ only in the machine. `result_from_runner_json` is the one place a runner document becomes a
result: host runs use it and so does the SSH path (edge_sdk.remote).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_sdk import runner
from edge_sdk.errors import DependencyError, DeviceError, EdgeSdkError, ModelError, UsageError
from edge_sdk.measurement import BenchmarkResult, Conditions, LatencyStats, OpTime, Source

if TYPE_CHECKING:
    from edge_sdk.profile import TargetProfile

log = logging.getLogger(__name__)

RUNNER_FILE = Path(runner.__file__)  # the file edge_sdk.remote copies to devices

# runner error kind -> the error raised for a host run
_HOST_ERRORS: dict[str, type[EdgeSdkError]] = {"usage": UsageError, "model": ModelError, "dependency": DependencyError}
# On a device a missing runtime is the device's problem, not this machine's: DeviceError.
_DEVICE_ERRORS: dict[str, type[EdgeSdkError]] = {"usage": UsageError, "model": ModelError}
_REQUIRED = ("model_name", "model_sha256", "init_ms", "first_run_ms", "samples_ms", "peak_rss_mb", "conditions")


def benchmark(
    model_path: str | Path,
    *,
    threads: int | None = None,
    runs: int = runner.DEFAULT_RUNS,
    budget_s: float = runner.DEFAULT_BUDGET_S,
    warmup: int = runner.DEFAULT_WARMUP,
    min_runs: int = runner.DEFAULT_MIN_RUNS,
    inputs: Mapping[str, np.ndarray] | None = None,
    per_op: bool = False,
    target: str | TargetProfile | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BenchmarkResult:
    """Time a .onnx (ONNX Runtime) or .tflite (LiteRT) model on this host: one first run, `warmup`
    untimed runs, then timed runs until `runs` or `budget_s` seconds (at least `min_runs`).
    `threads=None` uses every usable core; `inputs` (arrays by input name) replace the seeded random
    data; `per_op` adds ONNX Runtime's per-node times. `progress(done, total)` follows the timed runs.

    The peak RSS is this process's, so it includes whatever the caller has loaded."""
    try:
        doc = runner.measure(
            model_path,
            threads=threads,
            runs=runs,
            budget_s=budget_s,
            warmup=warmup,
            min_runs=min_runs,
            inputs=inputs,
            per_op=per_op,
            progress=progress,
        )
    except runner.RunnerError as exc:
        raise _HOST_ERRORS.get(exc.kind, EdgeSdkError)(str(exc)) from None
    target_id = target if isinstance(target, str) or target is None else target.id
    result = result_from_runner_json(doc, source=Source.HOST, target=target_id, device=None)
    log.info(
        "benchmarked %s on this host: median %.3f ms over %d runs",
        result.model_name,
        result.latency_ms,
        len(result.samples_ms),
    )
    return result


def result_from_runner_json(
    doc: Mapping[str, Any], *, source: Source, target: str | None, device: str | None
) -> BenchmarkResult:
    """The runner's JSON document as a result. An error document raises the matching typed error;
    a malformed one raises DeviceError naming what is missing or wrong."""
    where = device or "the runner"
    if not isinstance(doc, Mapping):
        raise DeviceError(f"{where}: the runner printed {type(doc).__name__}, not a JSON object; update runner.py")
    if "error" in doc:
        raise _runner_error(doc, device)
    if doc.get("runner_version") != runner.RUNNER_VERSION:
        raise DeviceError(
            f"{where}: runner_version {doc.get('runner_version')!r} where {runner.RUNNER_VERSION} was expected; "
            "copy this SDK's runner.py to the device"
        )
    missing = [key for key in _REQUIRED if key not in doc]
    if missing:
        raise DeviceError(f"{where}: the runner output lacks {', '.join(missing)}; copy this SDK's runner.py again")
    fields = _Fields(doc, where)
    samples = fields.samples("samples_ms")
    return BenchmarkResult(
        source=source,
        model_name=fields.text("model_name"),
        model_sha256=fields.text("model_sha256"),
        target=target,
        device=device,
        init_ms=fields.number("init_ms"),
        first_run_ms=fields.number("first_run_ms"),
        stats=LatencyStats.from_samples(samples),
        samples_ms=samples,
        peak_rss_mb=fields.optional_number("peak_rss_mb"),
        conditions=_conditions(doc["conditions"], where),
        sdk_version=_sdk_version(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        per_op=_per_op(doc.get("per_op", []), where),
        extra={"runner_version": runner.RUNNER_VERSION},
    )


def _runner_error(doc: Mapping[str, Any], device: str | None) -> EdgeSdkError:
    message, kind = str(doc.get("error")), str(doc.get("kind", ""))
    if device is None:
        return _HOST_ERRORS.get(kind, EdgeSdkError)(message)
    return _DEVICE_ERRORS.get(kind, DeviceError)(f"{device}: {message}")


class _Fields:
    """Typed reads from one JSON object; a wrong type is a DeviceError naming the field."""

    def __init__(self, doc: Mapping[str, Any], where: str, prefix: str = "") -> None:
        self.doc, self.where, self.prefix = doc, where, prefix

    def error(self, key: str, want: str) -> DeviceError:
        got = self.doc.get(key)
        return DeviceError(f"{self.where}: runner field {self.prefix}{key} is {got!r}, not {want}; update runner.py")

    def text(self, key: str) -> str:
        value = self.doc.get(key)
        if not isinstance(value, str):
            raise self.error(key, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.doc.get(key) is None else self.text(key)

    def number(self, key: str) -> float:
        value = self.doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "a number")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.doc.get(key) is None else self.number(key)

    def integer(self, key: str) -> int:
        value = self.doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "an integer")
        return value

    def samples(self, key: str) -> tuple[float, ...]:
        value = self.doc.get(key)
        ok = isinstance(value, list) and len(value) > 0 and all(type(v) in (int, float) and v >= 0 for v in value)
        if not ok or not isinstance(value, list):
            raise self.error(key, "a non-empty list of times")
        return tuple(float(v) for v in value)


def _conditions(raw: Any, where: str) -> Conditions:
    if not isinstance(raw, Mapping):
        raise DeviceError(f"{where}: runner field conditions is {raw!r}, not an object; update runner.py")
    missing = [f.name for f in dataclasses.fields(Conditions) if f.name not in raw]
    if missing:
        raise DeviceError(
            f"{where}: the runner's conditions lack {', '.join(missing)}; copy this SDK's runner.py again"
        )
    read = _Fields(raw, where, "conditions.")
    load = raw["load_avg"]
    numbers = isinstance(load, list) and len(load) == 3 and all(type(v) in (int, float) for v in load)
    if load is not None and not numbers:
        raise read.error("load_avg", "three numbers")
    return Conditions(
        hostname=read.text("hostname"),
        cpu_model=read.text("cpu_model"),
        machine=read.text("machine"),
        os=read.text("os"),
        python=read.text("python"),
        runtime=read.text("runtime"),
        runtime_version=read.text("runtime_version"),
        threads=read.integer("threads"),
        governor=read.optional_text("governor"),
        load_avg=None if load is None else (float(load[0]), float(load[1]), float(load[2])),
        temperature_c=read.optional_number("temperature_c"),
        throttled=read.optional_text("throttled"),
    )


def _per_op(raw: Any, where: str) -> tuple[OpTime, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        raise DeviceError(f"{where}: runner field per_op is not a list of objects; update runner.py")
    ops = []
    for index, item in enumerate(raw):
        read = _Fields(item, where, f"per_op[{index}].")
        ops.append(OpTime(name=read.text("name"), op_type=read.text("op_type"), mean_ms=read.number("mean_ms")))
    return tuple(ops)


def _sdk_version() -> str:
    from edge_sdk import __version__  # at call time: edge_sdk/__init__ may import this module

    return __version__
