"""build/report.html from build/report.json (already parsed): a header, one summary row per target,
warnings and notes, and five inline SVG plots. One self-contained file (no script, font or link to
fetch) and a pure function: the same dict always gives the same bytes. Every string from the report is
escaped, and a missing or null field shows as "-" or "not measured" instead of failing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edge_sdk.report_plots import PLOTS
from edge_sdk.report_svg import esc
from edge_sdk.report_view import (
    TargetView,
    as_list,
    as_map,
    as_num,
    dig,
    fmt_bytes,
    fmt_count,
    fmt_ms,
    fmt_pct,
    fmt_predicted,
    fmt_sqnr,
    fmt_tensors,
    html_table,
    target_view,
)

CSS = """
body{margin:0;color:#1f2937;background:#fff;line-height:1.45;font-family:system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif} main{max-width:1200px;margin:0 auto;padding:24px} h1{font-size:1.6rem;margin:0 0 8px}
h2{font-size:1.2rem;margin:32px 0 8px;padding-bottom:4px;border-bottom:1px solid #e5e7eb}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em} dd{margin:0} dt{color:#6b7280}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0} .scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.8rem;margin:8px 0} th{background:#f3f4f6;font-weight:600}
th,td{padding:4px 8px;text-align:left;vertical-align:top;border-bottom:1px solid #e5e7eb}
tbody tr:nth-child(even){background:#f9fafb}
th.num,td.num{text-align:right} td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
b.id{white-space:nowrap} .muted,small{color:#6b7280}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
figure{margin:24px 0} figcaption{font-size:.875rem;color:#374151;max-width:760px} li.warning::marker{color:#b45309}
figure svg{display:block;max-width:100%;height:auto;font-size:12px;font-family:inherit}
"""


def _header(report: Mapping[str, Any]) -> str:
    model, host = as_map(report.get("model")), as_map(report.get("host"))
    sha = str(model.get("sha256") or "-")
    threads = f" ({host['threads']} threads)" if host.get("threads") is not None else ""
    facts = [
        ("sha256", f'<code title="{esc(sha)}">{esc(sha[:12])}</code>'),
        ("MACs / params", f"{fmt_count(model.get('macs'))} / {fmt_count(model.get('params'))}"),
        ("inputs", fmt_tensors(model.get("inputs"))),
        ("outputs", fmt_tensors(model.get("outputs"))),
        ("calibration", esc(report.get("calibration") or "-")),
        ("evaluation", esc(report.get("evaluation") or "-")),
        ("build host", esc(host.get("cpu") or "-") + esc(threads)),
        ("edge-sdk", f"{esc(report.get('sdk_version') or '-')} (report schema {esc(report.get('schema', '-'))})"),
        ("toolchain", esc(", ".join(f"{k} {v}" for k, v in as_map(report.get("versions")).items()) or "-")),
    ]
    if as_num(report.get("seconds")) is not None:
        facts.append(("build time", f"{as_num(report.get('seconds')):.1f} s"))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return f"<header><h1>{esc(model.get('name') or 'model')}</h1><dl>{rows}</dl></header>"


SUMMARY_COLUMNS = (
    "target", "format / precision", "artifact", "worst SQNR", "top-1 agreement", "accuracy float &rarr; quant",
    "host ms", "predicted ms [low-high]", "device ms", "float nodes", "warnings",
)  # fmt: skip


def _summary_row(t: TargetView) -> list[str]:
    acc_float, acc_quant = t.accuracy
    accelerator, npu_ops, cpu_ops = (esc(t.text("vela", k)) for k in ("accelerator", "npu_ops", "cpu_ops"))
    sram, ms = fmt_bytes(dig(t.raw, ("vela", "sram_bytes"))), fmt_ms(as_num(dig(t.raw, ("vela", "inference_ms"))))
    vela = f"Vela {accelerator}: {npu_ops} NPU + {cpu_ops} CPU ops, SRAM {sram}, {ms} ms"
    verified = esc(t.text("fidelity", "verified_on"))
    artifact = esc(t.text("artifact", "file")).replace("/", "/<wbr>")  # break after the bundle directory
    swatch = f'<span class="swatch" style="background:{t.colour}"></span>'
    return [
        f'<b class="id">{swatch}{esc(t.id)}</b> {esc(t.name)}<br><small>{esc(t.text("kind"))}: {esc(t.text("unit"))}'
        + _placement(t)
        + (f"<br>{vela}</small>" if as_map(t.raw.get("vela")) else "</small>"),
        f"{esc(t.text('format'))}<br><small>{esc(t.text('precision'))}</small>",
        f'<code title="sha256 {esc(t.text("artifact", "sha256"))}">{artifact}</code>'
        f"<br><small>{fmt_bytes(dig(t.raw, ('artifact', 'size_bytes')))}</small>",
        f'<span title="verified on {verified}">{fmt_sqnr(t)}</span>',
        fmt_pct(t.top1),
        "-" if acc_float is None and acc_quant is None else f"{fmt_pct(acc_float)} &rarr; {fmt_pct(acc_quant)}",
        fmt_ms(t.host.median_ms if t.host else None),
        fmt_predicted(t),
        fmt_ms(t.device.median_ms if t.device else None),
        str(len(as_list(t.raw.get("float_nodes")))),
        str(len(t.strings("warnings"))),
    ]


def _placement(t: TargetView) -> str:
    """Where the float graph's nodes run, as inspect judged it before conversion."""
    place = as_map(t.raw.get("placement"))
    if not place:
        return ""
    counts = "/".join(fmt_count(place.get(k)) for k in ("on_unit", "on_fallback", "unsupported"))
    why = "; ".join(
        f"{f.get('op')} x{f.get('nodes')}: {f.get('reason')}" for f in map(as_map, as_list(place.get("fallbacks")))
    )
    title = f' title="{esc(why)}"' if why else ""
    partitions = fmt_count(place.get("partitions"))
    return f"<br><span{title}>nodes on unit/fallback/nowhere {esc(counts)}, {partitions} partitions</span>"


def _summary(targets: Sequence[TargetView]) -> str:
    if not targets:
        return '<h2>Targets</h2><p class="muted">no targets in this report</p>'
    return "<h2>Targets</h2>" + html_table(SUMMARY_COLUMNS, [_summary_row(t) for t in targets], numeric_from=3)


def _messages(report: Mapping[str, Any], targets: Sequence[TargetView]) -> str:
    warnings = [(t.id, w) for t in targets for w in t.strings("warnings")]
    notes = [("", str(n)) for n in as_list(report.get("notes"))]
    notes += [(t.id, n) for t in targets for n in t.strings("latency", "notes")]
    parts = []
    for title, css, items in (("Warnings", "warning", warnings), ("Notes", "note", notes)):
        lis = "".join(
            f'<li class="{css}">' + (f"<b>{esc(who)}</b>: " if who and not text.startswith(who) else "") + esc(text)
            for who, text in items
        )
        parts.append(f"<h2>{title}</h2><ul>{lis}</ul>" if items else f'<h2>{title}</h2><p class="muted">none</p>')
    return "".join(parts)


def _float_nodes(targets: Sequence[TargetView]) -> str:
    rows = [
        [esc(t.id), f"<code>{esc(n.get('node', '?'))}</code>", esc(n.get("op", "?")), esc(n.get("reason", "-"))]
        for t in targets
        for n in map(as_map, as_list(t.raw.get("float_nodes")))
    ]
    head = ("target", "node", "op", "why it stays float")
    return "<h2>Float nodes</h2>" + (html_table(head, rows, numeric_from=4) if rows else '<p class="muted">none</p>')


def render_report_html(report: Mapping[str, Any]) -> str:
    """The page for one report.json dict; byte-identical for the same dict."""
    report = as_map(report)
    targets = [target_view(t, i) for i, t in enumerate(as_list(report.get("targets")))]
    model = esc(as_map(report.get("model")).get("name") or "model")
    body = [
        _header(report),
        _summary(targets),
        _messages(report, targets),
        "<h2>Plots</h2>",
        *(plot(targets) for plot in PLOTS),
        _float_nodes(targets),
        f'<footer><p class="muted">edge-sdk {esc(report.get("sdk_version") or "")} build report</p></footer>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{model}: edge-sdk build report</title><style>{CSS}</style></head>\n"
        f"<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )
