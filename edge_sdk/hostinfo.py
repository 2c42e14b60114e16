"""What this machine is: CPU model, cores, clock, ISA features and RAM, read at run time.

Used to fill the `host` target profile (the only profile with `detect = true`) and to record the
conditions of every measurement.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.runner import usable_cores  # the runner's own count, so host and device runs agree

# Kernel cpuinfo flags -> the ISA vocabulary the target profiles use.
_ISA_FLAGS = {
    "asimd": "neon",
    "neon": "neon",
    "asimdhp": "fp16",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "sve": "sve",
    "sve2": "sve2",
    "bf16": "bf16",
    "sse4_2": "sse4.2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512-vnni",
    "avx_vnni": "avx-vnni",
    "avx512_bf16": "avx512-bf16",
    "avx512_fp16": "avx512-fp16",
    "amx_int8": "amx-int8",
}


@dataclass(frozen=True)
class HostInfo:
    cpu_model: str
    machine: str
    cores: int
    clock_mhz: float | None
    isa: tuple[str, ...]
    ram_mb: int | None
    governor: str | None


def read_host_info(proc: Path = Path("/proc"), sys_cpu: Path = Path("/sys/devices/system/cpu")) -> HostInfo:
    cpuinfo = _read(proc / "cpuinfo")
    fields = _cpuinfo_fields(cpuinfo)
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    isa = tuple(sorted({name for flag, name in _ISA_FLAGS.items() if flag in flags}))
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.processor()
    return HostInfo(
        cpu_model=model or platform.machine(),
        machine=platform.machine(),
        cores=usable_cores(),
        clock_mhz=_clock_mhz(fields, sys_cpu),
        isa=isa,
        ram_mb=_ram_mb(_read(proc / "meminfo")),
        governor=_read(sys_cpu / "cpu0" / "cpufreq" / "scaling_governor").strip() or None,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _cpuinfo_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def _clock_mhz(fields: dict[str, str], sys_cpu: Path) -> float | None:
    max_khz = _read(sys_cpu / "cpu0" / "cpufreq" / "cpuinfo_max_freq").strip()
    if max_khz.isdigit():
        return int(max_khz) / 1000.0
    try:
        return float(fields["cpu MHz"])
    except (KeyError, ValueError):
        return None


def _ram_mb(meminfo: str) -> int | None:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None
