"""One extractor per benchmark for run_all.py: it reads that benchmark's results JSON and returns the
key numbers (for benchmarks/results.json, as the JSON has them), markdown tables of the side-by-side
comparison (for benchmarks/results.md, rounded for display only) and the script arguments the JSON
records. Nothing here measures or runs anything.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Table:
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def markdown(self) -> str:
        lines = [f"**{self.caption}**", "", _row(self.header), _row(tuple("---" for _ in self.header))]
        return "\n".join([*lines, *(_row(r) for r in self.rows)])


@dataclass(frozen=True)
class Extract:
    args: tuple[str, ...]  # the script's arguments, as far as the JSON records them
    numbers: dict[str, Any]  # key numbers for results.json, unrounded
    tables: tuple[Table, ...]
    notes: tuple[str, ...] = ()  # what the JSON does not record or lacks for a side-by-side table
    host: dict[str, Any] | None = None  # {"cpu", "cores"} when the JSON records its machine


Extractor = Callable[[Any, bool], Extract]  # (parsed JSON, is the ".quick" file) -> Extract


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


# ---------------------------------------------------------------- display formats (2-3 decimals)


def num(value: float | None, decimals: int = 2) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}" if value < 1 else f"{value:.2f}"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def megabytes(n_bytes: float | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / 1e6:.0f}"


def count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def per_thread(values: Mapping[str, float] | None, fmt: Callable[[float | None], str] = ms) -> str:
    """'1.04 / 0.72' for {"1": ..., "2": ...}, in thread order."""
    if not values:
        return "-"
    return " / ".join(fmt(values[t]) for t in sorted(values, key=int))


def _last_line(error: str) -> str:
    lines = error.strip().splitlines()
    return f"error: {lines[-1][:100] if lines else '?'}"


def _host(doc_host: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if not doc_host else {"cpu": doc_host.get("cpu"), "cores": doc_host.get("cores")}


# ---------------------------------------------------------------- quantize_bench.py

QUANTIZE_METHODS = {
    "ort": "ONNX Runtime quantize_static (per-channel MinMax)",
    "nncf": "NNCF quantize (defaults)",
    "sdk": "edge-sdk auto",
    "sdk-ort": "edge-sdk --engine onnxruntime",
    "sdk-minmax": "edge-sdk --engine onnxruntime --ranges minmax",
}
QUANTIZE_HEADER = (
    "method", "SQNR dB (exact Q/DQ)", "top-1 agr.", "accuracy", "SQNR dB (host int8 kernels)", "ms {threads}",
    "time / fp32 {threads}", "quantize s", "peak MB", "unfused nodes",
)  # fmt: skip


def _quantize_row(method: str, row: dict, float_ms: dict[str, float], latency: dict | None) -> tuple[str, ...]:
    label = QUANTIZE_METHODS.get(method, method)
    if method == "sdk" and row.get("engine"):
        label += f" -> {row['engine']}"
    if "sim" not in row:
        return (label, _last_line(row.get("error", "no result")), *("-" for _ in QUANTIZE_HEADER[2:]))
    sim, host = row["sim"], row.get("host", {})
    ratio = {t: latency[t] / float_ms[t] for t in latency} if latency else None
    return (
        label,
        num(sim["sqnr_db"]),
        pct(sim["top1_agreement"]),
        pct(sim["accuracy"]),
        num(host.get("sqnr_db")),
        per_thread(latency),
        per_thread(ratio, num),
        seconds(row.get("seconds")),
        megabytes(row.get("peak_rss_bytes")),
        count(row.get("unfused_nodes")),
    )


def _quantize_numbers(row: dict, latency: dict | None) -> dict:
    if "sim" not in row:
        return {"error": _last_line(row.get("error", "no result"))}
    keys = ("engine", "seconds", "peak_rss_bytes", "unfused_nodes", "calib_samples")
    return {"sim": row["sim"], "host": row.get("host"), "latency_ms": latency} | {k: row[k] for k in keys if k in row}


def quantize(doc: dict, quick: bool) -> Extract:
    tables, numbers = [], {}
    for name, report in doc["models"].items():
        lat = report.get("latency_ms", {})
        float_ms = lat.get("fp32", {})
        threads = "/".join(f"{t}t" for t in sorted(float_ms, key=int))
        header = tuple(h.format(threads=threads) for h in QUANTIZE_HEADER)
        first = next((r for r in report["rows"].values() if "sim" in r), None)
        float_acc = first["sim"]["accuracy_float"] if first else None
        rows: list[tuple[str, ...]] = [
            ("float model (fp32)", "-", "-", pct(float_acc), "-", per_thread(float_ms), *("-",) * 4)
        ]
        rows += [_quantize_row(m, r, float_ms, lat.get(m)) for m, r in report["rows"].items()]
        tables.append(Table(f"{name}: {report['title']}", header, tuple(rows)))
        numbers[name] = {
            "title": report["title"],
            "float_accuracy": float_acc,
            "float_latency_ms": float_ms,
            "methods": {m: _quantize_numbers(r, lat.get(m)) for m, r in report["rows"].items()},
        }
    settings = doc.get("settings", {})
    args = ("--models", *doc["models"], "--methods", *settings.get("methods", ()), *(("--quick",) if quick else ()))
    load = settings.get("load", {})
    notes = []
    if load:
        before, after = load["before_timing"][0], load["after_timing"][0]
        notes.append(f"1-minute load average {before:.1f} before / {after:.1f} after timing (shared machine).")
    return Extract(args, numbers, tuple(tables), tuple(notes), _host(doc.get("host")))


# ---------------------------------------------------------------- prepass_bench.py


def prepass(doc: dict, quick: bool) -> Extract:
    baseline = {r["engine"]: r["sqnr_db"] for r in doc["rows"] if r["prepass"] == "none"}
    rows = tuple(
        (
            r["engine"],
            r["prepass"],
            num(r["sqnr_db"]),
            num(r["sqnr_db"] - baseline[r["engine"]]) if r["engine"] in baseline else "-",
            pct(r["top1_agreement"]),
            pct(r["demo_accuracy"]),
            num(r["prepass_seconds"], 1),
        )
        for r in doc["rows"]
    )
    caption = (
        f"{doc['model']}, {doc['calibration_crops']} calibration / {doc['evaluation_crops']} evaluation crops; "
        f"demo model float accuracy {pct(doc['demo_float_accuracy'])}"
    )
    header = ("engine", "pre-pass", "SQNR dB", "dB vs none", "top-1 agr.", "demo accuracy", "pre-pass s")
    keys = ("model", "calibration_crops", "evaluation_crops", "demo_float_accuracy", "rows")
    return Extract((), {k: doc[k] for k in keys}, (Table(caption, header, rows),))


# ---------------------------------------------------------------- tflite_bench.py

TFLITE_METHODS = {
    "sdk-fp32": "edge-sdk fp32",
    "sdk-int8": "edge-sdk int8 (float I/O)",
    "aeq-default-int8": "ai-edge-quantizer default int8 recipe",
    "onnx2tf-fp32": "onnx2tf fp32",
    "onnx2tf-int8": "onnx2tf full-integer int8 (int8 I/O)",
}
TFLITE_HEADER = (
    "converter", "convert s", "peak MB", "SQNR dB", "top-1 agr.", "accuracy", "max abs err", "TRANSPOSE",
    "XNNPACK pieces", "left to LiteRT", "size KB", "LiteRT ms {threads}",
)  # fmt: skip
TFLITE_KEYS = (
    "seconds", "peak_rss_bytes", "sqnr_db", "top1_agreement", "accuracy", "accuracy_float", "max_abs_error",
    "transposes", "xnnpack_pieces", "left_to_litert", "size_bytes",
)  # fmt: skip


def _tflite_row(method: str, r: dict, latency: dict | None) -> tuple[str, ...]:
    label = TFLITE_METHODS.get(method, method)
    if "error" in r or "sqnr_db" not in r:
        return (label, _last_line(r.get("error", "not verified")), *("-" for _ in TFLITE_HEADER[2:]))
    left = ", ".join(f"{op} {n}" for op, n in sorted(r["left_to_litert"].items())) or "none"
    return (
        label,
        seconds(r.get("seconds")),
        megabytes(r.get("peak_rss_bytes")),
        num(r["sqnr_db"]),
        pct(r["top1_agreement"]),
        pct(r.get("accuracy")),
        f"{r['max_abs_error']:.3g}",
        count(r.get("transposes")),
        count(r.get("xnnpack_pieces")),
        left,
        num(r["size_bytes"] / 1e3, 0),
        per_thread(latency),
    )


def tflite(doc: dict, quick: bool) -> Extract:
    tables, numbers, notes = [], {}, []
    for name, report in doc["models"].items():
        lat = report["latency_ms"]
        reference = lat.get("onnxruntime-fp32")
        threads = "/".join(f"{t}t" for t in sorted(reference or {}, key=int))
        header = tuple(h.format(threads=threads) for h in TFLITE_HEADER)
        rows = [_tflite_row(m, r, lat.get(m)) for m, r in report["conversions"].items()]
        rows.append(("float ONNX in ONNX Runtime (reference)", *("-",) * 10, per_thread(reference)))
        tables.append(Table(f"{name}: {report['title']}", header, tuple(rows)))
        conversions = {
            m: {k: r[k] for k in TFLITE_KEYS if k in r} if "error" not in r else {"error": _last_line(r["error"])}
            for m, r in report["conversions"].items()
        }
        numbers[name] = {"title": report["title"], "conversions": conversions, "latency_ms": lat}
        notes += [
            f"{name}: {m} has no result ({r['error'].strip().splitlines()[-1][:100]})."
            for m, r in report["conversions"].items()
            if "error" in r
        ]
        no_rss = [m for m, r in report["conversions"].items() if "error" not in r and "peak_rss_bytes" not in r]
        if no_rss:
            notes.append(f"{name}: no peak memory recorded for {', '.join(no_rss)}.")
    notes.append("tflite.json does not record --quick; the command lists the models it holds.")
    args = ("--models", *doc["models"])
    return Extract(args, numbers, tuple(tables), tuple(notes), _host(doc.get("host")))


# ---------------------------------------------------------------- runner_bench.py


def runner(doc: dict, quick: bool) -> Extract:
    rows = []
    for key, r in doc.items():
        model, precision, threads = key.rsplit(" ", 2)
        rows.append((model, precision, threads.rstrip("T"), ms(r["runner_ms"]), ms(r["tool_ms"]), num(r["ratio"], 3)))
    header = ("model", "precision", "threads", "edge-sdk runner ms", "LiteRT benchmark tool ms", "runner / tool")
    table = Table("median latency of the same .tflite, interleaved rounds", header, tuple(rows))
    notes = ("runner.json does not record --rounds; the command shows the default.",)
    return Extract((), dict(doc), (table,), notes)


# ---------------------------------------------------------------- predict_bench.py

PREDICT_HEADER = (
    "split", "runtime", "threads", "n", "MdAPE %", "within 10%", "within 25%", "band covers", "band width x",
    "MdAPE % (fastest samples)", "repeat noise %", "repeat noise % (fastest)",
)  # fmt: skip


def _accuracy_cells(s: dict) -> tuple[str, ...]:
    return (
        str(s["n"]),
        num(s["mdape_pct"], 1),
        num(s["within_10_pct"], 0) + "%",
        num(s["within_25_pct"], 0) + "%",
        num(s["band_covers_pct"], 0) + "%",
        num(s["band_width_x"]),
    )


def predict(doc: dict, quick: bool) -> Extract:
    def key(s: dict) -> tuple:
        return s["runtime"], s["threads"]

    fastest = {(s["split"], *key(s)): s for s in doc.get("fastest_summary", [])}
    noise = {key(n): n["repeat_mdape_pct"] for n in doc.get("repeatability", [])}
    fastest_noise = {key(n): n["repeat_mdape_pct"] for n in doc.get("fastest_repeatability", [])}
    rows = tuple(
        (
            s["split"],
            s["runtime"],
            str(s["threads"]),
            *_accuracy_cells(s),
            num(fastest[(s["split"], *key(s))]["mdape_pct"], 1) if (s["split"], *key(s)) in fastest else "-",
            num(noise.get(key(s)), 1),
            num(fastest_noise.get(key(s)), 1),
        )
        for s in doc["summary"]
    )
    caption = (
        f"held-out prediction vs measurement on this host: {len(doc['models'])} models, "
        f"{doc['repeats']} repeats each (median of the repeats' medians)"
    )
    tables = [Table(caption, PREDICT_HEADER, rows)]
    if doc.get("reference_summary"):
        reference = tuple((s["split"], s["target"], *_accuracy_cells(s)) for s in doc["reference_summary"])
        header = ("split", "target", *PREDICT_HEADER[3:9])
        tables.append(Table("published Raspberry Pi XNNPACK latencies, predicted", header, reference))
    keys = ("repeats", "summary", "repeatability", "fastest_summary", "fastest_repeatability", "reference_summary")
    numbers = {"models": len(doc["models"]), "seconds": doc.get("seconds")} | {k: doc[k] for k in keys if k in doc}
    args = tuple(shlex.split(doc["command"])[2:]) if "command" in doc else (("--quick",) if quick else ())
    return Extract(args, numbers, tuple(tables), (), _host(doc.get("host")))


# ---------------------------------------------------------------- inspect_bench.py


def inspect(doc: dict, quick: bool) -> Extract:
    ours = {r["model"]: r for r in doc["rows"] if r["counter"] == "edge-sdk inspect"}

    def ratio(r: dict, key: str) -> str:
        mine = ours.get(r["model"], {}).get(key)
        return num(r[key] / mine, 3) if mine else "-"

    rows = tuple(
        (
            r["model"],
            r["counter"],
            count(r["macs"]),
            count(r["params"]),
            ratio(r, "macs"),
            ratio(r, "params"),
            seconds(r["seconds"]),
        )
        for r in doc["rows"]
    )
    header = ("model", "counter", "MACs", "params", "MACs / edge-sdk", "params / edge-sdk", "inspect s")
    caption = (
        f"inspect across {doc['targets']} targets (median of 3 runs); demo model float accuracy "
        f"{pct(doc['demo_float_accuracy'])}"
    )
    return Extract((), dict(doc), (Table(caption, header, rows),))


# ---------------------------------------------------------------- compile_bench.py


def compile_(doc: Any, quick: bool) -> Extract:
    """compile.json (benchmarks/compile_bench.py): the whole `edge-sdk compile` command, per round and
    its median, against the issue's budget (seconds, peak memory), with the fidelity it reached."""
    budget = doc.get("budget", {})
    header = ("model", "target", "precision", "calibration / evaluation", "wall s (median)", "peak MB", "budget",
              "within", "SQNR dB", "top-1 agr.", "host ms", "predicted ms")  # fmt: skip
    samples = doc.get("samples", {})
    row = (
        str(doc.get("model", "-")),
        str(doc.get("target", "-")),
        str(doc.get("precision", "-")),
        f"{samples.get('calibration', '-')} / {samples.get('evaluation', '-')}",
        seconds(doc.get("seconds")),
        num(doc.get("peak_rss_mb"), 0),
        f"{num(budget.get('seconds'), 0)} s, {num(budget.get('peak_rss_mb'), 0)} MB",
        "yes" if doc.get("within_budget") else "no",
        num(doc.get("sqnr_db")),
        pct(doc.get("top1_agreement")),
        num(doc.get("host_ms")),
        num(doc.get("predicted_ms")),
    )
    rounds = ", ".join(f"{r['seconds']:.1f} s / {r['peak_rss_mb']:.0f} MB" for r in doc.get("rounds", []))
    keys = ("seconds", "peak_rss_mb", "within_budget", "sqnr_db", "top1_agreement", "host_ms", "predicted_ms")
    numbers = {k: doc.get(k) for k in keys}
    notes = (f"rounds: {rounds}", f"command inside each round: `{doc.get('compile_command', '-')}`")
    rounds_arg = ("--rounds", str(len(doc["rounds"]))) if doc.get("rounds") else ()
    table = Table("edge-sdk compile, end to end (a fresh process per round)", header, (row,))
    return Extract(rounds_arg, numbers, (table,), notes, doc.get("machine"))


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None
