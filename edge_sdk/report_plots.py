"""The five plots of report.html, each one <figure> with an inline SVG (edge_sdk.report_svg) and a caption:
latency per target, measured against predicted, accuracy against latency, time per op class and
per-layer SQNR."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edge_sdk import report_svg as svg
from edge_sdk.report_svg import esc
from edge_sdk.report_view import Layer, TargetView, as_map, as_num, dig, fmt_ms, html_table

OP_ORDER = ("conv", "depthwise", "fc", "matmul", "elementwise", "pool", "move", "quantize", "fallback", "transfer")
OP_COLOURS = svg.PALETTE + svg.PALETTE_LIGHT
MAX_LINES = len(svg.PALETTE)  # more lines than colours stop being readable
WORST_LAYERS = 5


def figure(plot_id: str, body: str, caption: str) -> str:
    return f'<figure id="{plot_id}">{body}<figcaption>{caption}</figcaption></figure>'


def _latency_plot(targets: Sequence[TargetView]) -> str:
    rows = []
    for t in targets:
        p, bar = t.predicted, None
        if p is not None:
            band = (
                f" ({fmt_ms(p.low_ms)}-{fmt_ms(p.high_ms)})" if p.low_ms is not None and p.high_ms is not None else ""
            )
            bar = svg.Span(
                p.median_ms, p.low_ms, p.high_ms, f"{t.id}: predicted {fmt_ms(p.median_ms)} ms{band}, {p.how}"
            )
        dots = tuple(
            svg.Dot(m.median_ms, shape, svg.INK, f"{t.id}: {where}-measured {fmt_ms(m.median_ms)} ms, {m.how}")
            for m, where, shape in ((t.host, "host", svg.Shape.RING), (t.device, "device", svg.Shape.DIAMOND))
            if m is not None
        )
        rows.append(svg.BarRow(t.id, t.colour, bar, dots))
    keys = (
        svg.Key("predicted (whisker: low-high)", "#9ca3af"),
        svg.Key("measured on the build host", svg.INK, svg.Shape.RING),
        svg.Key("measured on the device", svg.INK, svg.Shape.DIAMOND),
    )
    body = svg.range_bars(rows, keys, x_title="latency per inference (ms)", label="latency per target")
    caption = (
        "Latency per target: bars are predictions with their low-high band; a ring is the artifact timed on "
        "this build machine, a diamond the artifact timed on the device. Rows without data say why in the notes."
    )
    return figure("plot-latency", body, caption)


def _measured_vs_predicted_plot(targets: Sequence[TargetView]) -> str:
    points = []
    for t in targets:
        if t.predicted is None or t.measured is None:
            continue
        (m, where), p = t.measured, t.predicted
        title = f"{t.id}: predicted {fmt_ms(p.median_ms)} ms, {where}-measured {fmt_ms(m.median_ms)} ms"
        points.append(svg.Point(p.median_ms, m.median_ms, t.id, t.colour, title, p.low_ms, p.high_ms))
    body = svg.scatter(
        points,
        x_title="predicted latency (ms)",
        y_title="measured latency (ms)",
        label="measured against predicted latency",
        empty="no target has both a measurement and a prediction",
        diagonal=True,
    )
    caption = (
        "Measured against predicted latency; points on the dashed line were predicted exactly, the horizontal "
        "line is the predicted band. A device target counts only when timed on the device (edge-sdk bench "
        "--device); the build machine's timing is compared only for the target host."
    )
    return figure("plot-measured-vs-predicted", body, caption)


# the y axis of the accuracy-latency plot: the first of these that any target has
ACCURACY_METRICS: tuple[tuple[str, Callable[[TargetView], float | None]], ...] = (
    ("quantized accuracy (%)", lambda t: None if t.accuracy[1] is None else 100 * t.accuracy[1]),
    ("top-1 agreement with the float model (%)", lambda t: None if t.top1 is None else 100 * t.top1),
    ("worst output SQNR (dB)", lambda t: t.worst_sqnr_db),
)


def _accuracy_latency_plot(targets: Sequence[TargetView]) -> str:
    y_title, metric = next(
        ((n, f) for n, f in ACCURACY_METRICS if any(f(t) is not None for t in targets)), ACCURACY_METRICS[0]
    )
    points, missing = [], []
    for t in targets:
        y, latency = metric(t), t.latency
        if y is None or latency is None:
            missing.append(t.id)
            continue
        title = f"{t.id}: {fmt_ms(latency[0].median_ms)} ms ({latency[1]}), {y_title.split(' (')[0]} {y:.2f}"
        points.append(svg.Point(latency[0].median_ms, y, t.id, t.colour, title))
    body = svg.scatter(
        points,
        x_title="latency (ms): device-measured, else predicted, else host-measured",
        y_title=y_title,
        label="accuracy against latency",
        empty="no target has both a latency and a " + y_title.split(" (")[0],
        diagonal=False,
    )
    left_out = (
        f" Not plotted (no latency or no {esc(y_title.split(' (')[0])}): {esc(', '.join(missing))}." if missing else ""
    )
    return figure(
        "plot-accuracy-latency", body, f"{esc(y_title.capitalize())} against latency, one point per target.{left_out}"
    )


def _op_breakdown_plot(targets: Sequence[TargetView]) -> str:
    breakdowns = [{str(k): v for k, v in as_map(dig(t.raw, ("op_breakdown", "ms"))).items()} for t in targets]
    found = [k for ms in breakdowns for k in ms]
    classes = [c for c in OP_ORDER if c in found] + sorted({c for c in found if c not in OP_ORDER})
    colours = {c: OP_COLOURS[i % len(OP_COLOURS)] for i, c in enumerate(classes)}
    rows, sources = [], dict[str, list[str]]()
    for t, ms in zip(targets, breakdowns, strict=True):
        source = str(dig(t.raw, ("op_breakdown", "source")) or "unknown source")
        values = [(c, v) for c in classes if (v := as_num(ms.get(c))) is not None and v > 0]
        segments = tuple(svg.Segment(v, colours[c], f"{t.id}: {c} {fmt_ms(v)} ms ({source})") for c, v in values)
        rows.append(svg.StackRow(t.id, segments, f"{fmt_ms(sum(v for _, v in values))} ms ({source})"))
        sources.setdefault(source if segments else "no breakdown", []).append(t.id)
    keys = [svg.Key(c, colours[c]) for c in classes]
    body = svg.stacked_bars(rows, keys, x_title="time per inference by op class (ms)", label="time by op class")
    how = "; ".join(f"{esc(s)}: {esc(', '.join(ids))}" for s, ids in sources.items())
    return figure("plot-op-breakdown", body, f"Time per op class, stacked. {how}.")


def _worst(layers: Sequence[Layer]) -> list[int]:
    finite = [(layer.sqnr_db, i) for i, layer in enumerate(layers) if layer.sqnr_db is not None]
    return [i for _, i in sorted(finite)[:WORST_LAYERS]]


def _layer_lines(targets: Sequence[TargetView]) -> list[tuple[str, str, tuple[Layer, ...]]]:
    """(target ids, colour, layers) per distinct per-layer result: targets whose artifacts come from one
    quantized model have the same list and share a line, in the first one's colour."""
    groups: dict[tuple[Layer, ...], list[TargetView]] = {}
    for t in targets:
        if t.layers:
            groups.setdefault(t.layers, []).append(t)
    return [(", ".join(t.id for t in ts), ts[0].colour, layers) for layers, ts in groups.items()]


def _layer_plot(targets: Sequence[TargetView]) -> str:
    lines = _layer_lines(targets)
    series, worst_rows = [], []
    for who, colour, layers in lines[:MAX_LINES]:
        worst = _worst(layers)
        titles = tuple(
            f"{who}: #{i} {x.tensor} ({x.op}) " + ("identical" if x.sqnr_db is None else f"{x.sqnr_db:.1f} dB")
            for i, x in enumerate(layers)
        )
        series.append(svg.Series(who, colour, tuple(x.sqnr_db for x in layers), titles, frozenset(worst)))
        for rank, i in enumerate(worst, 1):
            x = layers[i]
            worst_rows.append(
                [esc(who), str(rank), str(i), f"<code>{esc(x.tensor)}</code>", esc(x.op), f"{x.sqnr_db:.1f}"]
            )
    body = svg.line_chart(
        series,
        x_title="layer (execution order)",
        y_title="SQNR (dB)",
        label="per-layer SQNR",
        empty="no layer sensitivity in this build",
        top_label="on this line: identical to float (no error)",
    )
    skipped = "; ".join(who for who, _, _ in lines[MAX_LINES:])
    caption = (
        "Per-layer SQNR of each quantized tensor against its float value, in execution order (targets with the "
        f"same results share a line); circled: the {WORST_LAYERS} worst layers of each line"
        + (", listed below." if worst_rows else ".")
        + (f" Not drawn (more than {MAX_LINES} lines): {esc(skipped)}." if skipped else "")
    )
    head = ("target", "rank", "layer", "tensor", "op", "SQNR dB")
    table = html_table(head, worst_rows, numeric_from=5) if worst_rows else ""
    return figure("plot-layer-sensitivity", body, caption) + table


PLOTS = (_latency_plot, _measured_vs_predicted_plot, _accuracy_latency_plot, _op_breakdown_plot, _layer_plot)
