"""What every CLI module shares: the consoles, the JSON emitter, common options and the progress
display. Only the CLI modules (cli.py, cli_profile.py) print or exit."""

from __future__ import annotations

import json
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edge_sdk.errors import UsageError
from edge_sdk.serialize import to_jsonable

out = Console(highlight=False)
if not out.is_terminal:  # logs and pipes: wide enough for the tables, not the 80 columns default
    out.width = 120
err = Console(stderr=True, highlight=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
TargetsDirOpt = Annotated[
    list[Path] | None,
    typer.Option("--targets-dir", help="Extra directory of target .toml files (repeatable; also $EDGE_SDK_TARGETS)."),
]


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(document), indent=2) + "\n")


def parse_input_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values or []:
        name, sep, dims = value.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape:
            raise UsageError(f"--input-shape '{value}' is not NAME=DxDxD, e.g. --input-shape input=1x3x224x224")
        shapes[name] = shape
    return shapes


@contextmanager
def stage_display(*, enabled: bool):
    """A progress bar on stderr: the current stage, and a bar while calibration samples load. Only on a
    terminal: in a log or a pipe it would be noise around the one line an error gets."""
    if not enabled or not err.is_terminal:
        yield (lambda _text: None), None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def stage(text: str) -> None:
            bar.update(task, description=text, total=None, completed=0)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield stage, progress


# LiteRT's C++ side prints this on fd 2 for every interpreter it creates, and no setting turns it off.
LITERT_BANNER = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextmanager
def native_stderr_filtered():
    """Native writes to fd 2 (LiteRT, ONNX Runtime, subprocesses) go through a pipe that drops LiteRT's
    banner, so a user error stays one line; Python's own stderr keeps the original stream, so a
    terminal stays a terminal for the progress display."""
    try:
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        yield
        return
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    python_stderr = sys.stderr
    sys.stderr = open(original, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
    pump = threading.Thread(target=_pump, args=(read_end, original), daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes, so the pump reads to the end and stops
        pump.join(timeout=2.0)
        sys.stderr = python_stderr
        os.close(original)


def _pump(read_end: int, original: int) -> None:
    pending = b""
    with open(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if line.strip() != LITERT_BANNER]
            if kept:
                os.write(original, b"".join(kept))
    if pending and pending.strip() != LITERT_BANNER:
        os.write(original, pending)
