"""report.json read defensively for report.html: one TargetView per target (whatever a missing or
ill-typed field leaves unknown is None or empty) and the formatting every part of the page shares."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_sdk import report_svg as svg
from edge_sdk.report_svg import esc


@dataclass(frozen=True)
class Timing:
    median_ms: float
    low_ms: float | None
    high_ms: float | None
    how: str


@dataclass(frozen=True)
class Layer:
    tensor: str
    op: str
    sqnr_db: float | None  # None: no quantization error at all (an infinite SQNR)


@dataclass(frozen=True)
class TargetView:
    """One target of the report, read defensively: whatever a missing key leaves unknown is None or empty."""

    id: str
    name: str
    colour: str
    raw: Mapping[str, Any]
    outputs: tuple[Mapping[str, Any], ...]  # fidelity outputs; () when fidelity was not measured
    has_fidelity: bool
    host: Timing | None
    device: Timing | None
    predicted: Timing | None
    layers: tuple[Layer, ...]

    def _finite(self, key: str) -> list[float]:
        return [v for o in self.outputs if (v := as_num(o.get(key))) is not None]

    @property
    def worst_sqnr_db(self) -> float | None:
        return min(self._finite("sqnr_db"), default=None)

    @property
    def identical(self) -> bool:
        return bool(self.outputs) and not self._finite("sqnr_db")

    @property
    def top1(self) -> float | None:
        return min(self._finite("top1_agreement"), default=None)

    @property
    def accuracy(self) -> tuple[float | None, float | None]:
        """(float, quantized) of the first output evaluated against labels."""
        for o in self.outputs:
            if as_num(o.get("accuracy_quant")) is not None or as_num(o.get("accuracy_float")) is not None:
                return as_num(o.get("accuracy_float")), as_num(o.get("accuracy_quant"))
        return None, None

    @property
    def measured(self) -> tuple[Timing, str] | None:
        """The timing comparable with this target's prediction: the device's, or the build machine's only
        when the target is the build machine itself."""
        if self.device is not None:
            return self.device, "device"
        return (self.host, "host") if self.host is not None and self.id == "host" else None

    @property
    def latency(self) -> tuple[Timing, str] | None:
        """The best latency known: measured on the device, else predicted, else measured on the host."""
        pairs = ((self.device, "device-measured"), (self.predicted, "predicted"), (self.host, "host-measured"))
        return next(((t, how) for t, how in pairs if t is not None), None)

    def text(self, *keys: str) -> str:
        value = dig(self.raw, keys)
        return "-" if value is None or isinstance(value, Mapping) else str(value)

    def strings(self, *keys: str) -> tuple[str, ...]:
        return tuple(str(s) for s in as_list(dig(self.raw, keys)) if s is not None)


def dig(value: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        value = as_map(value).get(key)
    return value


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def as_num(value: Any) -> float | None:
    """A finite number, or None for null, inf, NaN, a bool or anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def timing(value: Any, *how_keys: str) -> Timing | None:
    d = as_map(value)
    median = as_num(d.get("median_ms"))
    if median is None:
        return None
    how = [str(d[k]) for k in how_keys if d.get(k) is not None]
    how += [f"p90 {fmt_ms(p90)} ms"] if (p90 := as_num(d.get("p90_ms"))) is not None else []
    how += [f"{d['threads']} threads"] if d.get("threads") is not None else []
    how += [f"{d['runs']} runs"] if d.get("runs") is not None else []
    return Timing(median, as_num(d.get("low_ms")), as_num(d.get("high_ms")), ", ".join(how))


def target_view(raw: Any, index: int) -> TargetView:
    t = as_map(raw)
    fidelity, latency = as_map(t.get("fidelity")), as_map(t.get("latency"))
    layers = tuple(
        Layer(str(as_map(x).get("tensor", "?")), str(as_map(x).get("op", "?")), as_num(as_map(x).get("sqnr_db")))
        for x in as_list(t.get("layer_sensitivity"))
    )
    return TargetView(
        id=str(t.get("target") or f"target {index + 1}"),
        name=str(t.get("name") or ""),
        colour=svg.PALETTE[index % len(svg.PALETTE)],
        raw=t,
        outputs=tuple(as_map(o) for o in as_list(fidelity.get("outputs"))),
        has_fidelity=bool(fidelity),
        host=timing(latency.get("host"), "runtime"),
        device=timing(latency.get("device"), "device", "runtime"),
        predicted=timing(latency.get("predicted"), "method"),
        layers=layers,
    )


def fmt_ms(value: float | None) -> str:
    """Three significant digits without an exponent: 0.0512, 3.10, 123."""
    if value is None:
        return "-"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}" if value else "0"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def fmt_count(value: Any) -> str:
    n = as_num(value)
    if n is None:
        return "-"
    unit, size = next(((u, s) for u, s in (("G", 1e9), ("M", 1e6), ("k", 1e3)) if abs(n) >= s), ("", 1.0))
    return f"{n / size:.2f}{unit}" if unit else f"{n:g}"


def fmt_bytes(value: Any) -> str:
    n = as_num(value)
    if n is None:
        return "-"
    unit, size = next(((u, s) for u, s in (("MB", 1 << 20), ("KB", 1 << 10)) if n >= s), ("B", 1))
    return f"{n / size:.1f} {unit}" if unit != "B" else f"{n:.0f} B"


def fmt_sqnr(t: TargetView) -> str:
    if not t.has_fidelity:
        return "not measured"
    if t.identical:
        return "identical"
    return "-" if t.worst_sqnr_db is None else f"{t.worst_sqnr_db:.1f} dB"


def fmt_predicted(t: TargetView) -> str:
    p = t.predicted
    if p is None:
        return "-"
    band = (
        f"<br><small>[{fmt_ms(p.low_ms)}-{fmt_ms(p.high_ms)}]</small>"
        if p.low_ms is not None and p.high_ms is not None
        else ""
    )
    return fmt_ms(p.median_ms) + band


def fmt_tensors(items: Any) -> str:
    parts = []
    for item in as_list(items):
        d = as_map(item)
        shape = ",".join(str(x) for x in as_list(d.get("shape")))
        parts.append(f"<code>{esc(d.get('name', '?'))}</code> {esc(d.get('dtype', '?'))}[{esc(shape)}]")
    return ", ".join(parts) or "-"


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]], *, numeric_from: int) -> str:
    """Cells are markup; columns from `numeric_from` on are right-aligned numbers."""
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    th = "".join(f'<th class="num">{c}</th>' if i >= numeric_from else f"<th>{c}</th>" for i, c in enumerate(head))
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'
