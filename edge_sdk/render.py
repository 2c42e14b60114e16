"""Rich renderables for the CLI. Builds tables only; cli.py prints them."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from edge_sdk.inspection import Inspection, TargetReport
from edge_sdk.profile import TargetProfile
from edge_sdk.support import Where, rule_text


def count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def size(n: float) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def targets_table(profiles: list[TargetProfile]) -> Table:
    table = Table(title="Targets (default precision in bold)")
    table.add_column("id", no_wrap=True)
    for column in ("kind", "name", "precisions", "formats", "memory"):
        table.add_column(column)
    for p in profiles:
        precisions = ", ".join(
            f"[bold]{x.value}[/]" if x is p.deploy.default_precision else x.value for x in p.deploy.precisions
        )
        table.add_row(
            p.id + ("" if p.builtin else " (user)"),
            p.kind.value,
            p.name,
            precisions,
            ", ".join(p.deploy.formats),
            _memory(p),
        )
    return table


def _memory(p: TargetProfile) -> str:
    parts = []
    if p.memory.ram_mb:
        parts.append("RAM " + "/".join(f"{m}M" if m < 1024 else f"{m / 1024:g}G" for m in p.memory.ram_mb))
    if p.memory.sram_kb:
        parts.append(f"SRAM {p.memory.sram_kb:g} KB")
    if p.memory.flash_mb:
        parts.append(f"flash {p.memory.flash_mb:g} MB")
    return ", ".join(parts) or "-"


def target_detail(p: TargetProfile) -> Group:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    c, m, d, q = p.compute, p.memory, p.deploy, p.quantization
    rows = [
        ("id", p.id + (f" (aliases: {', '.join(p.aliases)})" if p.aliases else "")),
        ("name", p.name),
        ("kind", p.kind.value),
        ("description", p.description),
        ("soc", p.soc or "-"),
        ("unit", c.unit),
        ("cores", str(c.cores or "-")),
        ("clock", f"{c.clock_mhz:g} MHz" if c.clock_mhz else "-"),
        ("ISA", ", ".join(c.isa) or "-"),
        ("peak", ", ".join(f"{k.value} {v:g} GOPS" for k, v in c.peak_gops.items()) or "-"),
        ("memory", _memory(p) + f"; weights in {m.weights_in}, activations in {m.activations_in}"),
        ("bandwidth", f"{m.bandwidth_gbps:g} GB/s ({m.bandwidth_kind})" if m.bandwidth_gbps else "-"),
        ("formats", ", ".join(d.formats)),
        ("runtimes", ", ".join(d.runtimes)),
        ("precisions", ", ".join(x.value for x in d.precisions) + f" (default {d.default_precision.value})"),
        ("weights", _spec(q.weights)),
        ("activations", _spec(q.activations)),
        (
            "partitioning",
            f"{p.ops.partitioning.value}; unsupported ops -> {p.ops.fallback_unit}"
            if p.ops.fallback.value == "cpu"
            else f"{p.ops.partitioning.value}; unsupported ops cannot run",
        ),
        ("file", str(p.path)),
    ]
    for fixed in q.fixed_outputs:
        rows.append(("fixed output", f"{fixed.op}: scale {fixed.scale:g}, zero point {fixed.zero_point} ({fixed.why})"))
    for key, value in rows:
        facts.add_row(key, Text(value))
    ops = Table(title=f"Ops on {c.unit}" + (f" (source: {p.ops.source})" if p.ops.source else ""))
    ops.add_column("ONNX op")
    ops.add_column("limits")
    for name, rule in p.ops.rules.items():
        ops.add_row(name, Text(rule_text(rule) + (f". {rule.note}" if rule.note else "")))
    notes = Text("sources:\n" + "\n".join(f"  - {s}" for s in p.sources))
    if p.unconfirmed:
        notes.append("\nunconfirmed:\n" + "\n".join(f"  - {s}" for s in p.unconfirmed), style="yellow")
    return Group(facts, ops, notes)


def _spec(s) -> str:
    flags = ["per-channel" if s.per_channel else "per-tensor", "symmetric" if s.symmetric else "asymmetric"]
    if s.narrow_range:
        flags.append("narrow range")
    return f"{s.dtype} ({', '.join(flags)})"


def inspection(result: Inspection, *, per_node: bool = False) -> Group:
    m, t = result.model, result.totals
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("model", Text(f"{m.name} ({m.source}), opset {m.opset}, sha256 {m.sha256[:12]}"))
    head.add_row("inputs", Text(", ".join(f"{s.name} {'x'.join(map(str, s.shape))} {s.dtype}" for s in m.inputs)))
    head.add_row("outputs", Text(", ".join(f"{s.name} {'x'.join(map(str, s.shape))} {s.dtype}" for s in m.outputs)))
    head.add_row("simplified", "; ".join(m.passes) or "nothing to simplify")
    head.add_row(
        "totals",
        Text(
            f"{t.nodes} nodes, {count(t.macs)} MACs, {count(t.params)} params "
            f"({size(t.weights_bytes)}), peak activations {size(t.peak_activation_bytes)} "
            f"at '{t.peak_at_node}'"
        ),
    )
    head.add_row("ops", ", ".join(f"{k} {v}" for k, v in t.op_counts.items()))
    parts: list = [head]
    if per_node:
        parts.append(_nodes_table(result))
    if result.targets:
        parts.append(targets_summary(result.targets))
        parts.append(_fit_table(result.targets))
        for report in result.targets:
            if report.fallbacks:
                parts.append(_fallbacks(report))
    return Group(*parts)


def _nodes_table(result: Inspection) -> Table:
    table = Table(title="Nodes (execution order)")
    for column in ("node", "op", "output shape", "MACs", "params", "read", "written"):
        table.add_column(column, justify="right" if column in ("MACs", "params", "read", "written") else "left")
    for n in result.nodes:
        shape = ", ".join("x".join(map(str, s)) for s in n.output_shapes)
        table.add_row(
            Text(n.name), n.op_type, shape, count(n.macs), count(n.params), size(n.bytes_read), size(n.bytes_written)
        )
    return table


def targets_summary(reports: tuple[TargetReport, ...]) -> Table:
    table = Table(title="Placement per target (nodes: on the unit / on the fallback CPU / nowhere)")
    table.add_column("target", no_wrap=True)
    for column in (
        "precision",
        "nodes",
        "MACs on unit",
        "partitions (on unit)",
        "transposes",
        "weights",
        "peak act.",
        "fits",
    ):
        table.add_column(column)
    for r in reports:
        fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]unknown[/]"}[r.fit.ok]
        table.add_row(
            r.target,
            r.precision.value,
            f"{r.on_unit}/{r.on_fallback}/{r.unsupported}",
            f"{r.macs_on_unit_pct:.1f}%",
            f"{r.partitions} ({r.unit_partitions})",
            str(r.transposes),
            size(r.weights_bytes),
            size(r.peak_activation_bytes),
            fits,
        )
    return table


def _fit_table(reports: tuple[TargetReport, ...]) -> Table:
    table = Table(title="Memory fit (weights and peak activations at the target's precision)")
    table.add_column("target", no_wrap=True)
    table.add_column("fits")
    table.add_column("why")
    for r in reports:
        fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]unknown[/]"}[r.fit.ok]
        table.add_row(r.target, fits, Text(r.fit.reason))
    return table


def _fallbacks(r: TargetReport) -> Table:
    side = {Where.FALLBACK: r.fallback_unit, Where.UNSUPPORTED: "nowhere (unsupported)"}
    table = Table(title=f"{r.target}: nodes not on {r.unit} (-> {side[Where.FALLBACK]})", title_justify="left")
    table.add_column("op")
    table.add_column("nodes", justify="right")
    table.add_column("reason")
    for f in r.fallbacks:
        table.add_row(f.op_type, str(f.nodes), Text(f.reason))
    return table


def _fidelity_table(fidelity, title: str) -> Table:
    table = Table(title=title)
    for column in ("output", "SQNR dB", "cosine", "max abs err", "top-1 agreement", "accuracy float", "accuracy quant"):
        table.add_column(column)
    for o in fidelity.outputs:
        table.add_row(
            Text(o.name),
            f"{o.sqnr_db:.2f}",
            f"{o.cosine:.5f}",
            f"{o.max_abs_error:.4g}",
            _pct(o.top1_agreement),
            _pct(o.accuracy_float),
            _pct(o.accuracy_quant),
        )
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def verification(fidelity, *, layers: bool = False) -> Group:
    parts: list = [_fidelity_table(fidelity, f"Fidelity on {fidelity.samples} samples")]
    if layers and fidelity.layers:
        table = Table(title="Per layer (quantized vs float, in execution order)")
        table.add_column("tensor")
        table.add_column("op")
        table.add_column("SQNR dB", justify="right")
        for layer in fidelity.layers:
            table.add_row(Text(layer.tensor), layer.op_type, f"{layer.sqnr_db:.2f}")
        parts.append(table)
    return Group(*parts)


def quantization(result) -> Group:
    plan = result.plan
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("target", f"{plan.target} at {plan.precision.value}")
    head.add_row("weights", _spec(plan.weights))
    head.add_row("activations", _spec(plan.activations))
    head.add_row("calibration", Text(result.calibration))
    head.add_row("weights pre-pass", Text(result.prepass or "none (the engine's nearest rounding)"))
    head.add_row("activation ranges", Text(result.ranges))
    head.add_row("engine", f"{result.engine.value}, chosen on {result.selected_on}")
    head.add_row("float nodes", f"{len(plan.float_nodes)} kept in float (listed below)" if plan.float_nodes else "none")
    if result.artifact is not None:
        head.add_row(
            "wrote",
            Text(
                f"{result.artifact.path} (+ .json manifest), {size(result.artifact.size_bytes)}, "
                f"sha256 {result.artifact.sha256[:12]}"
            ),
        )
    parts: list = [head, _candidates(result), _fidelity_table(result.fidelity, "Fidelity of the result")]
    if plan.float_nodes:
        table = Table(title="Nodes kept in float")
        for column in ("node", "op", "reason"):
            table.add_column(column)
        for f in plan.float_nodes:
            table.add_row(Text(f.node), f.op_type, Text(f.reason))
        parts.append(table)
    if result.fallback is not None:
        parts.append(_fallback_line(result.fallback))
    parts.append(_speed_table(result.speed, "ONNX Runtime on this host (median ms)", "quantized"))
    for warning in result.warnings:
        parts.append(Text(f"note: {warning}", style="yellow"))
    return Group(*parts)


def _speed_table(speeds, title: str, label: str) -> Table:
    """Float against quantized (or exported) latency per thread count."""
    table = Table(title=title)
    for column in ("threads", "float", label, "speed-up"):
        table.add_column(column, justify="right")
    for s in speeds:
        table.add_row(
            str(s.threads), f"{s.float_ms:.3f}", f"{s.quantized_ms:.3f}", f"{s.float_ms / s.quantized_ms:.2f}x"
        )
    return table


def _fallback_line(fb) -> Text:
    if not fb.steps:
        return Text(f"accuracy fallback ({fb.budget}): the budget holds with every layer quantized")
    tried = ", ".join(f"{s.float_layers} ({s.sqnr_db:.1f} dB)" for s in fb.steps)
    return Text(
        f"accuracy fallback ({fb.budget}): {fb.layers} layers ({len(fb.float_nodes)} nodes) kept in float, "
        f"+{size(fb.extra_weight_bytes)} of weights; float layers tried: {tried}"
    )


def _candidates(result) -> Table:
    table = Table(title="Engines (verified on the same data)")
    for column in ("engine", "SQNR dB", "top-1 agreement", "accuracy", "seconds", "unfused nodes"):
        table.add_column(column)
    for c in result.candidates:
        o = c.fidelity.outputs[0]
        mark = " (kept)" if c.engine is result.engine else ""
        table.add_row(
            c.engine.value + mark,
            f"{c.fidelity.worst_sqnr_db:.2f}",
            _pct(o.top1_agreement),
            _pct(o.accuracy_quant),
            f"{c.seconds:.1f}",
            str(c.unfused_nodes),
        )
    return table


def export(result) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("target", f"{result.target} at {result.precision.value}")
    head.add_row("I/O", f"{'NHWC' if result.nhwc_io else 'NCHW'}, {result.io_dtype}")
    ops = ", ".join(f"{name} {n}" for name, n in result.op_counts.items())
    head.add_row("ops", Text(ops))
    head.add_row("layout transposes", str(result.layout_transposes))
    head.add_row("weights pre-pass", Text(result.prepass or "none"))
    head.add_row("verified on", Text(result.verified_on))
    head.add_row("took", f"{result.seconds:.1f} s")
    if result.artifact is not None:
        head.add_row("wrote", Text(f"{result.artifact.path} (+ .json manifest), {size(result.artifact.size_bytes)}"))
    parts: list = [head, _fidelity_table(result.fidelity, "LiteRT against the float ONNX model")]
    if result.speed:
        parts.append(_speed_table(result.speed, "LiteRT (XNNPACK) on this host, median ms", "exported"))
    if result.xnnpack is not None:
        parts.append(Text(result.xnnpack.text))
    if result.vela is not None:
        parts.append(_vela_table(result.vela))
    for warning in result.warnings:
        parts.append(Text(f"note: {warning}", style="yellow"))
    return Group(*parts)


def _vela_table(vela) -> Table:
    table = Table(title=f"Vela {vela.vela_version}: {vela.accelerator}, {vela.system_config}, {vela.memory_mode}")
    for column in ("estimated time", "NPU ops", "CPU ops", "SRAM"):
        table.add_column(column, justify="right")
    table.add_row(f"{vela.inference_time_ms:.3f} ms", str(vela.npu_ops), str(vela.cpu_ops), size(vela.sram_bytes))
    for op in vela.ops:
        if op.placement.value == "CPU":
            table.add_row(Text(f"CPU: {op.name} ({op.op_type}) {op.reason or ''}"), "", "", "")
    return table
