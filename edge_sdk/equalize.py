"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization
and Bias Correction"): a data-free float pre-pass, exact where the activation between two Convs is
positively homogeneous. Pairs behind a bounded Clip (ReLU6) are left alone: the bound cannot be
rescaled per channel."""

from __future__ import annotations

import numpy as np
import onnx

from edge_sdk.costs import Graph
from edge_sdk.model import Model
from edge_sdk.prepass import PrepassReport, _array, _attr, _consumers, _copy, _finish, _layer, _store

_Pair = tuple[onnx.NodeProto, onnx.NodeProto]


def equalize(model: Model, *, iterations: int = 20) -> tuple[Model, PrepassReport]:
    """Cross-layer equalization: for each Conv -> [Relu | LeakyRelu | unbounded Clip | nothing] -> Conv
    pair, scale output channel i of the first by 1/s_i and input channel i of the second by s_i,
    s_i = sqrt(r1_i / r2_i) from the channels' weight ranges, so both end with range sqrt(r1_i r2_i).
    Iterated because a Conv can be the second of one pair and the first of the next. Exact: these
    activations are positively homogeneous. Pairs behind a bounded Clip (ReLU6) are left alone."""
    proto, inits = _copy(model)
    pairs, bounded = _pairs(proto, inits, Graph(model))
    names = [name for first, second in pairs for name in [*first.input[1:], second.input[1]] if name]
    arrays = {name: _array(inits, name) for name in names}
    for _ in range(iterations):
        for first, second in pairs:
            _equalize_pair(arrays, first, second)
    for name, value in arrays.items():
        _store(inits, name, value)
    detail = f"cross-layer equalization: {len(pairs)} Conv pairs rescaled ({iterations} iterations)" + (
        f"; {bounded} pairs behind a bounded Clip (ReLU6) left alone: the bound cannot be rescaled per channel"
        if bounded
        else ""
    )
    return _finish(model, proto, PrepassReport("cross-layer equalization", len(pairs), detail))


def _pairs(proto: onnx.ModelProto, inits, graph: Graph) -> tuple[list[_Pair], int]:
    users = _consumers(proto)
    outputs = {o.name for o in proto.graph.output}

    def only_user(tensor: str) -> onnx.NodeProto | None:
        found = users.get(tensor, [])
        return found[0] if len(found) == 1 and tensor not in outputs else None

    pairs, bounded = [], 0
    for first in proto.graph.node:
        tensor = first.output[0]
        if not _scalable(first, inits, users) or (link := only_user(tensor)) is None:
            continue
        if link.op_type in ("Relu", "LeakyRelu", "Clip"):
            tensor = link.output[0]
            if link.op_type == "Clip" and not _unbounded(link, graph):
                bounded += _scalable(only_user(tensor), inits, users)
                continue
            link = only_user(tensor)
        if link is not None and _scalable(link, inits, users) and link.input[0] == tensor:
            pairs.append((first, link))
    return pairs, bounded


def _scalable(node: onnx.NodeProto | None, inits, users) -> bool:
    return node is not None and node.op_type == "Conv" and _layer(node, inits, users) is not None


def _unbounded(clip: onnx.NodeProto, graph: Graph) -> bool:
    """Clip(0 or -inf or nothing, +inf or nothing): positively homogeneous like Relu."""
    low_name, high_name = [*clip.input[1:3], "", ""][:2]
    low, high = (graph.constant_array(name) if name else None for name in (low_name, high_name))
    low_ok = not low_name or (low is not None and float(low) in (0.0, -np.inf))
    return low_ok and (not high_name or (high is not None and float(high) == np.inf))


def _equalize_pair(arrays: dict[str, np.ndarray], first: onnx.NodeProto, second: onnx.NodeProto) -> None:
    w1, w2 = arrays[first.input[1]], arrays[second.input[1]]
    groups = int(_attr(second, "group", 1))
    # second's weight as (groups, outputs per group, inputs per group, kernel...): input i = (i // n, i % n)
    view = w2.reshape(groups, w2.shape[0] // groups, w2.shape[1], -1)
    r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
    r2 = np.abs(view).max(axis=(1, 3)).reshape(-1)
    s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
    arrays[first.input[1]] = w1 / s.reshape(-1, *[1] * (w1.ndim - 1))
    if len(first.input) > 2 and first.input[2]:
        arrays[first.input[2]] = arrays[first.input[2]] / s
    arrays[second.input[1]] = (view * s.reshape(groups, 1, -1, 1)).reshape(w2.shape)
