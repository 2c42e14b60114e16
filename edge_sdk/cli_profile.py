"""The profiling commands of the CLI (profile, bench, results): parse, call one public function,
render. Registered on the app in cli.py, which owns error handling and exit codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from edge_sdk.cli_common import JsonOpt, TargetsDirOpt, emit_json, err, out, stage_display
from edge_sdk.errors import UsageError

results_app = typer.Typer(no_args_is_help=True, help="Every measurement and prediction, from the results store.")

DbOpt = Annotated[Path | None, typer.Option("--db", help="Results store (default: ~/.cache/edge-sdk/results.sqlite).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="Threads (default: every core).")]
RunsOpt = Annotated[int, typer.Option("--runs", help="Timed runs (at most).")]
BudgetOpt = Annotated[float, typer.Option("--budget-s", help="Stop timing after this many seconds.")]
_DEVICE = re.compile(r"^(?P<user>[^@\s]+)@(?P<host>[^:\s]+)(?::(?P<port>\d+))?$")


def parse_device(text: str, target: str | None, *, identity: Path | None = None, python: str = "python3"):
    from edge_sdk.remote import Device

    match = _DEVICE.match(text)
    if match is None:
        raise UsageError(f"--device '{text}' is not USER@HOST[:PORT], e.g. --device pi@raspberrypi.local")
    port = int(match["port"] or 22)
    key = str(identity) if identity is not None else None
    return Device(host=match["host"], user=match["user"], port=port, target=target, identity_file=key, python=python)


def store_results(results, db: Path | None) -> list[int]:
    from edge_sdk.store import open_store

    with open_store(db) as store:
        return store.add_many(results)


def profile_cmd(
    model: Annotated[
        Path | None,
        typer.Argument(help="A .onnx or .tflite model (any, not only edge-sdk's); optional with --calibrate"),
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", "-t", help="Predict for this target (repeatable); host measures.")
    ] = None,
    per_op: Annotated[bool, typer.Option("--per-op", help="Per-node times from ONNX Runtime's profiler.")] = False,
    threads: ThreadsOpt = None,
    runs: RunsOpt = 100,
    budget_s: BudgetOpt = 10.0,
    db: DbOpt = None,
    json_out: JsonOpt = False,
    targets_dir: TargetsDirOpt = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="First measure edge-sdk's calibration models here and store them (about 30 s), so predictions "
            "for --target devices rest on more than MODEL. --runs and --budget-s cap its 50 runs / 0.5 s per model.",
        ),
    ] = False,
) -> None:
    """Measure MODEL here (LiteRT for .tflite, ONNX Runtime for .onnx), or predict it on --target devices."""
    from edge_sdk.benchmark import benchmark

    if calibrate:
        _calibrate(
            db, threads=threads, runs=runs, budget_s=budget_s, json_out=json_out, model_follows=model is not None
        )
    if model is None:
        if calibrate:
            return
        raise UsageError("profile needs a MODEL (.onnx or .tflite), or --calibrate to calibrate this host")
    targets = list(dict.fromkeys(target or ["host"]))
    results = []
    if "host" in targets:
        with stage_display(enabled=not json_out) as (stage, progress):
            stage(f"timing {model.name} on this host")
            results.append(
                benchmark(model, threads=threads, runs=runs, budget_s=budget_s, per_op=per_op, progress=progress)
            )
    others = [t for t in targets if t != "host"]
    if others:
        from edge_sdk.predict import predict_targets

        failed: list[tuple[str, str]] = []
        results += predict_targets(
            model, others, threads=threads, db=db, targets_dirs=targets_dir or (), failures=failed
        )
        if failed and not results:
            raise UsageError(failed[0][1])
        for target_id, reason in failed:
            err.print(f"[yellow]note:[/] no prediction for {target_id}: {reason}", soft_wrap=True)
    ids = store_results(results, db)
    _show(results, ids, json_out, title=f"{model.name}: measured here and predicted")


def _calibrate(
    db: Path | None, *, threads: int | None, runs: int, budget_s: float, json_out: bool, model_follows: bool
) -> None:
    from edge_sdk.calibrate import CALIBRATION_BUDGET_S, CALIBRATION_RUNS, calibrate_host

    with stage_display(enabled=not json_out) as (stage, progress):

        def step(done: int, total: int, what: str) -> None:
            stage(f"calibrating this host: {what}")
            if progress is not None:
                progress(done, total)

        results = calibrate_host(
            db=db,
            threads=(threads,) if threads else None,
            runs=min(runs, CALIBRATION_RUNS),
            budget_s=min(budget_s, CALIBRATION_BUDGET_S),
            progress=step,
        )
    models = len({Path(r.model_name).stem for r in results})
    if json_out and not model_follows:
        emit_json({"calibration": {"runs_stored": len(results), "models": models}})
        return
    # with a MODEL to follow, stdout keeps its one JSON document
    (err if json_out else out).print(
        f"calibrated this host: stored {len(results)} run(s) of {models} models in the results store"
    )


def bench_cmd(
    model: Annotated[Path, typer.Argument(help="A .tflite or .onnx model to run on the device(s).")],
    device: Annotated[str | None, typer.Option("--device", help="USER@HOST[:PORT] over SSH.")] = None,
    fleet: Annotated[Path | None, typer.Option("--fleet", help="Inventory .toml of devices (run in parallel).")] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="The --device's target id.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Only fleet devices with this label.")] = None,
    threads: ThreadsOpt = None,
    runs: RunsOpt = 100,
    budget_s: BudgetOpt = 10.0,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Give up on a device after this long.")] = 300.0,
    known_hosts: Annotated[Path | None, typer.Option(help="known_hosts file (default ~/.ssh/known_hosts).")] = None,
    identity: Annotated[
        Path | None, typer.Option(help="SSH private key for --device (default: agent, ~/.ssh).")
    ] = None,
    python: Annotated[str, typer.Option(help="The --device's Python (needs numpy and a runtime).")] = "python3",
    accept_new_host_key: Annotated[
        bool, typer.Option("--accept-new-host-key", help="Trust and record an unknown host key (never a changed one).")
    ] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
    targets_dir: TargetsDirOpt = None,
) -> None:
    """Run MODEL on real devices over SSH with the standalone runner, and store what they measure."""
    if (device is None) == (fleet is None):
        raise UsageError("bench needs exactly one of --device USER@HOST[:PORT] or --fleet inventory.toml")
    if device is not None:
        from edge_sdk.remote import bench_device
        from edge_sdk.targets import load_target

        target_id = load_target(target, targets_dir or ()).id if target else None
        with err.status(f"running {model.name} on {device} ..."):
            result = bench_device(
                parse_device(device, target_id, identity=identity, python=python),
                model,
                threads=threads,
                runs=runs,
                budget_s=budget_s,
                timeout_s=timeout_s,
                known_hosts=known_hosts,
                accept_unknown_host=accept_new_host_key,
            )
        result = _with_target(result, target_id)
        _show([result], store_results([result], db), json_out, title=f"{model.name} on {device}")
        return
    from edge_sdk.fleet import bench_fleet, load_inventory

    assert fleet is not None
    inventory = load_inventory(fleet, targets_dir or ())
    with err.status(f"running {model.name} on {len(inventory.select(label))} device(s) ..."):
        report = bench_fleet(
            inventory,
            model,
            threads=threads,
            runs=runs,
            budget_s=budget_s,
            timeout_s=timeout_s,
            known_hosts=known_hosts,
            accept_unknown_host=accept_new_host_key,
            labels=label,
        )
    targets = {d.name: d.device.target for d in inventory.devices}
    results = [_with_target(run.result, targets.get(run.name)) for run in report.results]
    ids = store_results(results, db)
    _show(results, ids, json_out, title=f"{model.name} on {fleet.name}", failures=report.errors)
    if report.errors:
        raise typer.Exit(code=9)


def _with_target(result, target_id: str | None):
    from dataclasses import replace

    return result if target_id is None or result.target else replace(result, target=target_id)


def _show(results, ids: list[int], json_out: bool, *, title: str, failures=()) -> None:
    from edge_sdk import render_profile
    from edge_sdk.serialize import to_jsonable

    if json_out:
        runs = [{"id": i, **to_jsonable(r)} for i, r in zip(ids, results, strict=True)]
        emit_json({"runs": runs, "failures": [to_jsonable(f) for f in failures]})
        return
    for result in results:
        if result.stats is not None:
            out.print(render_profile.measurement(result))
    out.print(render_profile.latency_table(results, title))
    for failure in failures:
        err.print(f"[red]{failure.name}[/] ({failure.device}): {failure.message}", soft_wrap=True)
    out.print(f"stored as run(s) {', '.join(map(str, ids))} in the results store")


@results_app.command("list")
def results_list(
    target: Annotated[str | None, typer.Option("--target", "-t", help="Only this target.")] = None,
    source: Annotated[str | None, typer.Option(help="host, device or predicted.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many, newest first.")] = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List stored runs, newest first."""
    from edge_sdk import render_profile
    from edge_sdk.serialize import to_jsonable
    from edge_sdk.store import open_store

    with open_store(db) as store:
        runs = store.list_runs(target=target, source=source, limit=limit)
    if json_out:
        emit_json({"runs": [{"id": r.run_id, **to_jsonable(r.result)} for r in runs]})
    else:
        out.print(render_profile.runs_table(runs))


@results_app.command("show")
def results_show(
    run_id: Annotated[int, typer.Argument(help="The run's id (from `results list`).")],
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One stored run in full."""
    from edge_sdk import render_profile
    from edge_sdk.serialize import to_jsonable
    from edge_sdk.store import open_store

    with open_store(db) as store:
        stored = store.get(run_id)
    if json_out:
        emit_json({"id": stored.run_id, **to_jsonable(stored.result)})
    elif stored.result.stats is not None:
        out.print(render_profile.measurement(stored.result))
    else:
        out.print(render_profile.latency_table([stored.result], f"run {stored.run_id}"))


@results_app.command("export")
def results_export(
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write the runs as CSV here.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json-file", help="Write the runs as JSON here.")] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Only this target.")] = None,
    db: DbOpt = None,
) -> None:
    """Export stored runs to CSV and/or JSON (written atomically)."""
    from edge_sdk.store import export_csv, export_json, open_store

    if csv_path is None and json_path is None:
        raise UsageError("results export needs --csv FILE and/or --json-file FILE")
    with open_store(db) as store:
        runs = store.list_runs(target=target)
    for path, write in ((csv_path, export_csv), (json_path, export_json)):
        if path is not None:
            write(path, runs)
            out.print(f"wrote {len(runs)} run(s) to {path}")
