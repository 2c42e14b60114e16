"""compile's report: one JSON document across targets (report.json) and the same as one HTML page
with plots (report.html, edge_sdk.report_html). Paths in it are relative to the build directory, and
it carries no timestamp, so equal builds on one machine differ only in their measured times."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk import __version__
from edge_sdk.artifact import replace_atomically, versions
from edge_sdk.bundle import REPORT_JSON
from edge_sdk.hostinfo import read_host_info
from edge_sdk.inspection import inspect
from edge_sdk.measurement import BenchmarkResult
from edge_sdk.profile import TargetProfile
from edge_sdk.serialize import to_jsonable

if TYPE_CHECKING:
    from edge_sdk.compile import CompileResult, TargetBundle

SCHEMA = 1
REPORT_HTML = "report.html"


def write_report(result: CompileResult, profiles: Sequence[TargetProfile], directory: Path) -> dict[str, Any]:
    """Build the report and write report.json and report.html into `directory` (atomically)."""
    from edge_sdk.report_html import render_report_html

    report = build_report(result, profiles, directory)
    text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"
    html = render_report_html(report)
    replace_atomically([(directory / REPORT_JSON, text.encode()), (directory / REPORT_HTML, html.encode())])
    return report


def build_report(result: CompileResult, profiles: Sequence[TargetProfile], directory: Path) -> dict[str, Any]:
    model = result.model
    inspection = inspect(model, list(profiles))
    totals = inspection.totals
    host = read_host_info()
    by_id = {p.id: p for p in profiles}
    placement = {t.target: _placement(t) for t in inspection.targets}
    return _finite(
        {
            "schema": SCHEMA,
            "sdk_version": __version__,
            "versions": versions(),
            "model": {
                "name": model.name,
                "sha256": model.sha256,
                "macs": totals.macs,
                "params": totals.params,
                "inputs": [_tensor(t) for t in model.inputs],
                "outputs": [_tensor(t) for t in model.outputs],
            },
            "calibration": result.calibration,
            "evaluation": result.evaluation,
            "host": {"cpu": host.cpu_model, "threads": host.cores},
            "targets": [
                {**_target(b, by_id[b.target], directory), "placement": placement[b.target]} for b in result.bundles
            ],
            "notes": list(result.notes),
            "seconds": round(result.seconds, 2),
        }
    )


def _target(bundle: TargetBundle, profile: TargetProfile, directory: Path) -> dict[str, Any]:
    latency = bundle.latency
    return {
        "target": profile.id,
        "name": profile.name,
        "kind": profile.kind.value,
        "unit": profile.compute.unit,
        "format": bundle.format,
        "precision": bundle.precision.value,
        "bundle": bundle.directory.relative_to(directory).as_posix(),
        "artifact": {
            "file": bundle.artifact.path.relative_to(directory).as_posix(),
            "sha256": bundle.artifact.sha256,
            "size_bytes": bundle.artifact.size_bytes,
        },
        "float_nodes": [{"node": n.node, "op": n.op_type, "reason": n.reason} for n in bundle.float_nodes],
        "fidelity": {**bundle.fidelity.to_dict(), "verified_on": bundle.verified_on},
        "latency": {
            "host": _measured(latency.host),
            "device": _measured(latency.device),
            "predicted": _predicted(latency),
            "notes": list(latency.notes),
        },
        "op_breakdown": (
            {"source": latency.op_breakdown_source, "ms": latency.op_breakdown_ms} if latency.op_breakdown_ms else None
        ),
        "layer_sensitivity": [{"tensor": e.tensor, "op": e.op_type, "sqnr_db": e.sqnr_db} for e in bundle.layers],
        "vela": _vela(bundle.vela),
        "warnings": list(bundle.warnings),
        "seconds": round(bundle.seconds, 2),
    }


def _placement(target: Any) -> dict[str, Any]:
    """Where the float graph's nodes run on the target (edge_sdk.inspect), before any conversion."""
    return {
        "unit": target.unit,
        "fallback_unit": target.fallback_unit,
        "on_unit": target.on_unit,
        "on_fallback": target.on_fallback,
        "unsupported": target.unsupported,
        "macs_on_unit_pct": target.macs_on_unit_pct,
        "partitions": target.partitions,
        "fits": target.fit.ok,
        "fit": target.fit.reason,
        "fallbacks": [{"op": f.op_type, "nodes": f.nodes, "reason": f.reason} for f in target.fallbacks],
    }


def _tensor(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": str(spec.dtype)}


def _measured(run: BenchmarkResult | None) -> dict[str, Any] | None:
    if run is None or run.stats is None or run.conditions is None:
        return None
    return {
        "median_ms": run.stats.median_ms,
        "p90_ms": run.stats.p90_ms,
        "runs": len(run.samples_ms),
        "threads": run.conditions.threads,
        "runtime": f"{run.conditions.runtime} {run.conditions.runtime_version}",
        "device": run.device,
    }


def _predicted(latency: Any) -> dict[str, Any] | None:
    p = latency.predicted
    if p is None:
        return None
    return {
        "median_ms": p.latency_ms,
        "low_ms": p.low_ms,
        "high_ms": p.high_ms,
        "method": p.method,
        "threads": latency.predicted_threads,
    }


def _vela(vela: Any) -> dict[str, Any] | None:
    if vela is None:
        return None
    return {
        "npu_ops": vela.npu_ops,
        "cpu_ops": vela.cpu_ops,
        "sram_bytes": vela.sram_bytes,
        "cycles": vela.cycles,
        "inference_ms": vela.inference_time_ms,
        "accelerator": vela.accelerator,
    }


def _finite(value: Any) -> Any:
    """JSON has no inf or NaN: an identical output's infinite SQNR becomes null."""
    value = to_jsonable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
