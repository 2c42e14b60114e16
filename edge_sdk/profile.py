"""Target profiles: the typed, frozen form of one `targets/<id>.toml` file, and its validation.

Every hardware fact comes from the file; this module only knows the schema. An unknown, missing
or ill-typed key is a TargetError naming the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_sdk.errors import TargetError
from edge_sdk.tomltable import Table

SCHEMA_VERSION = 1


class Kind(str, Enum):
    CPU = "cpu"
    NPU = "npu"
    GPU = "gpu"


class Precision(str, Enum):
    INT8 = "int8"
    INT16X8 = "int16x8"
    FP16 = "fp16"
    FP32 = "fp32"
    DYNAMIC_INT8 = "dynamic-int8"

    @property
    def activation_bytes(self) -> int:
        return {"int8": 1, "int16x8": 2, "fp16": 2, "fp32": 4, "dynamic-int8": 4}[self.value]

    @property
    def weight_bytes(self) -> int:
        return {"int8": 1, "int16x8": 1, "fp16": 2, "fp32": 4, "dynamic-int8": 1}[self.value]


class Partitioning(str, Enum):
    MULTI = "multi"  # unsupported ops run on the fallback, then control returns to the unit
    SINGLE = "single"  # the first unsupported op and everything after it run on the fallback
    LARGEST = "largest"  # only the largest run of supported ops is delegated (LiteRT GPU delegate)


class Fallback(str, Enum):
    CPU = "cpu"
    NONE = "none"


FORMATS = frozenset({"tflite", "onnx", "vela-tflite", "edgetpu-tflite", "hef", "rknn", "qnn"})
MEMORIES = frozenset({"ram", "sram", "flash", "onchip"})
DTYPES = frozenset({"int8", "uint8", "int16", "uint16", "int4", "fp16", "fp32"})
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class OpRule:
    """Limits under which the target's unit runs one ONNX op type; None means no limit."""

    op_type: str
    precisions: tuple[Precision, ...] | None = None
    kernel_max: tuple[int, int] | None = None
    kernel_area_max: int | None = None
    stride_max: tuple[int, int] | None = None
    dilation_max: tuple[int, int] | None = None
    dilation_equal: bool | None = None
    grouped: bool | None = None
    max_dims: int | None = None
    reduce_axes: str | None = None
    batch_axis: bool | None = None
    modes: tuple[str, ...] | None = None
    constant_weights: bool | None = None
    channels_max: int | None = None
    weights_abs_sum_max: int | None = None
    perms: tuple[tuple[int, ...], ...] | None = None
    note: str | None = None


@dataclass(frozen=True)
class OpSupport:
    partitioning: Partitioning
    fallback: Fallback
    fallback_unit: str
    source: str | None
    rules: Mapping[str, OpRule]


@dataclass(frozen=True)
class Compute:
    unit: str
    cores: int | None
    clock_mhz: float | None
    isa: tuple[str, ...]
    macs_per_cycle: int | None
    peak_gops: Mapping[Precision, float]


@dataclass(frozen=True)
class Memory:
    ram_mb: tuple[int, ...]
    sram_kb: float | None
    flash_mb: float | None
    weights_in: str
    activations_in: str
    bandwidth_gbps: float | None
    bandwidth_kind: str | None


@dataclass(frozen=True)
class Deploy:
    formats: tuple[str, ...]
    runtimes: tuple[str, ...]
    precisions: tuple[Precision, ...]
    default_precision: Precision


@dataclass(frozen=True)
class QuantSpec:
    dtype: str
    per_channel: bool
    symmetric: bool
    narrow_range: bool


@dataclass(frozen=True)
class FixedOutput:
    op: str
    scale: float
    zero_point: int
    why: str


@dataclass(frozen=True)
class QuantRules:
    weights: QuantSpec
    activations: QuantSpec
    fixed_outputs: tuple[FixedOutput, ...]


@dataclass(frozen=True)
class TargetProfile:
    id: str
    name: str
    kind: Kind
    description: str
    soc: str | None
    aliases: tuple[str, ...]
    sources: tuple[str, ...]
    unconfirmed: tuple[str, ...]
    detect: bool
    compute: Compute
    memory: Memory
    deploy: Deploy
    quantization: QuantRules
    ops: OpSupport
    path: Path
    builtin: bool


def _precisions(table: Table, key: str) -> tuple[Precision, ...]:
    values = table.get_list(key, str)
    for value in values:
        if value not in {p.value for p in Precision}:
            raise table.fail(key, f"has unknown precision '{value}'")
    return tuple(Precision(v) for v in values)


def _table(data: Any, where: str, path: Path) -> Table:
    return Table(data, where, path, error=TargetError, hint="targets/README.md")


def parse_profile(data: dict, path: Path, *, builtin: bool) -> TargetProfile:
    """Validate the parsed TOML of one profile file into a TargetProfile."""
    top = _table(data, "", path)
    schema = top.get("schema", int, required=True)
    if schema != SCHEMA_VERSION:
        raise TargetError(
            f"{path}: schema {schema} is not supported (this edge-sdk reads schema "
            f"{SCHEMA_VERSION}); update the file or edge-sdk"
        )
    target_id = top.get("id", str, required=True)
    if not _ID.match(target_id) or target_id != path.stem:
        raise TargetError(
            f"{path}: key 'id' is '{target_id}' but must equal the file name "
            f"'{path.stem}' (lower case letters, digits and '-')"
        )
    profile = TargetProfile(
        id=target_id,
        name=top.get("name", str, required=True),
        kind=Kind(top.choice("kind", Kind, required=True)),
        description=top.get("description", str, required=True),
        soc=top.get("soc", str),
        aliases=top.get_list("aliases", str),
        sources=top.get_list("sources", str, required=True),
        unconfirmed=top.get_list("unconfirmed", str),
        detect=top.get("detect", bool, default=False),
        compute=_compute(top.sub("compute")),
        memory=_memory(top.sub("memory")),
        deploy=_deploy(top.sub("deploy")),
        quantization=_quantization(top.sub("quantization")),
        ops=_ops(top.sub("ops")),
        path=path,
        builtin=builtin,
    )
    top.done()
    if not profile.sources:
        raise top.fail("sources", "must list at least one source")
    return profile


def _compute(t: Table) -> Compute:
    peaks = t.sub("peak_gops", required=False)
    peak_gops = {}
    for key in list(peaks.data):
        if key not in {p.value for p in Precision}:
            raise peaks.fail(key, "is not a precision")
        peak_gops[Precision(key)] = float(peaks.get(key, (int, float)))
    peaks.done()
    compute = Compute(
        unit=t.get("unit", str, required=True),
        cores=t.get("cores", int),
        clock_mhz=_number(t.get("clock_mhz", (int, float))),
        isa=t.get_list("isa", str),
        macs_per_cycle=t.get("macs_per_cycle", int),
        peak_gops=MappingProxyType(peak_gops),
    )
    t.done()
    return compute


def _memory(t: Table) -> Memory:
    bandwidth = _number(t.get("bandwidth_gbps", (int, float)))
    memory = Memory(
        ram_mb=t.get_list("ram_mb", int),
        sram_kb=_number(t.get("sram_kb", (int, float))),
        flash_mb=_number(t.get("flash_mb", (int, float))),
        weights_in=str(t.choice("weights_in", sorted(MEMORIES), required=True)),
        activations_in=str(t.choice("activations_in", sorted(MEMORIES), required=True)),
        bandwidth_gbps=bandwidth,
        bandwidth_kind=t.choice("bandwidth_kind", ("measured", "theoretical"), required=bandwidth is not None),
    )
    t.done()
    return memory


def _deploy(t: Table) -> Deploy:
    formats = t.get_list("formats", str, required=True)
    for fmt in formats:
        if fmt not in FORMATS:
            raise t.fail("formats", f"has unknown format '{fmt}' (known: {', '.join(sorted(FORMATS))})")
    precisions = _precisions(t, "precisions")
    if not precisions:
        raise t.fail("precisions", "must list at least one precision")
    default = Precision(t.choice("default_precision", Precision, required=True))
    if default not in precisions:
        raise t.fail("default_precision", f"is '{default.value}', which is not in deploy.precisions")
    deploy = Deploy(
        formats=formats,
        runtimes=t.get_list("runtimes", str, required=True),
        precisions=precisions,
        default_precision=default,
    )
    t.done()
    return deploy


def _quant_spec(t: Table) -> QuantSpec:
    spec = QuantSpec(
        dtype=str(t.choice("dtype", sorted(DTYPES), required=True)),
        per_channel=t.get("per_channel", bool, default=False),
        symmetric=t.get("symmetric", bool, default=False),
        narrow_range=t.get("narrow_range", bool, default=False),
    )
    t.done()
    return spec


def _quantization(t: Table) -> QuantRules:
    fixed = []
    for i, item in enumerate(t.get("fixed_outputs", list, default=[])):
        f = _table(item, f"{t.where}.fixed_outputs[{i}]", t.path)
        fixed.append(
            FixedOutput(
                op=f.get("op", str, required=True),
                scale=float(f.get("scale", (int, float), required=True)),
                zero_point=f.get("zero_point", int, required=True),
                why=f.get("why", str, required=True),
            )
        )
        f.done()
    rules = QuantRules(
        weights=_quant_spec(t.sub("weights")), activations=_quant_spec(t.sub("activations")), fixed_outputs=tuple(fixed)
    )
    t.done()
    return rules


_OPS_KEYS = {"partitioning", "fallback", "fallback_unit", "source"}


def _ops(t: Table) -> OpSupport:
    rules = {}
    for op_type in sorted(set(t.data) - _OPS_KEYS):
        rules[op_type] = _op_rule(op_type, t.sub(op_type))
    support = OpSupport(
        partitioning=Partitioning(t.choice("partitioning", Partitioning, required=True)),
        fallback=Fallback(t.choice("fallback", Fallback, required=True)),
        fallback_unit=t.get("fallback_unit", str, default="CPU"),
        source=t.get("source", str),
        rules=MappingProxyType(rules),
    )
    t.done()
    return support


def _op_rule(op_type: str, t: Table) -> OpRule:
    if not re.match(r"^[A-Z][A-Za-z0-9]*$", op_type):
        raise t.fail("", "is not an ONNX op type (tables under [ops] are named like Conv, MatMul)")
    perms = t.get("perms", list)
    if perms is not None and not all(isinstance(p, list) and all(isinstance(i, int) for i in p) for p in perms):
        raise t.fail("perms", "must be a list of integer lists")
    rule = OpRule(
        op_type=op_type,
        precisions=_precisions(t, "precisions") or None,
        kernel_max=t.pair("kernel_max"),
        kernel_area_max=t.get("kernel_area_max", int),
        stride_max=t.pair("stride_max"),
        dilation_max=t.pair("dilation_max"),
        dilation_equal=t.get("dilation_equal", bool),
        grouped=t.get("grouped", bool),
        max_dims=t.get("max_dims", int),
        reduce_axes=t.choice("reduce_axes", ("spatial",)),
        batch_axis=t.get("batch_axis", bool),
        modes=t.get_list("modes", str) or None,
        constant_weights=t.get("constant_weights", bool),
        channels_max=t.get("channels_max", int),
        weights_abs_sum_max=t.get("weights_abs_sum_max", int),
        perms=tuple(tuple(p) for p in perms) if perms else None,
        note=t.get("note", str),
    )
    t.done()
    return rule


def _number(value: int | float | None) -> float | None:
    return None if value is None else float(value)
