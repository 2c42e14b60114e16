#!/usr/bin/env python3
"""Benchmark one model on every device of an inventory and compare with the prediction.

    python examples/benchmark_fleet.py model.onnx --fleet fleet.toml [--label lab] [--threads 4]

Every device runs the model over SSH at the same time (edge_sdk.bench_fleet copies a small runner
and the model, times it and cleans up); each device needs Python 3 with numpy and ONNX Runtime or
LiteRT. The script prints what each measured next to what edge-sdk predicts for its target, and
exits with 9 when any device failed (the others are still reported).

The inventory (see also examples/fleet.example.toml):

    [[device]]
    name = "pi5-desk"                    # unique in the file
    host = "192.168.1.50"
    user = "pi"
    target = "rpi5"                      # a target id or alias: edge-sdk targets list
    labels = ["lab", "arm64"]            # optional, for --label

    [[device]]
    name = "jetson"
    host = "jetson.local"
    user = "nvidia"
    port = 2222                          # optional, default 22
    target = "jetson-orin-nano-cpu"
    identity_file = "keys/id_jetson"     # optional, relative to this file; default: ssh agent, ~/.ssh
    python = "/opt/venv/bin/python3"     # optional, default python3

Host keys are checked against ~/.ssh/known_hosts (or --known-hosts), as OpenSSH does: `ssh` to each
device once first. `edge-sdk bench MODEL --fleet fleet.toml` does the same and stores the runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import edge_sdk
from edge_sdk.errors import DeviceError, EdgeSdkError
from edge_sdk.fleet import DeviceFailure, DeviceRun, FleetReport, Inventory, load_inventory
from edge_sdk.measurement import Prediction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark one model on every device of an inventory.")
    parser.add_argument("model", type=Path, help="the model to run (.onnx, or .tflite without a prediction)")
    parser.add_argument("--fleet", type=Path, required=True, help="inventory TOML ([[device]] tables)")
    parser.add_argument("--label", action="append", help="only devices with this label (repeatable: all of them)")
    parser.add_argument("--known-hosts", type=Path, help="known_hosts file (default ~/.ssh/known_hosts)")
    parser.add_argument("--threads", type=int, help="threads on each device (default: the runtime's choice)")
    parser.add_argument("--runs", type=int, help="timed runs per device (default: as many as fit in 10 s)")
    args = parser.parse_args(argv)
    try:
        inventory = load_inventory(args.fleet)  # checked before any connection: a typo fails fast
        report = edge_sdk.bench_fleet(
            inventory,
            args.model,
            threads=args.threads,
            runs=args.runs,
            known_hosts=args.known_hosts,
            labels=args.label,
            on_result=progress,  # devices finish in any order
        )
    except EdgeSdkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    predicted, notes = predictions(args.model, inventory, report, args.threads)
    print_report(inventory, report, predicted)
    for note in notes:
        print(f"note: {note}")
    return 0 if report.ok else DeviceError.exit_code


def progress(outcome: DeviceRun | DeviceFailure) -> None:
    print(f"  {outcome.name}: {'failed' if isinstance(outcome, DeviceFailure) else 'measured'}", file=sys.stderr)


def predictions(
    model: Path, inventory: Inventory, report: FleetReport, threads: int | None
) -> tuple[dict[str, Prediction], list[str]]:
    """The predicted latency for each measured device's target, by target id, and why some are missing.

    Predictions are fitted on the published latencies and the results store; the runs above are not
    stored, so no prediction has seen the measurement it is compared with."""
    measured = {r.name for r in report.results}
    targets = sorted({str(d.device.target) for d in inventory.devices if d.name in measured})
    if not targets:
        return {}, []
    if model.suffix != ".onnx":
        return {}, [f"no predictions for {model.name}: predict reads the ONNX model"]
    failures: list[tuple[str, str]] = []  # a target that cannot be predicted lands here instead of raising
    try:
        results = edge_sdk.predict_targets(model, targets, threads=threads, failures=failures)
    except EdgeSdkError as exc:  # the measurements are worth printing without predictions
        return {}, [f"no predictions: {exc}"]
    found = {r.target: r.prediction for r in results if r.target is not None and r.prediction is not None}
    return found, [f"no prediction for {target}: {reason}" for target, reason in failures]


def print_report(inventory: Inventory, report: FleetReport, predicted: dict[str, Prediction]) -> None:
    targets = {d.name: str(d.device.target) for d in inventory.devices}
    header = ("device", "target", "median ms", "p90 ms", "runs", "runtime", "predicted ms", "measured/predicted")
    rows = [header]
    for run in report.results:
        stats, conditions = run.result.stats, run.result.conditions
        target = targets[run.name]
        guess = predicted.get(target)
        rows.append(
            (
                run.name,
                target,
                f"{stats.median_ms:.3f}" if stats else "-",
                f"{stats.p90_ms:.3f}" if stats else "-",
                str(stats.count) if stats else "-",
                f"{conditions.runtime} {conditions.runtime_version}" if conditions else "-",
                f"{guess.latency_ms:.3f} ({guess.low_ms:.3g}-{guess.high_ms:.3g})" if guess else "-",
                # far from 1: the fit is off for this device; runs stored with `edge-sdk bench --fleet` refine it
                f"{stats.median_ms / guess.latency_ms:.2f}" if stats and guess else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for failure in report.errors:
        print(f"FAILED {failure.name}: {failure.message}")  # the message names user@host:port


if __name__ == "__main__":
    sys.exit(main())
