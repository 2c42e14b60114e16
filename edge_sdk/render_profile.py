"""Tables for the profiling commands: measurements, predictions, fleets and the results store."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from edge_sdk.measurement import BenchmarkResult


def measurement(result: BenchmarkResult, *, per_op_rows: int = 15) -> Group:
    stats, cond = result.stats, result.conditions
    assert stats is not None and cond is not None
    table = Table(title=f"{result.model_name} on {result.device or cond.hostname} ({result.source.value})")
    for column in ("median", "p90", "p99", "min", "std", "runs", "throughput", "init", "first run", "peak RSS"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{stats.median_ms:.3f} ms",
        f"{stats.p90_ms:.3f}",
        f"{stats.p99_ms:.3f}",
        f"{stats.min_ms:.3f}",
        f"{stats.std_ms:.3f}",
        str(stats.count),
        f"{stats.throughput_per_s:.1f}/s",
        _ms(result.init_ms),
        _ms(result.first_run_ms),
        "-" if result.peak_rss_mb is None else f"{result.peak_rss_mb:.0f} MB",
    )
    parts: list = [table, Text(conditions_line(result), style="dim")]
    if result.per_op:
        ops = Table(title=f"Slowest of {len(result.per_op)} ops (ONNX Runtime profiler, mean ms per run)")
        for column in ("node", "op", "ms", "share"):
            ops.add_column(column, justify="right" if column in ("ms", "share") else "left")
        total = sum(o.mean_ms for o in result.per_op) or 1.0
        for op in sorted(result.per_op, key=lambda o: -o.mean_ms)[:per_op_rows]:
            ops.add_row(Text(op.name), op.op_type, f"{op.mean_ms:.3f}", f"{op.mean_ms / total:.1%}")
        parts.append(ops)
    return Group(*parts)


def conditions_line(result: BenchmarkResult) -> str:
    c = result.conditions
    if c is None:
        return ""
    bits = [f"{c.runtime} {c.runtime_version}", f"{c.threads} thread(s)", c.cpu_model, f"governor {c.governor or '-'}"]
    if c.load_avg:
        bits.append("load " + " ".join(f"{v:.2f}" for v in c.load_avg))
    if c.temperature_c is not None:
        bits.append(f"{c.temperature_c:.1f} C")
    if c.throttled is not None:
        bits.append(f"throttled {c.throttled}")
    return ", ".join(bits)


def latency_table(results: list[BenchmarkResult], title: str) -> Table:
    """Measured and predicted latencies, one row per target; a prediction that had to be scaled from far
    away carries its warning (how to tighten the band) under the table."""
    table = Table(title=title, caption_justify="left", caption_style="yellow")
    for column in ("target", "source", "latency", "band / p90", "how"):
        table.add_column(column, justify="right" if column in ("latency", "band / p90") else "left")
    warnings = []
    for r in results:
        if r.prediction is not None:
            p = r.prediction
            band = f"{p.low_ms:.3f} - {p.high_ms:.3f}"
            runtime = r.extra.get("runtime")
            how = f"{runtime + ': ' if runtime else ''}{p.method} ({p.fit_models} models)"
            if r.extra.get("warning"):
                warnings.append(f"warning: {r.target}: {r.extra['warning']}")
        else:
            band = f"p90 {r.stats.p90_ms:.3f}" if r.stats else "-"
            how = conditions_line(r)
        table.add_row(r.target or "host", r.source.value, f"{r.latency_ms:.3f} ms", band, Text(how))
    if warnings:
        table.caption = Text("\n".join(warnings))
    return table


def runs_table(runs) -> Table:
    table = Table(title=f"{len(runs)} run(s) in the results store")
    for column in ("id", "when", "source", "model", "target", "device", "runtime", "threads", "latency"):
        table.add_column(column, justify="right" if column in ("id", "threads", "latency") else "left")
    for stored in runs:
        r = stored.result
        cond = r.conditions
        table.add_row(
            str(stored.run_id),
            r.created_at[:19],
            r.source.value,
            Text(r.model_name),
            r.target or "-",
            Text(r.device or "-"),
            cond.runtime if cond else "-",
            str(cond.threads) if cond else "-",
            f"{r.latency_ms:.3f} ms",
        )
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
