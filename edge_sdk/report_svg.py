"""SVG plot primitives for the HTML build report: nice-number scales, axes, a legend, and four chart
shapes (range bars, stacked bars, scatter, lines). It knows nothing about report.json; report_html.py
maps a report onto these shapes. Every data mark is a `<g class="mark">` whose `<title>` is its tooltip,
so a reader can hover for the numbers and a test can count the marks."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

# matplotlib's tab10 without its grey and olive: distinct on white and in a greyscale print
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
# their light partners in tab20, for categories beyond the first eight
PALETTE_LIGHT = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5")
INK = "#222222"
MUTED = "#6b7280"
GRID = "#e5e7eb"
WIDTH = 760
ROW_PX = 28
CHAR_PX = 7.0  # average width of a 12px system-font character, for laying out labels without a font


class Shape(Enum):
    BAR = "bar"
    DOT = "dot"
    RING = "ring"
    DIAMOND = "diamond"
    LINE = "line"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def tag(name: str, body: str = "", /, **attrs: str | float | None) -> str:
    """One element; `body` is already markup. `class_` becomes `class` and `text_anchor` `text-anchor`;
    floats are written with one decimal so the same numbers always give the same bytes."""
    rendered = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{f"{value:.1f}" if isinstance(value, float) else esc(value)}"'
        for key, value in attrs.items()
        if value is not None
    )
    return f"<{name}{rendered}>{body}</{name}>" if body else f"<{name}{rendered}/>"


def text(x: float, y: float, content: str, **attrs: str | float | None) -> str:
    return tag("text", esc(content), x=x, y=y, **attrs)


def mark(title: str, *shapes: str) -> str:
    return f'<g class="mark"><title>{esc(title)}</title>{"".join(shapes)}</g>'


def glyph(shape: Shape, x: float, y: float, colour: str, r: float = 5.0) -> str:
    if shape is Shape.BAR:
        return tag("rect", x=x - r, y=y - r, width=2 * r, height=2 * r, fill=colour)
    if shape is Shape.DOT:
        return tag("circle", cx=x, cy=y, r=r, fill=colour, stroke="#ffffff")
    if shape is Shape.RING:
        return tag("circle", cx=x, cy=y, r=r, fill="#ffffff", stroke=colour, stroke_width=2)
    if shape is Shape.DIAMOND:
        points = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} {x - r - 1:.1f},{y:.1f}"
        return tag("polygon", points=points, fill=colour, stroke="#ffffff")
    return tag("line", x1=x - 2 * r, x2=x + 2 * r, y1=y, y2=y, stroke=colour, stroke_width=2.5)


@dataclass(frozen=True)
class Scale:
    """Maps data values in [lo, hi] to pixels in [start, end]; ticks are nice numbers (1, 2, 5 x 10^k)."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool
    ticks: tuple[float, ...]
    labels: tuple[str, ...]

    def __call__(self, value: float) -> float:
        if self.log:
            fraction = math.log10(max(value, self.lo) / self.lo) / math.log10(self.hi / self.lo)
        else:
            fraction = (value - self.lo) / (self.hi - self.lo)
        return self.start + fraction * (self.end - self.start)


def scale(
    values: Sequence[float],
    start: float,
    end: float,
    *,
    zero: bool = False,
    log_ratio: float = 0.0,
    min_step: float = 0.0,
    room: float = 0.0,
) -> Scale:
    """A log scale when `log_ratio` is set and max/min exceeds it, else a linear one from 0 if `zero`, or
    with `room` (a fraction of the span) on each side so that no mark sits on the frame."""
    finite = [v for v in values if math.isfinite(v)]
    if log_ratio and finite and min(finite) > 0 and max(finite) / min(finite) > log_ratio:
        ticks = _log_ticks(min(finite), max(finite))
        return Scale(ticks[0], ticks[-1], start, end, True, ticks, tuple(_label(t, _decimals(t)) for t in ticks))
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    elif finite:
        lo, hi = lo - room * (hi - lo), hi + room * (hi - lo)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = (lo, hi + pad) if zero and lo == 0 else (lo - pad, hi + pad)
    step = max(_nice_step(hi - lo), min_step)
    first, last = math.floor(lo / step + 1e-6), math.ceil(hi / step - 1e-6)
    ticks = tuple(round(i * step, 12) + 0.0 for i in range(first, last + 1))
    return Scale(ticks[0], ticks[-1], start, end, False, ticks, tuple(_label(t, _decimals(step)) for t in ticks))


def _nice_step(span: float, count: int = 5) -> float:
    raw = span / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next((m * magnitude for m in (1, 2, 5) if raw <= m * magnitude * (1 + 1e-9)), 10 * magnitude)


def _log_ticks(lo: float, hi: float) -> tuple[float, ...]:
    first = math.floor(math.log10(lo) + 1e-9)
    last = max(math.ceil(math.log10(hi) - 1e-9), first + 1)
    multiples = (1, 2, 5) if last - first <= 2 else (1,)
    ticks = [m * 10.0**e for e in range(first, last) for m in multiples] + [10.0**last]
    return tuple(float(f"{t:.12g}") for t in ticks)


def _decimals(step: float) -> int:
    return 0 if step >= 1 or step <= 0 else -math.floor(math.log10(step) + 1e-9)


def _label(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Frame:
    """An SVG canvas and the plot area inside it (x from left to right, y from top to bottom)."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float

    def svg(self, body: str, label: str) -> str:
        w, h = round(self.width), round(self.height)
        return tag("svg", body, viewBox=f"0 0 {w} {h}", width=w, height=h, role="img", aria_label=label)

    def message(self, content: str) -> str:
        x, y = (self.left + self.right) / 2, (self.top + self.bottom) / 2
        return text(x, y, content, text_anchor="middle", fill=MUTED, class_="empty")


def frame(plot_height: float, *, top: float, left: float = 64.0, right: float = 28.0) -> Frame:
    return Frame(WIDTH, top + plot_height + 48, left, WIDTH - right, top, top + plot_height)


def x_axis(f: Frame, s: Scale, title: str) -> str:
    parts = []
    for tick, label in zip(s.ticks, s.labels, strict=True):
        x = s(tick)
        parts.append(tag("line", x1=x, x2=x, y1=f.top, y2=f.bottom, stroke=GRID))
        parts.append(text(x, f.bottom + 16, label, text_anchor="middle", fill=MUTED))
    parts.append(tag("line", x1=f.left, x2=f.right, y1=f.bottom, y2=f.bottom, stroke=INK))
    title += ", log scale" if s.log else ""
    parts.append(text((f.left + f.right) / 2, f.bottom + 38, title, text_anchor="middle", font_weight="600"))
    return tag("g", "".join(parts), class_="axis")


def y_axis(f: Frame, s: Scale, title: str) -> str:
    parts = []
    for tick, label in zip(s.ticks, s.labels, strict=True):
        y = s(tick)
        parts.append(tag("line", x1=f.left, x2=f.right, y1=y, y2=y, stroke=GRID))
        parts.append(text(f.left - 6, y + 4, label, text_anchor="end", fill=MUTED))
    parts.append(tag("line", x1=f.left, x2=f.left, y1=f.top, y2=f.bottom, stroke=INK))
    title += ", log scale" if s.log else ""
    at = f"translate(14 {(f.top + f.bottom) / 2:.1f}) rotate(-90)"
    parts.append(tag("text", esc(title), transform=at, text_anchor="middle", font_weight="600"))
    return tag("g", "".join(parts), class_="axis")


@dataclass(frozen=True)
class Key:
    label: str
    colour: str
    shape: Shape = Shape.BAR


def legend(keys: Sequence[Key], *, y: float = 16.0) -> tuple[str, float]:
    """Keys left to right, wrapping at the canvas width; returns the markup and the y below it."""
    parts, x = [], 12.0
    for key in keys:
        width = 28 + CHAR_PX * len(key.label)
        if x + width > WIDTH and x > 12:
            x, y = 12.0, y + 18
        parts.append(glyph(key.shape, x + 6, y - 4, key.colour, 4.5) + text(x + 18, y, key.label))
        x += width + 12
    return tag("g", "".join(parts), class_="legend"), (y + 14 if keys else y - 8)


def _label_margin(labels: Sequence[str]) -> float:
    return min(220.0, max(64.0, 16 + CHAR_PX * max((len(s) for s in labels), default=0)))


@dataclass(frozen=True)
class Span:
    """A bar from the axis origin to `value`, with a whisker from `low` to `high` when both are known."""

    value: float
    low: float | None
    high: float | None
    title: str


@dataclass(frozen=True)
class Dot:
    value: float
    shape: Shape
    colour: str
    title: str


@dataclass(frozen=True)
class BarRow:
    label: str
    colour: str
    bar: Span | None
    dots: tuple[Dot, ...]
    empty: str = "not measured"


def range_bars(rows: Sequence[BarRow], keys: Sequence[Key], *, x_title: str, label: str) -> str:
    """One row per category: an optional bar with whisker and point marks; log x when max/min > 50."""
    head, top = legend(keys)
    f = frame(ROW_PX * max(len(rows), 1), top=top + 8, left=_label_margin([r.label for r in rows]))
    values = [v for r in rows if r.bar for v in (r.bar.value, r.bar.low, r.bar.high) if v is not None]
    s = scale(values + [d.value for r in rows for d in r.dots], f.left, f.right, zero=True, log_ratio=50)
    parts = [head, x_axis(f, s, x_title)]
    for i, row in enumerate(rows):
        cy = f.top + (i + 0.5) * ROW_PX
        parts.append(text(f.left - 8, cy + 4, row.label, text_anchor="end"))
        if row.bar is not None:
            parts.append(mark(row.bar.title, *_bar_with_whisker(s, row.bar, row.colour, cy)))
        parts.extend(mark(d.title, glyph(d.shape, s(d.value), cy, d.colour)) for d in row.dots)
        if row.bar is None and not row.dots:
            parts.append(text(f.left + 8, cy + 4, row.empty, fill=MUTED, font_style="italic"))
    if not rows:
        parts.append(f.message("no targets"))
    return f.svg("".join(parts), label)


def _bar_with_whisker(s: Scale, bar: Span, colour: str, cy: float) -> list[str]:
    origin = s(s.lo if s.log else 0.0)
    shapes = [tag("rect", x=origin, y=cy - 8, width=max(s(bar.value) - origin, 1.0), height=16.0, fill=colour)]
    if bar.low is not None and bar.high is not None:
        x1, x2 = s(bar.low), s(bar.high)
        shapes.append(tag("line", x1=x1, x2=x2, y1=cy, y2=cy, stroke=INK, stroke_width=1.5))
        shapes.extend(tag("line", x1=x, x2=x, y1=cy - 5, y2=cy + 5, stroke=INK, stroke_width=1.5) for x in (x1, x2))
    return shapes


@dataclass(frozen=True)
class Segment:
    value: float
    colour: str
    title: str


@dataclass(frozen=True)
class StackRow:
    label: str
    segments: tuple[Segment, ...]
    note: str
    empty: str = "no data"


def stacked_bars(rows: Sequence[StackRow], keys: Sequence[Key], *, x_title: str, label: str) -> str:
    head, top = legend(keys)
    right = 16 + CHAR_PX * max((len(r.note) for r in rows), default=0)
    f = frame(ROW_PX * max(len(rows), 1), top=top + 8, left=_label_margin([r.label for r in rows]), right=right)
    s = scale([sum(g.value for g in r.segments) for r in rows], f.left, f.right, zero=True)
    parts = [head, x_axis(f, s, x_title)]
    for i, row in enumerate(rows):
        cy, at = f.top + (i + 0.5) * ROW_PX, 0.0
        parts.append(text(f.left - 8, cy + 4, row.label, text_anchor="end"))
        for g in row.segments:
            x0, x1 = s(at), s(at + g.value)
            parts.append(
                mark(g.title, tag("rect", x=x0, y=cy - 8, width=max(x1 - x0, 0.5), height=16.0, fill=g.colour))
            )
            at += g.value
        end = s(at) + 6 if row.segments else f.left + 8
        parts.append(text(end, cy + 4, row.note if row.segments else row.empty, fill=MUTED))
    if not rows:
        parts.append(f.message("no targets"))
    return f.svg("".join(parts), label)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    colour: str
    title: str
    x_low: float | None = None
    x_high: float | None = None


def scatter(points: Sequence[Point], *, x_title: str, y_title: str, label: str, empty: str, diagonal: bool) -> str:
    """Labelled points. With `diagonal` both axes share one latency scale and the y = x line is drawn;
    otherwise x is a latency (log when max/min > 50) and y a linear metric."""
    f = frame(300, top=16)
    xs = [v for p in points for v in (p.x, p.x_low, p.x_high) if v is not None]
    if diagonal:
        sx = scale(xs + [p.y for p in points], f.left, f.right, log_ratio=50)
        sy = scale(xs + [p.y for p in points], f.bottom, f.top, log_ratio=50)
    else:
        sx = scale(xs, f.left, f.right, zero=True, log_ratio=50)
        sy = scale([p.y for p in points], f.bottom, f.top, room=0.08)
    parts = [x_axis(f, sx, x_title), y_axis(f, sy, y_title)]
    if diagonal and points:
        ends = dict(x1=sx(sx.lo), y1=sy(sy.lo), x2=sx(sx.hi), y2=sy(sy.hi))
        parts.append(tag("line", **ends, stroke=MUTED, stroke_dasharray="4 4", class_="diagonal"))
        parts.append(text(f.right - 4, f.top + 28, "y = x", text_anchor="end", fill=MUTED))
    for p in points:
        shapes = []
        if p.x_low is not None and p.x_high is not None:
            shapes.append(tag("line", x1=sx(p.x_low), x2=sx(p.x_high), y1=sy(p.y), y2=sy(p.y), stroke=p.colour))
        parts.append(mark(p.title, *shapes, glyph(Shape.DOT, sx(p.x), sy(p.y), p.colour, 6)))
    parts.extend(_labels([(sx(p.x), sy(p.y), p.label) for p in points], f))
    if not points:
        parts.append(f.message(empty))
    return f.svg("".join(parts), label)


def _labels(anchors: Sequence[tuple[float, float, str]], f: Frame) -> list[str]:
    """Each label above-right of its point (left of it near the right edge), moved down or up a line at a
    time until it covers no point and no label placed before it: close points stay readable."""
    placed = [(x - 6, y - 6, x + 6, y + 6) for x, y, _ in anchors]
    parts = []
    for x, y, label in anchors:
        width = CHAR_PX * len(label)
        left = x + 9 if x + 9 + width <= f.width - 4 else x - 9 - width
        for dy in (0.0, 13.0, -13.0, 26.0, -26.0, 39.0, -39.0, 52.0, -52.0):
            box = (left, y - 19 + dy, left + width, y - 7 + dy)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        parts.append(text(left, box[3] - 2, label))
    return parts


@dataclass(frozen=True)
class Series:
    """One line along an index axis; a None value is drawn in the band above the plot (no error)."""

    label: str
    colour: str
    values: tuple[float | None, ...]
    titles: tuple[str, ...]
    highlight: frozenset[int]


def line_chart(series: Sequence[Series], *, x_title: str, y_title: str, label: str, empty: str, top_label: str) -> str:
    head, top = legend([Key(s.label, s.colour, Shape.LINE) for s in series])
    f = frame(280, top=top + 24)
    count = max((len(s.values) for s in series), default=1)
    sx = scale([0.0, float(max(count - 1, 1))], f.left, f.right, min_step=1.0)
    sy = scale([v for s in series for v in s.values if v is not None], f.bottom, f.top + 22, room=0.05)
    parts = [head, x_axis(f, sx, x_title), y_axis(f, sy, y_title)]
    if any(v is None for s in series for v in s.values):
        parts.append(
            tag("line", x1=f.left, x2=f.right, y1=f.top + 4, y2=f.top + 4, stroke=GRID, stroke_dasharray="2 3")
        )
        parts.append(text(f.right, f.top - 4, top_label, text_anchor="end", fill=MUTED))
    for s in series:
        parts.extend(_line_parts(s, sx, sy, f.top + 4))
    if not series:
        parts.append(f.message(empty))
    return f.svg("".join(parts), label)


def _line_parts(s: Series, sx: Scale, sy: Scale, band_y: float) -> list[str]:
    runs: list[list[str]] = [[]]
    for i, v in enumerate(s.values):
        if v is None:
            runs.append([])
        else:
            runs[-1].append(f"{sx(i):.1f},{sy(v):.1f}")
    parts = [tag("polyline", points=" ".join(r), fill="none", stroke=s.colour, stroke_width=1.5) for r in runs if r]
    for i, v in enumerate(s.values):
        x, y = sx(i), band_y if v is None else sy(v)
        if i in s.highlight:
            parts.append(tag("circle", cx=x, cy=y, r=6.5, fill="none", stroke=s.colour, stroke_width=1.5))
        parts.append(mark(s.titles[i], glyph(Shape.RING if v is None else Shape.DOT, x, y, s.colour, 3.5)))
    return parts
