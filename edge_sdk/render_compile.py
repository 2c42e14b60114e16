"""The table `compile` and `demo` print: one row per target bundle."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text


def compiled(result, skipped: tuple[tuple[str, str], ...] = ()) -> Group:
    title = f"{result.model.name}: {len(result.bundles)} bundle(s) in {result.output}/ ({result.seconds:.1f} s)"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    devices = any(b.latency.device is not None for b in result.bundles)
    columns = ["target", "format", "size", "SQNR dB", "accuracy", "host ms", "predicted ms (band)"]
    columns += ["device ms"] if devices else []
    for column in columns:
        text = column in ("target", "format")
        table.add_column(column, justify="left" if text else "right", no_wrap=column != "format")
    for b in result.bundles:
        out = b.fidelity.outputs[0]
        row = [
            b.target,
            f"{b.format} {b.precision.value}",
            _size(b.artifact.size_bytes),
            "identical" if out.sqnr_db == float("inf") else f"{out.sqnr_db:.2f}",
            _accuracy(out),
            _median(b.latency.host),
            _predicted(b.latency.predicted),
        ]
        table.add_row(*row, *([_median(b.latency.device)] if devices else []))
    parts: list = [table]
    if result.calibration:
        parts.append(Text(f"calibrated on {result.calibration}", style="dim"))
    if result.evaluation:
        parts.append(Text(f"verified on {result.evaluation}", style="dim"))
    notes = [*result.notes]
    for b in result.bundles:
        notes += [f"{b.target}: {w}" for w in (*b.warnings, *b.latency.notes)]
    notes += [f"{target}: skipped, {reason}" for target, reason in skipped]
    parts += [Text(f"note: {n}") for n in notes]
    return Group(*parts)


def _size(size: int) -> str:
    return f"{size / 1024:.1f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MB"


def _accuracy(out) -> str:
    if out.accuracy_quant is not None and out.accuracy_float is not None:
        return f"{out.accuracy_quant:.2%} ({100 * (out.accuracy_quant - out.accuracy_float):+.1f})"
    return "-" if out.top1_agreement is None else f"agree {out.top1_agreement:.1%}"


def _median(run) -> str:
    return "-" if run is None or run.stats is None else f"{run.stats.median_ms:.3f}"


def _predicted(prediction) -> str:
    if prediction is None:
        return "-"
    if prediction.low_ms == prediction.high_ms:
        return f"{prediction.latency_ms:.3g}"
    return f"{prediction.latency_ms:.3g} ({prediction.low_ms:.2g}-{prediction.high_ms:.2g})"
