"""The README's generated tables: the shipped target profiles, and the ONNX ops the TFLite lowering
converts with how many of them each target's unit runs. Each sits between a pair of markers,
`<!-- generated:NAME -->` and `<!-- /generated:NAME -->`, and only what is between them is rewritten.

    python -m edge_sdk.readme_tables            # rewrite the blocks in README.md
    python -m edge_sdk.readme_tables --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_sdk.artifact import replace_atomically
from edge_sdk.errors import EdgeSdkError, TargetError, UsageError
from edge_sdk.lower.lower import CONSTANT_FOLDED, CONVERTERS, Converter
from edge_sdk.profile import Precision, TargetProfile, parse_profile
from edge_sdk.targets import data_dir
from edge_sdk.tomltable import read_toml

README = Path(__file__).resolve().parents[1] / "README.md"
FIX = "python -m edge_sdk.readme_tables"
_MEMORY_NAMES = {"ram": "RAM", "sram": "SRAM", "flash": "flash", "onchip": "on-chip memory"}


def builtin_targets() -> list[TargetProfile]:
    """The shipped profiles as their files say, sorted by id. Not list_targets(): that adds user
    directories from $EDGE_SDK_TARGETS and fills the host profile from this machine, and the README
    must come out the same everywhere."""
    paths = data_dir("targets").glob("*.toml")
    profiles = [parse_profile(read_toml(p, TargetError), p, builtin=True) for p in paths]
    return sorted(profiles, key=lambda p: p.id)


# ---------------------------------------------------------------- targets


def _ops_per_second(gops: float | None) -> str:
    if gops is None:
        return "-"
    return f"{gops / 1000:g} TOPS" if gops >= 1000 else f"{gops:g} GOPS"


def _size(megabytes: float) -> str:
    return f"{megabytes / 1024:g} GB" if megabytes >= 1024 else f"{megabytes:g} MB"


def memory_text(profile: TargetProfile) -> str:
    if profile.detect:
        return "read at run time"
    m = profile.memory
    parts = []
    if m.ram_mb:
        gb = all(mb >= 1024 for mb in m.ram_mb)
        sizes = "/".join(f"{mb / 1024:g}" if gb else f"{mb}" for mb in m.ram_mb)
        parts.append(f"RAM {sizes} {'GB' if gb else 'MB'}")
    if m.sram_kb is not None:
        parts.append(f"SRAM {_size(m.sram_kb / 1024)}" if m.sram_kb >= 1024 else f"SRAM {m.sram_kb:g} KB")
    if m.flash_mb is not None:
        parts.append(f"flash {_size(m.flash_mb)}")
    if (m.weights_in, m.activations_in) != ("ram", "ram"):
        parts.append(f"weights in {_MEMORY_NAMES[m.weights_in]}, activations in {_MEMORY_NAMES[m.activations_in]}")
    return "; ".join(parts) or "-"


def _precisions(profile: TargetProfile) -> str:
    default = profile.deploy.default_precision
    return ", ".join(f"**{p.value}**" if p is default else p.value for p in profile.deploy.precisions)


def targets_markdown(profiles: Sequence[TargetProfile]) -> str:
    peaks = [p for p in Precision if any(p in t.compute.peak_gops for t in profiles)]
    header = ["id", "name", "kind", "unit", *(f"peak {p.value}" for p in peaks), "memory", "precisions"]
    header += ["formats", "runtimes"]
    lines = [
        f"{len(profiles)} profiles in `targets/`. Peak throughput as the profile states it (`-`: not",
        "published); the default precision is in bold. `edge-sdk targets show ID` prints the sources",
        "and what is unconfirmed.",
        "",
        _row(header),
        _row(["---"] * len(header)),
    ]
    for t in profiles:
        cells = [f"`{t.id}`", t.name, t.kind.value, t.compute.unit]
        cells += [_ops_per_second(t.compute.peak_gops.get(p)) for p in peaks]
        cells += [memory_text(t), _precisions(t), ", ".join(t.deploy.formats), ", ".join(t.deploy.runtimes)]
        lines.append(_row(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------- ops


def converter_summary(converter: Converter) -> str:
    """The converter docstring's first paragraph: the same text docs/tflite_ops.md shows."""
    return " ".join((converter.__doc__ or "").strip().split("\n\n")[0].split())


def _grouped_converters() -> list[tuple[list[str], str]]:
    """(op types, summary) per converter; ops that share one converter share a row."""
    groups: dict[str, list[str]] = {}
    for op, converter in sorted(CONVERTERS.items()):
        groups.setdefault(converter_summary(converter), []).append(op)
    return sorted(((ops, text) for text, ops in groups.items()), key=lambda g: g[0][0])


def _runs_in(profile: TargetProfile, precisions: set[Precision]) -> int:
    rules = profile.ops.rules.values()
    return sum(1 for r in rules if precisions & set(r.precisions or profile.deploy.precisions))


def op_counts_markdown(profiles: Sequence[TargetProfile]) -> str:
    lowered = set(CONVERTERS)
    header = ["target", "unit", "op types its unit runs", "in int8", "in fp16/fp32", "also lowered to TFLite"]
    lines = [_row(header), _row(["---"] * len(header))]
    for t in profiles:
        rules = t.ops.rules
        cells = [f"`{t.id}`", t.compute.unit, str(len(rules)), str(_runs_in(t, {Precision.INT8}))]
        cells += [str(_runs_in(t, {Precision.FP16, Precision.FP32})), str(len(lowered & set(rules)))]
        lines.append(_row(cells))
    return "\n".join(lines)


def ops_markdown(profiles: Sequence[TargetProfile]) -> str:
    lines = [
        f"{len(CONVERTERS)} ONNX op types lower to TFLite builtins without TensorFlow; 4-D activations are",
        "stored NHWC. One row per converter; [docs/tflite_ops.md](docs/tflite_ops.md) has one per op.",
        "",
        "| ONNX ops | TFLite ops and limits |",
        "|---|---|",
    ]
    lines += [_row([", ".join(ops), text]) for ops, text in _grouped_converters()]
    lines += [
        "",
        f"Folded to constants before lowering: {', '.join(CONSTANT_FOLDED)}.",
        "",
        "Per target, from the `[ops]` table of its profile (what `edge-sdk inspect` places on the unit;",
        "anything else falls back as the profile says):",
        "",
        op_counts_markdown(profiles),
    ]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


# ---------------------------------------------------------------- README blocks

BLOCKS: dict[str, Callable[[Sequence[TargetProfile]], str]] = {"targets": targets_markdown, "ops": ops_markdown}


def render(readme: str, profiles: Sequence[TargetProfile]) -> str:
    """`readme` with every generated block rewritten; the text outside the markers is kept as is."""
    for name, build in BLOCKS.items():
        start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
        if readme.count(start) != 1 or readme.count(end) != 1 or readme.index(start) > readme.index(end):
            raise UsageError(f"README needs exactly one '{start}' ... '{end}' block; add it, then run {FIX}")
        before, rest = readme.split(start)
        after = rest.split(end)[1]
        readme = f"{before}{start}\n<!-- {FIX}; edits here are overwritten -->\n{build(profiles)}\n{end}{after}"
    return readme


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=FIX, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is out of date; write nothing")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    try:
        current = args.readme.read_text(encoding="utf-8")
        wanted = render(current, builtin_targets())
    except OSError as exc:
        print(f"error: cannot read {args.readme} ({exc.strerror})", file=sys.stderr)
        return 2
    except EdgeSdkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.check:
        if wanted != current:
            print(f"{args.readme} is out of date: run {FIX}", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        replace_atomically([(args.readme, wanted.encode("utf-8"))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
