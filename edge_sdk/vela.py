"""Compile an int8 TFLite model for an Arm Ethos-U NPU with Vela, and read back Vela's own estimates.

    result = compile_for_ethos_u(Path("model_int8.tflite"), load_target("ethos-u55-128"))
    Path("model_vela.tflite").write_bytes(result.optimized_tflite)

Vela runs as a subprocess of this interpreter (`python -m ethosu.vela`), so it is the Vela of the
active environment, a crash in its C++ core cannot take the caller down, and a timeout can stop it.
Its outputs are read from the files it writes: the summary CSV (time, cycles, memory) and the debug
database (which source operator each NPU command came from, with its cycles); the reasons for CPU
placement come from the warnings it prints.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

from edge_sdk.errors import DependencyError, ExportError, ModelError, TargetError
from edge_sdk.profile import TargetProfile

log = logging.getLogger(__name__)

INSTALL_HINT = "Ethos-U targets need Vela: pip install 'edge-sdk[ethos-u]'"
TIMEOUT_S = 300.0
CONFIG_FILE = "Arm/vela.ini"  # shipped inside ethos-u-vela; Vela resolves this form in its config_files folder

# The profile schema has no Vela fields, so the accelerator and system config are keyed by profile id.
# Each entry is the one the profile's description names (its compute.clock_mhz is that config's clock).
_SYSTEM_CONFIGS: dict[str, tuple[str, str]] = {
    "ethos-u55-128": ("ethos-u55-128", "Ethos_U55_High_End_Embedded"),
    "ethos-u65-256": ("ethos-u65-256", "Ethos_U65_Client_Server"),
}
# Vela's memory modes (Arm/vela.ini) as the profile's [memory] placement: (weights_in, activations_in).
_MEMORY_MODES: dict[tuple[str, str], str] = {
    ("flash", "sram"): "Shared_Sram",  # constants over AXI1 (flash), tensor arena in SRAM
    ("ram", "ram"): "Dedicated_Sram",  # constants and arena in DRAM; SRAM is the NPU's cache
    ("sram", "sram"): "Sram_Only",
}
_PASSTHROUGH = "Passthrough"  # the operator name Vela's debug database gives an op left to the CPU
_REGOR_WARNING = re.compile(r"^Warning \(supported operators\) operator: (?P<op>\w+), ofm: '(?P<name>.*)'$")
_LEGACY_WARNING = re.compile(
    r"^Warning: (?:Unsupported TensorFlow Lite semantics for )?(?P<op>\w+) '(?P<name>.*)'"
    r"(?:\.| is not supported on the NPU\.) Placing on CPU instead$"
)
_LEGACY_CPU_ONLY = re.compile(r"^Info: (?P<op>\w+) '(?P<name>.*)' is a CPU only op$")


class Placement(str, Enum):
    NPU = "NPU"
    CPU = "CPU"


@dataclass(frozen=True)
class VelaConfig:
    accelerator: str  # --accelerator-config
    system_config: str  # --system-config, a section of Arm/vela.ini
    memory_mode: str  # --memory-mode
    arena_cache_bytes: int | None  # --arena-cache-size; None leaves Vela's default


@dataclass(frozen=True)
class VelaOp:
    """One operator of the input model's main subgraph, as Vela placed it."""

    index: int
    name: str  # the op's first output tensor
    op_type: str  # TFLite builtin, e.g. CONV_2D (custom ops: their custom code)
    placement: Placement
    reason: str | None  # why Vela left it on the CPU, in Vela's words, when it gave one
    cycles: int | None  # Vela's NPU cycle estimate; None where this Vela reports no per-op figures
    time_ms: float | None


@dataclass(frozen=True)
class VelaResult:
    optimized_tflite: bytes
    accelerator: str
    system_config: str
    memory_mode: str
    inference_time_ms: float  # Vela's estimate for the NPU part; CPU-placed ops are not included
    cycles: int
    sram_bytes: int  # peak SRAM Vela allocates (the arena in Shared_Sram, the cache in Dedicated_Sram)
    dram_bytes: int
    flash_bytes: int  # on-chip plus off-chip flash (constants in Shared_Sram)
    npu_ops: int  # counted over the input model's operators, like `ops`
    cpu_ops: int
    ops: tuple[VelaOp, ...]
    vela_version: str


def compile_for_ethos_u(
    tflite: bytes | Path,
    profile: TargetProfile,
    *,
    work_dir: Path | None = None,
    timeout_s: float = TIMEOUT_S,
) -> VelaResult:
    """Compile a fully quantized TFLite model for `profile` with Vela. With `work_dir`, Vela's input
    and output files are kept there; otherwise they live in a temporary directory."""
    config = vela_config(profile)
    version = locate_vela()
    data = _read_input(tflite)
    if work_dir is not None:
        return _compile(data, config, Path(work_dir), profile=profile, version=version, timeout_s=timeout_s)
    with tempfile.TemporaryDirectory(prefix="edge-sdk-vela-") as tmp:
        return _compile(data, config, Path(tmp), profile=profile, version=version, timeout_s=timeout_s)


def vela_config(profile: TargetProfile) -> VelaConfig:
    """The Vela settings for an Ethos-U profile; a TargetError for other targets or a profile whose
    MACs or memory placement do not match a Vela configuration."""
    if profile.id not in _SYSTEM_CONFIGS:
        raise TargetError(
            f"target '{profile.id}' has no Vela configuration; Vela compiles for {', '.join(sorted(_SYSTEM_CONFIGS))}"
        )
    accelerator, system_config = _SYSTEM_CONFIGS[profile.id]
    macs = int(accelerator.rsplit("-", 1)[1])
    if profile.compute.macs_per_cycle != macs:
        raise TargetError(
            f"{profile.path}: compute.macs_per_cycle is {profile.compute.macs_per_cycle}, but Vela's "
            f"{accelerator} has {macs}; fix the profile"
        )
    placement = (profile.memory.weights_in, profile.memory.activations_in)
    if placement not in _MEMORY_MODES:
        known = "; ".join(f"{w}/{a} -> {mode}" for (w, a), mode in _MEMORY_MODES.items())
        raise TargetError(
            f"{profile.path}: memory.weights_in/activations_in = {placement[0]}/{placement[1]} is no Vela memory "
            f"mode (known: {known})"
        )
    memory_mode = _MEMORY_MODES[placement]
    sram_kb = profile.memory.sram_kb
    # In Dedicated_Sram the SRAM is only a cache, and its size is what --arena-cache-size sets. In the
    # other modes the arena itself is in SRAM; its size is left to Vela, which reports what it needs.
    cache = round(sram_kb * 1024) if memory_mode == "Dedicated_Sram" and sram_kb is not None else None
    return VelaConfig(accelerator, system_config, memory_mode, cache)


def locate_vela() -> str:
    """The version of the installed Vela; a DependencyError when it is missing."""
    try:
        spec = find_spec("ethosu.vela")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise DependencyError(INSTALL_HINT)
    try:
        return metadata.version("ethos-u-vela")
    except metadata.PackageNotFoundError:
        return "unknown"


def vela_command(network: Path, config: VelaConfig, output_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "ethosu.vela", str(network), "--output-dir", str(output_dir)]
    command += ["--accelerator-config", config.accelerator, "--config", CONFIG_FILE]
    command += ["--system-config", config.system_config, "--memory-mode", config.memory_mode]
    command += ["--output-format", "tflite", "--enable-debug-db"]
    if config.arena_cache_bytes is not None:
        command += ["--arena-cache-size", str(config.arena_cache_bytes)]
    return command


def _read_input(tflite: bytes | Path) -> bytes:
    if isinstance(tflite, bytes | bytearray):
        data, origin = bytes(tflite), "the TFLite model"
    else:
        path = Path(tflite)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read ({exc.strerror}); check the path") from None
        origin = str(path)
    # A flatbuffer starts with its root offset, then the file identifier; TFLite's is TFL3.
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{origin} is not a TFLite flatbuffer (no TFL3 identifier); pass a quantized .tflite file")
    return data


def _compile(
    data: bytes, config: VelaConfig, work_dir: Path, *, profile: TargetProfile, version: str, timeout_s: float
) -> VelaResult:
    work_dir.mkdir(parents=True, exist_ok=True)
    network = work_dir / "model.tflite"
    network.write_bytes(data)
    output_dir = work_dir / f"vela-{config.accelerator}"
    stdout = _run(vela_command(network, config, output_dir), config, timeout_s)
    summary = _read_summary(output_dir / f"model_summary_{config.system_config}.csv")
    clock_hz = float(summary["core_clock"])
    _check_clock(clock_hz, config, profile)
    ops = _placed_ops(data, output_dir / "model_debug.xml", stdout, clock_hz)
    npu_ops = sum(op.placement is Placement.NPU for op in ops)
    return VelaResult(
        optimized_tflite=_read_output(output_dir / "model_vela.tflite"),
        accelerator=config.accelerator,
        system_config=config.system_config,
        memory_mode=config.memory_mode,
        inference_time_ms=float(summary["inference_time"]) * 1e3,
        cycles=_int(summary["cycles_total"]),
        sram_bytes=_kib(summary["sram_memory_used"]),
        dram_bytes=_kib(summary["dram_memory_used"]),
        flash_bytes=_kib(summary["on_chip_flash_memory_used"]) + _kib(summary["off_chip_flash_memory_used"]),
        npu_ops=npu_ops,
        cpu_ops=len(ops) - npu_ops,
        ops=ops,
        vela_version=version,
    )


def _check_clock(clock_hz: float, config: VelaConfig, profile: TargetProfile) -> None:
    """Vela's time comes from its system config's clock; say so when the profile states another."""
    if profile.compute.clock_mhz is not None and abs(clock_hz / 1e6 - profile.compute.clock_mhz) > 1e-6:
        log.warning(
            "Vela's %s runs at %g MHz but profile %s says %g MHz; Vela's estimate uses its own clock",
            config.system_config,
            clock_hz / 1e6,
            profile.id,
            profile.compute.clock_mhz,
        )


def _run(command: list[str], config: VelaConfig, timeout_s: float) -> str:
    """Run Vela and return what it printed; its failures become one ExportError line."""
    log.debug("running %s", subprocess.list2cmdline(command))
    try:
        proc = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ExportError(
            f"Vela did not finish compiling for {config.accelerator} within {timeout_s:g} s; "
            "raise timeout_s or try a smaller model"
        ) from None
    except OSError as exc:
        raise ExportError(f"cannot start Vela ({exc.strerror}); check the Python environment") from None
    if proc.returncode != 0:
        how = f"exit code {proc.returncode}" if proc.returncode > 0 else f"it crashed with {_signal(-proc.returncode)}"
        line = _last_error_line(proc.stderr) or _last_error_line(proc.stdout) or "it printed no error"
        raise ExportError(
            f"Vela could not compile the model for {config.accelerator} ({how}): {line}; "
            "check that the model loads in LiteRT and is fully quantized"
        )
    return proc.stdout


def _signal(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_error_line(text: str) -> str | None:
    """The last line that says what went wrong: not a warning, not a traceback frame."""
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if not stripped or line[0].isspace() or "Warning" in line or stripped.startswith(("Traceback", "^")):
            continue
        return re.sub(r"^[\w.]*(?:Error|Exception): ", "", stripped).rstrip(".")
    return None


def _read_summary(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        raise ExportError(f"Vela finished but wrote no {path.name}; check the installed ethos-u-vela") from None
    if not rows:
        raise ExportError(f"Vela's {path.name} is empty; check the installed ethos-u-vela")
    return rows[-1]


def _read_output(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise ExportError(f"Vela finished but wrote no {path.name}; check the installed ethos-u-vela") from None


def _int(value: str) -> int:
    return round(float(value or 0))


def _kib(value: str) -> int:
    return round(float(value or 0) * 1024)


def _placed_ops(data: bytes, debug_db: Path, stdout: str, clock_hz: float) -> tuple[VelaOp, ...]:
    """The input model's operators with Vela's placement, reasons and per-op cycles.

    Vela's debug database maps every command back to its source operator's index, so fused and split
    ops are counted exactly. A source op with no rows was folded into its neighbours (a PAD into the
    next CONV_2D, a RESHAPE into a view) and runs on the NPU with them. Vela releases whose debug
    database has no `perf` table (the legacy core) report placement only through their warnings."""
    reasons = _cpu_reasons(stdout)
    stats = _debug_db_stats(debug_db)
    ops = []
    for index, (op_type, name) in enumerate(_model_ops(data)):
        if stats is not None:
            cycles: int | None = stats[0].get(index, 0)
            on_cpu = index in stats[1]
        else:
            cycles, on_cpu = None, name in reasons
        placement = Placement.CPU if on_cpu else Placement.NPU
        ops.append(
            VelaOp(
                index=index,
                name=name,
                op_type=op_type,
                placement=placement,
                reason=reasons.get(name) if on_cpu else None,
                cycles=None if on_cpu else cycles,
                time_ms=None if on_cpu or cycles is None else cycles / clock_hz * 1e3,
            )
        )
    return tuple(ops)


def _cpu_reasons(stdout: str) -> dict[str, str]:
    """Output tensor name -> why Vela placed that op on the CPU, from the warnings it printed.

    The current core prints `Warning (supported operators) operator: OP, ofm: 'name'`, then `Reason: ...`
    and the constraint; the legacy core `Warning: ... 'name' ... Placing on CPU instead`, then ` - constraint`
    and a detail line."""
    reasons: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        header = _REGOR_WARNING.match(line) or _LEGACY_WARNING.match(line)
        cpu_only = _LEGACY_CPU_ONLY.match(line)
        if header:
            current = reasons.setdefault(header["name"], [])
        elif cpu_only:
            reasons.setdefault(cpu_only["name"], []).append(f"{cpu_only['op']} is a CPU-only operator in Vela")
            current = None
        elif current is not None and line.strip() and not line.startswith(("Warning", "Info")):
            text = re.sub(r"^(?:Reason:|-)\s*", "", line.strip())
            if text not in current:
                current.append(text)
        else:
            current = None
    return {name: "; ".join(parts) for name, parts in reasons.items() if parts}


def _debug_db_stats(path: Path) -> tuple[dict[int, int], set[int]] | None:
    """(op index -> NPU cycles, indices of ops left on the CPU), or None without per-op data."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        log.warning("Vela wrote no readable debug database %s; per-op cycles are not reported", path.name)
        return None
    tables = {t.get("name"): list(csv.DictReader(io.StringIO((t.text or "").strip()))) for t in root.iter("table")}
    if "perf" not in tables or "source" not in tables:
        return None
    index_of = {row["id"]: int(row["ext_key"]) for row in tables["source"] if row.get("ext_key", "").isdigit()}
    cycles: dict[int, int] = {}
    on_cpu: set[int] = set()
    for row in tables["perf"]:
        index = index_of.get(row.get("source_id", ""))
        if index is None:
            continue
        cycles[index] = cycles.get(index, 0) + _int(row.get("op_cycles", "0"))
        if row.get("operator") == _PASSTHROUGH:
            on_cpu.add(index)
    return cycles, on_cpu


def _model_ops(data: bytes) -> list[tuple[str, str]]:
    """(op type, first output name) for each operator of the main subgraph, read with the TFLite
    schema that Vela ships (so this needs nothing Vela does not)."""
    from ethosu.vela.tflite.BuiltinOperator import BuiltinOperator
    from ethosu.vela.tflite.Model import Model

    builtin_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = Model.GetRootAsModel(data, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = code.CustomCode()
            codes.append(custom.decode() if custom else builtin_names.get(builtin, f"BUILTIN_{builtin}"))
        graph = model.Subgraphs(0)
        ops = []
        for j in range(graph.OperatorsLength()):
            op = graph.Operators(j)
            name = graph.Tensors(op.Outputs(0)).Name() if op.OutputsLength() else b""
            ops.append((codes[op.OpcodeIndex()], (name or b"").decode("utf-8", "replace")))
    except Exception as exc:  # a flatbuffer that Vela accepted but this reader cannot walk
        raise ModelError(f"cannot read the operators of the TFLite model ({exc}); check the file") from None
    return ops
