"""`edge-sdk compile` and `edge-sdk demo` (compile on the built-in model): parse, call
`compile_model`, render. Errors are turned into output in cli.main only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_sdk.cli_common import JsonOpt, TargetsDirOpt, emit_json, err, out, parse_input_shapes, stage_display
from edge_sdk.cli_profile import DbOpt, ThreadsOpt, parse_device
from edge_sdk.errors import UsageError
from edge_sdk.profile import Precision

DEMO_OUTPUT = Path("edge-sdk-demo")


def compile_cmd(
    model: Annotated[Path, typer.Argument(help="The float .onnx model.")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="Target id (repeatable).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Build directory (replaced when complete).")],
    calib: Annotated[str | None, typer.Option("--calib", help="Calibration data: recipe, folder, .npz/.npy.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Evaluation data (default: the recipe's split).")] = None,
    preprocess: Annotated[str | None, typer.Option(help="Preprocessing for image folders (e.g. imagenet).")] = None,
    precision: Annotated[Precision | None, typer.Option(help="Precision for every target (default: each's).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="tflite or onnx, where a target deploys both.")] = None,
    max_drop: Annotated[float | None, typer.Option("--max-drop", help="Accuracy budget in points.")] = None,
    min_sqnr: Annotated[float | None, typer.Option("--min-sqnr", help="Output SQNR budget in dB.")] = None,
    input_shape: Annotated[list[str] | None, typer.Option("--input-shape", help="NAME=1x3x224x224.")] = None,
    device: Annotated[
        list[str] | None, typer.Option("--device", help="TARGET=USER@HOST[:PORT]: measure there (repeatable).")
    ] = None,
    fleet: Annotated[Path | None, typer.Option("--fleet", help="Inventory .toml: measure on its devices.")] = None,
    identity: Annotated[Path | None, typer.Option(help="SSH private key for --device.")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="known_hosts file (default ~/.ssh/known_hosts).")] = None,
    accept_new_host_key: Annotated[
        bool, typer.Option("--accept-new-host-key", help="Trust and record an unknown host key (never a changed one).")
    ] = False,
    threads: ThreadsOpt = None,
    no_host: Annotated[bool, typer.Option("--no-host", help="Do not time the artifacts on this host.")] = False,
    no_predict: Annotated[bool, typer.Option("--no-predict", help="Do not predict device latencies.")] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
    targets_dir: TargetsDirOpt = None,
) -> None:
    """Model to deployable bundles, one per target, and one report (report.json, report.html)."""
    from edge_sdk.compile import compile_model
    from edge_sdk.compile_profile import ProfileOptions

    dirs = tuple(targets_dir or ())
    options = ProfileOptions(
        host=not no_host,
        predict=not no_predict,
        threads=threads,
        devices=tuple(_device(d, target, identity, dirs) for d in device or ()),
        fleet=_fleet(fleet, dirs),
        known_hosts=known_hosts,
        accept_unknown_host=accept_new_host_key,
        db=db,
        targets_dirs=dirs,
    )
    with stage_display(enabled=not json_out) as (stage, progress):
        result = compile_model(
            model,
            target,
            output=output,
            calibration=calib,
            evaluation=data,
            preprocess=preprocess,
            precision=precision,
            fmt=fmt,
            max_drop=max_drop,
            min_sqnr_db=min_sqnr,
            input_shapes=parse_input_shapes(input_shape),
            targets_dirs=dirs,
            profiling=options,
            on_stage=stage,
            on_progress=progress,
        )
    _show(result, json_out)


def demo_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="Build directory.")] = DEMO_OUTPUT,
    json_out: JsonOpt = False,
    targets_dir: TargetsDirOpt = None,
) -> None:
    """Compile the built-in demo model (MNIST digits) for every target edge-sdk can build for."""
    from edge_sdk.demo import run_demo

    with stage_display(enabled=not json_out) as (stage, _):
        result = run_demo(output=output, targets_dirs=tuple(targets_dir or ()), on_stage=stage)
    _show(result.compiled, json_out, skipped=result.skipped)


def _device(text: str, targets: list[str], identity: Path | None, dirs: tuple[Path, ...]):
    name, sep, address = text.partition("=")
    if not sep:
        if len(targets) != 1:
            raise UsageError(f"--device '{text}': with several targets write TARGET=USER@HOST, e.g. rpi5={text}")
        name, address = targets[0], text
    from edge_sdk.targets import load_target

    return parse_device(address, load_target(name, dirs).id, identity=identity)


def _fleet(path: Path | None, dirs: tuple[Path, ...]):
    if path is None:
        return None
    from edge_sdk.fleet import load_inventory

    return load_inventory(path, dirs)


def _show(result, json_out: bool, *, skipped: tuple[tuple[str, str], ...] = ()) -> None:
    from edge_sdk import render_compile

    if json_out:
        emit_json({**result.report, "output": str(result.output), "skipped": [list(s) for s in skipped]})
        return
    out.print(render_compile.compiled(result, skipped))
    err.print(f"bundles and report in {result.output}/ (open {result.output / 'report.html'})")
