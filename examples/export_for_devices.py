#!/usr/bin/env python3
"""Export one model for a list of devices with the Python API.

    python examples/export_for_devices.py                      # the demo model, five targets
    python examples/export_for_devices.py model.onnx --calib calibration/my.toml \\
        --targets rpi5,coral -o build/ --budget-ms 5

`compile_model` builds one bundle per target (quantized, exported, verified against the float model,
timed on this machine and predicted for the device) and writes report.json and report.html next to
them. The script then picks, for a latency budget, the most accurate bundle that fits it.
`edge-sdk targets list` shows every target id.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_sdk.compile import CompileResult, TargetBundle, compile_model
from edge_sdk.demo import DEMO_MODEL
from edge_sdk.errors import EdgeSdkError

# A CPU, the Coral Edge TPU, an Ethos-U microNPU, a phone GPU and the Hexagon NPU (as QDQ ONNX)
DEFAULT_TARGETS = "rpi5,coral-edgetpu-usb,ethos-u55-128,sd8gen2-adreno740,sd8gen2-hexagon"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export one model for a list of devices.")
    parser.add_argument("model", nargs="?", default=str(DEMO_MODEL), help="ONNX model (default: the demo model)")
    parser.add_argument("--calib", default="demo", help="calibration recipe, image folder or .npz (default: demo)")
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help="comma-separated target ids")
    parser.add_argument("-o", "--output", type=Path, default=Path("build"), help="bundle directory (replaced)")
    parser.add_argument("--budget-ms", type=float, help="pick the most accurate bundle at most this slow")
    args = parser.parse_args(argv)
    try:
        result = compile_model(
            args.model,
            [t.strip() for t in args.targets.split(",") if t.strip()],
            output=args.output,
            calibration=args.calib,
            on_stage=lambda text: print(f"  {text}", file=sys.stderr),
        )
    except EdgeSdkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print_table(result)
    if args.budget_ms is not None:
        print_choice(result.bundles, args.budget_ms)
    return 0


def print_table(result: CompileResult) -> None:
    header = ("target", "file", "precision", "size KB", "SQNR dB", "acc. pt", "host ms", "predicted ms")
    rows = [header, *(_row(b) for b in result.bundles)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        text, numbers = zip(row[:3], widths[:3], strict=True), zip(row[3:], widths[3:], strict=True)
        print("  ".join([*(c.ljust(w) for c, w in text), *(c.rjust(w) for c, w in numbers)]))
    for b in result.bundles:
        for note in (*b.warnings, *b.latency.notes):
            print(f"note: {b.target}: {note}")
    print(f"report: {result.output / 'report.html'} (and report.json)")


def _row(b: TargetBundle) -> tuple[str, ...]:
    out = b.fidelity.outputs[0]
    host = b.latency.host.stats if b.latency.host is not None else None
    return (
        b.target,
        b.artifact.path.name,
        b.precision.value,
        f"{b.artifact.size_bytes / 1024:.1f}",
        f"{out.sqnr_db:.1f}",  # inf: a float bundle identical to the model
        _drop(b),
        "-" if host is None else f"{host.median_ms:.3f}",  # this build machine, not the device
        "-" if b.latency.predicted is None else f"{b.latency.predicted.latency_ms:.3f}",
    )


def _drop(bundle: TargetBundle) -> str:
    """Top-1 accuracy change against the float model, in points; needs labelled evaluation data."""
    out = bundle.fidelity.outputs[0]
    if out.accuracy_quant is None or out.accuracy_float is None:
        return "-"
    return f"{100 * (out.accuracy_quant - out.accuracy_float):+.2f}"


def device_latency_ms(bundle: TargetBundle) -> float | None:
    """Measured on the device when it was (ProfileOptions(devices=...)), else the prediction.
    The host time is this build machine's, which says little about the device."""
    if bundle.latency.device is not None and bundle.latency.device.stats is not None:
        return bundle.latency.device.stats.median_ms
    return bundle.latency.predicted.latency_ms if bundle.latency.predicted is not None else None


def print_choice(bundles: tuple[TargetBundle, ...], budget_ms: float) -> None:
    fitting = [b for b in bundles if (ms := device_latency_ms(b)) is not None and ms <= budget_ms]
    if not fitting:
        print(f"no bundle is known to fit {budget_ms:g} ms (measured or predicted); relax the budget")
        return

    def accuracy(b: TargetBundle) -> tuple[float, float]:
        # labelled accuracy when the calibration recipe has an evaluation split, then SQNR as a tie-break
        out = b.fidelity.outputs[0]
        return (out.accuracy_quant or out.top1_agreement or 0.0, out.sqnr_db)

    best = max(fitting, key=accuracy)
    print(f"best within {budget_ms:g} ms: {best.target} ({best.precision.value}, {device_latency_ms(best):.3f} ms)")
    print(f"  deploy {best.directory}/")


if __name__ == "__main__":
    sys.exit(main())
