"""Run every side-by-side benchmark, then collect their results into benchmarks/results.json (key
numbers, the command, when each results file was written and on what machine) and
benchmarks/results.md (the comparison tables).

    python benchmarks/run_all.py                          # every script with its default arguments
    python benchmarks/run_all.py --only quantize,tflite --quick
    python benchmarks/run_all.py --collect                # only collect the latest results/*.json

Each script runs in its own process with this Python, its output streamed. A failing script is
reported and the others still run; the exit status is 1 if any failed. Collecting takes the newer
of results/NAME.json and results/NAME.quick.json; a missing one is listed as "not run".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import results_tables as tables
from results_tables import Extract, Extractor

from edge_sdk.artifact import replace_atomically
from edge_sdk.hostinfo import read_host_info

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclasses.dataclass(frozen=True)
class Benchmark:
    script: str  # under benchmarks/
    stem: str  # writes results/<stem>.json (results/<stem>.quick.json with --quick, for some)
    title: str
    extract: Extractor


BENCHMARKS: dict[str, Benchmark] = {
    "quantize": Benchmark(
        "quantize_bench.py",
        "quantize",
        "int8 quantization: edge-sdk vs ONNX Runtime quantize_static and NNCF",
        tables.quantize,
    ),
    "prepass": Benchmark(
        "prepass_bench.py", "prepass", "float pre-passes vs int8 fidelity, per quantization engine", tables.prepass
    ),
    "tflite": Benchmark(
        "tflite_bench.py", "tflite", "ONNX -> TFLite: edge-sdk vs onnx2tf and ai-edge-quantizer", tables.tflite
    ),
    "runner": Benchmark(
        "runner_bench.py", "runner", "device runner timing vs LiteRT's own benchmark tool", tables.runner
    ),
    "predict": Benchmark(
        "predict_bench.py", "predict_bench", "latency prediction vs measurement, held out", tables.predict
    ),
    "inspect": Benchmark(
        "inspect_bench.py", "inspect", "MAC and parameter counts vs independent counters", tables.inspect
    ),
    "compile": Benchmark("compile_bench.py", "compile", "compile time and peak memory", tables.compile_),
}


class Status(str, Enum):
    OK = "ok"
    NOT_RUN = "not run"
    UNREADABLE = "unreadable"


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    status: Status
    command: str
    results_file: Path | None = None
    written: str | None = None  # the results file's mtime, ISO 8601 UTC
    extract: Extract | None = None
    problem: str | None = None  # why there is no result, or why the file could not be read
    failure: str | None = None  # why the script failed, when it ran just now


# ---------------------------------------------------------------- run


def quick_option(script: Path) -> tuple[str, ...]:
    """("--quick",) when the script declares that option; scripts without one run as they are."""
    return ("--quick",) if script.exists() and 'add_argument("--quick"' in script.read_text() else ()


def run_scripts(names: list[str], *, quick: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Run each benchmark script in turn. Returns (name -> command run, name -> why it failed)."""
    commands, failures = {}, {}
    for name in names:
        script = HERE / BENCHMARKS[name].script
        args = quick_option(script) if quick else ()
        commands[name] = shlex.join(["python", f"benchmarks/{script.name}", *args])
        print(f"\n=== {name}: {commands[name]}", flush=True)
        if not script.exists():
            failures[name] = f"benchmarks/{script.name} does not exist"
            print(f"=== {name}: {failures[name]}", flush=True)
            continue
        start = time.perf_counter()
        code = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, check=False).returncode
        took = time.perf_counter() - start
        if code != 0:
            failures[name] = f"exited with status {code} after {took:.0f} s"
        print(f"=== {name}: {failures.get(name, 'done')} ({took:.0f} s)", flush=True)
    return commands, failures


# ---------------------------------------------------------------- collect


def latest_results(results_dir: Path, stem: str) -> Path | None:
    found = [p for p in (results_dir / f"{stem}.json", results_dir / f"{stem}.quick.json") if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def written_at(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def collect_one(name: str, results_dir: Path, known_commands: dict[tuple[str, str], str]) -> Section:
    """One benchmark's section. `known_commands` maps (results file name, written) to the command that
    wrote it, when that is known better than the JSON records it (this run, or an earlier collection)."""
    bench = BENCHMARKS[name]
    default = shlex.join(["python", f"benchmarks/{bench.script}"])
    path = latest_results(results_dir, bench.stem)
    if path is None:
        return Section(name, Status.NOT_RUN, default, problem=f"no {bench.stem}.json in {_shown(results_dir)}")
    written = written_at(path)
    try:
        extract = bench.extract(json.loads(path.read_text()), path.name.endswith(".quick.json"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        problem = f"{path.name} could not be read ({type(exc).__name__}: {exc})"
        return Section(name, Status.UNREADABLE, default, path, written, problem=problem)
    command = known_commands.get((path.name, written)) or shlex.join(
        ["python", f"benchmarks/{bench.script}", *extract.args]
    )
    return Section(name, Status.OK, command, path, written, extract)


def previous_commands(out_json: Path) -> dict[tuple[str, str], str]:
    """Commands an earlier collection recorded, keyed by results file and its mtime: a later --collect
    keeps what a run knew (e.g. --quick) and the JSON does not say."""
    try:
        entries = json.loads(out_json.read_text())["benchmarks"].values()
        return {(Path(e["results_file"]).name, e["written"]): e["command"] for e in entries if e.get("written")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def this_machine() -> dict[str, Any]:
    host = read_host_info()
    return {"cpu": host.cpu_model, "cores": host.cores}


def _shown(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def to_json(sections: list[Section], machine: dict[str, Any]) -> dict[str, Any]:
    benchmarks: dict[str, Any] = {}
    for s in sections:
        entry: dict[str, Any] = {"status": s.status.value, "command": s.command, "script": BENCHMARKS[s.name].script}
        if s.results_file is not None:
            entry |= {"results_file": _shown(s.results_file), "written": s.written}
        if s.problem:
            entry["problem"] = s.problem
        if s.failure:
            entry["failed"] = s.failure
        if s.extract is not None:
            entry["machine"] = s.extract.host or machine
            entry["machine_recorded_in_results"] = s.extract.host is not None
            entry["numbers"] = s.extract.numbers
            entry["notes"] = list(s.extract.notes)
        benchmarks[s.name] = entry
    return {"machine": machine, "benchmarks": benchmarks}


def _machine_text(machine: dict[str, Any]) -> str:
    return f"{machine.get('cpu')} ({machine.get('cores')} cores)"


def section_markdown(s: Section, machine: dict[str, Any]) -> list[str]:
    lines = [f"## {s.name}: {BENCHMARKS[s.name].title}", "", f"`{s.command}`", ""]
    if s.failure:
        earlier = "; anything below is from an earlier run" if s.results_file else ""
        lines += [f"**This run failed: {s.failure}{earlier}.**", ""]
    if s.status is Status.NOT_RUN:
        return [*lines, f"Not run ({s.problem}).", ""]
    assert s.results_file is not None
    where = f"{_shown(s.results_file)}, written {s.written}"
    if s.extract is None:
        return [*lines, f"{where}: {s.problem}.", ""]
    recorded = "" if s.extract.host else " (the file does not record its machine; this is the collecting one)"
    lines += [f"{where} on {_machine_text(s.extract.host or machine)}{recorded}.", ""]
    for table in s.extract.tables:
        lines += [table.markdown(), ""]
    return lines + [f"- {note}" for note in s.extract.notes] + ([""] if s.extract.notes else [])


def to_markdown(sections: list[Section], machine: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Collected by `python benchmarks/run_all.py` on {_machine_text(machine)}. Numbers are rounded for "
        "display; benchmarks/results.json has them as measured. Each section gives the command that "
        "reproduces it.",
        "",
    ]
    for s in sections:
        lines += section_markdown(s, machine)
    return "\n".join(lines).rstrip("\n") + "\n"


def collect(
    names: list[str], results_dir: Path, out_json: Path, out_md: Path, *, run: dict[str, str], failures: dict[str, str]
) -> list[Section]:
    """Collect `names` from results_dir and write out_json and out_md atomically. `run` maps the
    benchmarks run just now to their command line, `failures` those that failed to why."""
    known = previous_commands(out_json)
    for name, command in run.items():
        path = latest_results(results_dir, BENCHMARKS[name].stem)
        if path is not None and name not in failures:
            known[(path.name, written_at(path))] = command
    sections = [collect_one(name, results_dir, known) for name in names]
    sections = [dataclasses.replace(s, failure=failures.get(s.name)) for s in sections]
    machine = this_machine()
    document = json.dumps(to_json(sections, machine), indent=2, sort_keys=True) + "\n"
    replace_atomically([(out_json, document.encode()), (out_md, to_markdown(sections, machine).encode())])
    return sections


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="pass --quick to the scripts that have it")
    parser.add_argument("--collect", action="store_true", help="run nothing; collect the existing results")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results", help="where the results JSON are")
    parser.add_argument("--out-json", type=Path, default=HERE / "results.json")
    parser.add_argument("--out-md", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else list(BENCHMARKS)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run, failures = ({}, {}) if args.collect else run_scripts(args.names, quick=args.quick)
    sections = collect(args.names, args.results_dir, args.out_json, args.out_md, run=run, failures=failures)
    print(f"\nwrote {args.out_json} and {args.out_md}")
    for s in sections:
        state = f"FAILED: {s.failure}" if s.failure else s.status.value + (f" ({s.problem})" if s.problem else "")
        print(f"  {s.name:10} {state}")
    unreadable = any(s.status is Status.UNREADABLE for s in sections)
    return 1 if failures or unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
