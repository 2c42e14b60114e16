"""Which unit of a target runs each node, and why not when it cannot.

Each constraint of an `[ops.<Op>]` table is checked by one small function here. Its docstring is
the rule as the user reads it; it returns None when the node passes, or the reason it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import onnx

from edge_sdk.costs import Graph
from edge_sdk.errors import UsageError
from edge_sdk.profile import Fallback, OpRule, Partitioning, Precision, TargetProfile


class Where(str, Enum):
    UNIT = "unit"  # the target's own compute unit (NPU, GPU, XNNPACK on a CPU)
    FALLBACK = "fallback"  # the fallback CPU
    UNSUPPORTED = "unsupported"  # nowhere: the target cannot run this node


@dataclass(frozen=True)
class Placement:
    node: str
    op_type: str
    where: Where
    reason: str


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _kernel(node: onnx.NodeProto, graph: Graph) -> tuple[int, ...]:
    kernel = _attr(node, "kernel_shape")
    if kernel:
        return tuple(kernel)
    w = graph.tensor(node.input[1]) if len(node.input) > 1 else None
    return tuple(w.shape[2:]) if w is not None and node.op_type in ("Conv", "ConvTranspose") else ()


def _pair(values: tuple[int, ...] | list[int] | None) -> tuple[int, int] | None:
    if not values:
        return None
    return (values[0], values[-1]) if len(values) >= 2 else (values[0], 1)


def check_kernel_max(node, graph, limit):
    """kernel height and width at most {0[0]}x{0[1]}"""
    k = _pair(_kernel(node, graph))
    if k and (k[0] > limit[0] or k[1] > limit[1]):
        return f"kernel {k[0]}x{k[1]} is larger than {limit[0]}x{limit[1]}"
    return None


def check_kernel_area_max(node, graph, limit):
    """kernel area (height x width) at most {0}"""
    k = _pair(_kernel(node, graph))
    if k and k[0] * k[1] > limit:
        return f"kernel area {k[0] * k[1]} is more than {limit}"
    return None


def check_stride_max(node, graph, limit):
    """stride at most {0[0]}x{0[1]}"""
    s = _pair(_attr(node, "strides"))
    if s and (s[0] > limit[0] or s[1] > limit[1]):
        return f"stride {s[0]}x{s[1]} is larger than {limit[0]}x{limit[1]}"
    return None


def check_dilation_max(node, graph, limit):
    """dilation at most {0[0]}x{0[1]}"""
    d = _pair(_attr(node, "dilations"))
    if d and (d[0] > limit[0] or d[1] > limit[1]):
        return f"dilation {d[0]}x{d[1]} is larger than {limit[0]}x{limit[1]}"
    return None


def check_dilation_equal(node, graph, required):
    """the same dilation in height and width"""
    d = _pair(_attr(node, "dilations"))
    if required and d and d[0] != d[1]:
        return f"dilation {d[0]}x{d[1]} differs between height and width"
    return None


def check_grouped(node, graph, allowed):
    """grouped convolution only when depthwise (group = input channels)"""
    group = _attr(node, "group", 1)
    x = graph.tensor(node.input[0])
    channels = x.shape[1] if x is not None and len(x.shape) > 1 else None
    if not allowed and group > 1 and group != channels:
        return f"grouped convolution (group={group}, {channels} input channels) is not depthwise"
    return None


def check_max_dims(node, graph, limit):
    """tensors with at most {0} dimensions larger than 1"""
    for name in [*node.input, *node.output]:
        t = graph.tensor(name)
        if t is not None and not t.constant and sum(d > 1 for d in t.shape) > limit:
            return f"tensor '{name}' has shape {'x'.join(map(str, t.shape))}, more than {limit} dims > 1"
    return None


def _axes(node: onnx.NodeProto, graph: Graph) -> list[int]:
    axes = _attr(node, "axes")
    if axes is None and node.op_type.startswith("Reduce") and len(node.input) > 1:
        array = graph.constant_array(node.input[1])
        axes = array.tolist() if array is not None else None
    if axes is None:
        axis = _attr(node, "axis")
        axes = [axis] if axis is not None else None
    x = graph.tensor(node.input[0]) if node.input else None
    rank = len(x.shape) if x is not None else 4
    if axes is None:  # reductions without axes reduce everything
        return list(range(rank)) if node.op_type.startswith("Reduce") else []
    return [a + rank if a < 0 else a for a in axes]


def check_reduce_axes(node, graph, kind):
    """reduction over height and width only"""
    x = graph.tensor(node.input[0]) if node.input else None
    rank = len(x.shape) if x is not None else 4
    spatial = set(range(2, rank))
    axes = set(_axes(node, graph))
    if kind == "spatial" and not axes <= spatial:
        return f"reduces over axes {sorted(axes)}, not only height and width {sorted(spatial)}"
    return None


def check_batch_axis(node, graph, allowed):
    """no operation along the batch axis (axis 0)"""
    if not allowed and 0 in _axes(node, graph):
        return "operates along the batch axis (axis 0)"
    return None


def check_modes(node, graph, modes):
    """mode one of {0}"""
    mode = _attr(node, "mode", "nearest" if node.op_type == "Resize" else None)
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode is not None and mode not in modes:
        return f"mode '{mode}' is not one of {', '.join(modes)}"
    return None


def check_constant_weights(node, graph, required):
    """weights and bias are constants"""
    if required:
        for name in node.input[1:]:
            if name and name not in graph.constants:
                return f"input '{name}' is computed at run time, not a constant"
    return None


def check_channels_max(node, graph, limit):
    """at most {0} channels"""
    for name in node.output:
        t = graph.tensor(name)
        if t is not None and len(t.shape) > 1 and t.shape[1] > limit:
            return f"output '{name}' has {t.shape[1]} channels, more than {limit}"
    return None


def check_weights_abs_sum_max(node, graph, limit):
    """sum of absolute int8 weights per output channel at most {0}"""
    w = graph.constant_array(node.input[1]) if len(node.input) > 1 else None
    if w is None or w.ndim < 2:
        return None
    w = w.reshape(w.shape[0], -1).astype(np.float64)
    # estimated for symmetric per-channel int8 quantization (scale = max|w| / 127)
    scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12) / 127.0
    worst = int(np.abs(np.round(w / scale)).sum(axis=1).max())
    if worst > limit:
        return f"sum of absolute int8 weights {worst} is more than {limit}"
    return None


def check_perms(node, graph, perms):
    """permutation one of {0}"""
    perm = tuple(_attr(node, "perm", ()) or ())
    if perm and perm not in perms:
        return f"permutation {list(perm)} is not one of {[list(p) for p in perms]}"
    return None


CHECKS: dict[str, Callable[[onnx.NodeProto, Graph, Any], str | None]] = {
    "kernel_max": check_kernel_max,
    "kernel_area_max": check_kernel_area_max,
    "stride_max": check_stride_max,
    "dilation_max": check_dilation_max,
    "dilation_equal": check_dilation_equal,
    "grouped": check_grouped,
    "max_dims": check_max_dims,
    "reduce_axes": check_reduce_axes,
    "batch_axis": check_batch_axis,
    "modes": check_modes,
    "constant_weights": check_constant_weights,
    "channels_max": check_channels_max,
    "weights_abs_sum_max": check_weights_abs_sum_max,
    "perms": check_perms,
}


def _restricts(key: str, value: Any) -> bool:
    if isinstance(value, bool):  # grouped/batch_axis restrict when false, the others when true
        return value is (key not in ("grouped", "batch_axis"))
    return value is not None


def rule_text(rule: OpRule) -> str:
    """The limits of one op rule as a sentence, from the checks' docstrings."""
    parts = [
        (check.__doc__ or key).format(getattr(rule, key))
        for key, check in CHECKS.items()
        if _restricts(key, getattr(rule, key))
    ]
    if rule.precisions:
        parts.append("precisions " + ", ".join(p.value for p in rule.precisions))
    return "; ".join(parts) if parts else "no limits"


def decide(node: onnx.NodeProto, graph: Graph, target: TargetProfile, precision: Precision) -> tuple[bool, str]:
    """Whether the target's unit runs this node at this precision, and the reason if not."""
    rule = target.ops.rules.get(node.op_type)
    if rule is None:
        return False, f"{node.op_type} is not in the op list of {target.compute.unit}"
    if precision not in (rule.precisions or target.deploy.precisions):
        allowed = ", ".join(p.value for p in (rule.precisions or ()))
        return False, f"{node.op_type} runs on {target.compute.unit} only in {allowed}, not {precision.value}"
    for key, check in CHECKS.items():
        value = getattr(rule, key)
        if value is None:
            continue
        reason = check(node, graph, value)
        if reason:
            note = f" ({rule.note})" if rule.note else ""
            return False, f"{node.op_type}: {reason}{note}"
    return True, f"runs on {target.compute.unit}"


def place(graph: Graph, target: TargetProfile, precision: Precision) -> list[Placement]:
    """A placement for every node, in execution order."""
    if precision not in target.deploy.precisions:
        supported = ", ".join(p.value for p in target.deploy.precisions)
        raise UsageError(
            f"target '{target.id}' does not run {precision.value}; it supports {supported} "
            "(leave out --precision to use each target's default)"
        )
    fallback = Where.FALLBACK if target.ops.fallback is Fallback.CPU else Where.UNSUPPORTED
    cut_at: str | None = None
    placements = []
    for node in graph.nodes:
        name = node.name or node.output[0]
        ok, reason = decide(node, graph, target, precision)
        if cut_at is not None and ok:
            ok, reason = (
                False,
                (
                    f"comes after '{cut_at}', the first node {target.compute.unit} cannot run; "
                    f"from there on everything runs on {target.ops.fallback_unit} (one subgraph)"
                ),
            )
        if not ok and cut_at is None and target.ops.partitioning is Partitioning.SINGLE:
            cut_at = name
        placements.append(
            Placement(node=name, op_type=node.op_type, where=Where.UNIT if ok else fallback, reason=reason)
        )
    if target.ops.partitioning is Partitioning.LARGEST:
        placements = _keep_largest_run(placements, target, fallback)
    return placements


def _keep_largest_run(placements: list[Placement], target: TargetProfile, fallback: Where) -> list[Placement]:
    runs: list[tuple[int, int]] = []  # [start, end) of each run of nodes on the unit
    for i, p in enumerate(placements):
        if p.where is Where.UNIT:
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
    if len(runs) <= 1:
        return placements
    start, end = max(runs, key=lambda r: r[1] - r[0])  # the first of equally long runs
    reason = (
        f"{target.compute.unit} takes only its largest partition ({end - start} nodes, "
        f"'{placements[start].node}' to '{placements[end - 1].node}'); this one runs on "
        f"{target.ops.fallback_unit}"
    )
    return [
        p if p.where is not Where.UNIT or start <= i < end else Placement(p.node, p.op_type, fallback, reason)
        for i, p in enumerate(placements)
    ]


def count_partitions(placements: list[Placement]) -> tuple[int, int]:
    """(all partitions, partitions on the unit): runs of consecutive nodes on the same side."""
    runs, unit_runs, previous = 0, 0, None
    for p in placements:
        if p.where != previous:
            runs += 1
            unit_runs += p.where is Where.UNIT
            previous = p.where
    return runs, unit_runs
