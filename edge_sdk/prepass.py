"""Float pre-passes that make int8 post-training quantization more accurate, whichever engine runs it.

Each pass returns a new Model (the input proto is never touched) and a PrepassReport.
- equalize (edge_sdk.equalize, data-free): cross-layer equalization (Nagel et al. 2019, "Data-Free
  Quantization Through Weight Equalization and Bias Correction"); it reuses this module's helpers.
- correct_bias: the same paper's empirical bias correction for the weight rounding.
- round_weights: GPTQ (Frantar et al. 2023) rounding onto the engine's own grid, then bias correction.
The data-driven passes simulate the weight quantization of onnxruntime.quantization (quant_utils.
compute_scale_zp, symmetric int8), NNCF and TFLite int8: symmetric, scale = max|w| / 127 per output
channel or per tensor, round half to even, clip to [-127, 127] (narrow range) or [-128, 127].
Measured on EfficientNet-Lite0 by benchmarks/prepass_bench.py (ORT per channel, SQNR of the logits):
none 15.3 dB, equalize 15.3, correct_bias 17.5, round_weights 19.7.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from edge_sdk.errors import DataError
from edge_sdk.gptq import gptq_round, scale_setters
from edge_sdk.model import Model

# Calibration values below this are flushed to zero before products: their squares would be
# float32 subnormals, which slow BLAS down a hundredfold and contribute nothing.
_TINY = float(np.sqrt(np.finfo(np.float32).tiny))
_BUDGET_BYTES = 256 * 2**20  # input covariances held at once by round_weights (a 2 GB board copes)
# bias correction leaves a layer alone when its input mean comes from fewer positions than this: a
# squeeze-excite conv or a classifier reads one position per sample, and the mean of a few samples
# is noise that the correction would add to every output (PP-OCR's classifier lost 1.4 dB to it)
_MIN_POSITIONS = 256


@dataclass(frozen=True)
class PrepassReport:
    name: str  # "cross-layer equalization", "bias correction", ...
    changed: int  # layers or pairs changed
    detail: str  # one line for the user


@dataclass(frozen=True)
class _Grid:
    """The engine's symmetric int8 weight grid."""

    per_channel: bool
    narrow_range: bool

    @property
    def qmin(self) -> int:
        return -127 if self.narrow_range else -128

    def scales(self, rows: np.ndarray) -> np.ndarray:
        """Scales (G, R, 1) for weight rows (G, R, K), computed as onnxruntime does (float64, then float32)."""
        absmax = np.abs(rows).max(axis=2, keepdims=True) if self.per_channel else np.abs(rows).max(initial=0.0)
        scale = np.broadcast_to(2.0 * np.float64(absmax) / (127 - self.qmin), (*rows.shape[:2], 1))
        return np.where(scale > 0, scale.astype(np.float32), np.float32(1.0))

    def fake_quant(self, rows: np.ndarray) -> np.ndarray:
        scale = self.scales(rows)
        return np.clip(np.round(rows.astype(np.float32) / scale), self.qmin, 127) * scale


@dataclass(frozen=True)
class _Layer:
    """A Conv or Gemm whose weight (and bias, if any) are initializers used by no other node."""

    node: onnx.NodeProto
    weight: str
    bias: str | None
    groups: int  # Conv groups; 1 for Gemm
    bias_scale: float  # output shift per unit of bias: Gemm alpha / beta, 1 for Conv


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _copy(model: Model) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    return proto, {t.name: t for t in proto.graph.initializer}


def _consumers(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _array(inits: Mapping[str, onnx.TensorProto], name: str) -> np.ndarray:
    return numpy_helper.to_array(inits[name]).astype(np.float64)


def _store(inits: Mapping[str, onnx.TensorProto], name: str, value: np.ndarray) -> None:
    inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))


def _finish(model: Model, proto: onnx.ModelProto, report: PrepassReport) -> tuple[Model, PrepassReport]:
    return dataclasses.replace(model, proto=proto, passes=(*model.passes, report.detail)), report


def _collect(proto: onnx.ModelProto, layers: list[_Layer], data, add: Callable[[_Layer, np.ndarray], None]) -> None:
    """Runs the float model on every sample and calls add(layer, the layer's input) for every layer."""
    by_input: dict[str, list[_Layer]] = {}
    for layer in layers:
        by_input.setdefault(layer.node.input[0], []).append(layer)
    aug = onnx.ModelProto()
    aug.CopyFrom(proto)
    known = {v.name: v for v in [*aug.graph.value_info, *aug.graph.output]}
    fetched = [t for t in by_input if t not in {i.name for i in aug.graph.input}]
    del aug.graph.output[:]
    aug.graph.output.extend(
        known.get(t) or helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in fetched
    )
    aug.graph.output.extend([] if fetched else proto.graph.output)  # a graph needs an output
    session = ort.InferenceSession(aug.SerializeToString(), providers=["CPUExecutionProvider"])
    count = 0
    for count, sample in enumerate(data, 1):
        feeds = {name: np.asarray(value) for name, value in sample.items()}
        try:
            outputs = session.run(None, feeds)  # checks input names, shapes and dtypes
        except Exception as exc:  # ORT raises its own types
            message = " ".join(str(exc).split())
            raise DataError(f"calibration sample {count - 1} does not fit the model ({message})") from None
        values = {**feeds, **dict(zip(fetched, outputs[: len(fetched)], strict=True))}
        for name, users in by_input.items():
            x = np.asarray(values[name], np.float32)
            x = np.where(np.abs(x) < _TINY, np.float32(0), x)
            for layer in users:
                add(layer, _input(x, layer))
    if count == 0:
        raise DataError("no calibration samples; give at least one (a hundred or more is best)")


def _layers(proto: onnx.ModelProto, inits: Mapping[str, onnx.TensorProto]) -> tuple[list[_Layer], int]:
    users = _consumers(proto)
    found = [_layer(node, inits, users) for node in proto.graph.node if node.op_type in ("Conv", "Gemm")]
    layers = [layer for layer in found if layer is not None]
    return layers, len(found) - len(layers)


def _own(name: str, inits: Mapping[str, onnx.TensorProto], users: Mapping[str, list]) -> bool:
    return name in inits and len(users.get(name, [])) == 1 and inits[name].data_type == onnx.TensorProto.FLOAT


def _layer(node: onnx.NodeProto, inits, users) -> _Layer | None:
    """The layer, or None when its weight or bias is shared, computed, or of a layout we do not handle."""
    if len(node.input) < 2 or not _own(node.input[1], inits, users):
        return None
    dims = tuple(inits[node.input[1]].dims)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and not _own(bias, inits, users):
        return None
    if node.op_type == "Gemm":
        alpha, beta = _attr(node, "alpha", 1.0), _attr(node, "beta", 1.0)
        n_out = dims[0] if _attr(node, "transB", 0) else dims[1]
        if beta == 0 or (bias is not None and int(np.prod(inits[bias].dims)) != n_out):
            return None
        return _Layer(node, node.input[1], bias, 1, alpha / beta)
    if len(dims) != 4 or _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
        return None
    return _Layer(node, node.input[1], bias, int(_attr(node, "group", 1)), 1.0)


def _rows(w: np.ndarray, layer: _Layer) -> np.ndarray:
    """Weight as (groups, output channels per group, inputs per output)."""
    if layer.node.op_type == "Gemm":
        return (w if _attr(layer.node, "transB", 0) else w.T)[None]
    return w.reshape(layer.groups, w.shape[0] // layer.groups, -1)


def _unrows(rows: np.ndarray, shape: tuple[int, ...], layer: _Layer) -> np.ndarray:
    if layer.node.op_type == "Gemm":
        return rows[0] if _attr(layer.node, "transB", 0) else rows[0].T
    return rows.reshape(shape)


def _input(x: np.ndarray, layer: _Layer) -> np.ndarray:
    """The layer's input with samples (Conv) or rows (Gemm) first."""
    return x.T if layer.node.op_type == "Gemm" and _attr(layer.node, "transA", 0) else x


def _taps(x: np.ndarray, layer: _Layer, kernel: tuple[int, ...]) -> list[list[np.ndarray]]:
    """The zero-padded input as each kernel tap of a Conv sees it: taps[i][j] is (N, C, Ho, Wo), the
    value under tap (i, j) at every output position (strided views, no copies)."""
    node = layer.node
    kh, kw = kernel[2:]
    top, left, bottom, right = _attr(node, "pads", [0, 0, 0, 0])
    sh, sw = _attr(node, "strides", [1, 1])
    dh, dw = _attr(node, "dilations", [1, 1])
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho = (padded.shape[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (padded.shape[3] - (kw - 1) * dw - 1) // sw + 1
    rows = [slice(i * dh, i * dh + (ho - 1) * sh + 1, sh) for i in range(kh)]
    cols = [slice(j * dw, j * dw + (wo - 1) * sw + 1, sw) for j in range(kw)]
    return [[padded[:, :, r, c] for c in cols] for r in rows]


def _patches(x: np.ndarray, layer: _Layer, kernel: tuple[int, ...]) -> np.ndarray:
    """What each output of the layer reads: (groups, positions, inputs per output), in the weight's order."""
    if layer.node.op_type == "Gemm":
        return x.reshape(1, x.shape[0], -1)
    windows = np.stack([np.stack(row, axis=-1) for row in _taps(x, layer, kernel)], axis=-2)  # N, C, Ho, Wo, kh, kw
    n, c, ho, wo, kh, kw = windows.shape
    g = layer.groups
    grouped = windows.reshape(n, g, c // g, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    return grouped.reshape(g, n * ho * wo, (c // g) * kh * kw)


def _patch_sums(x: np.ndarray, layer: _Layer, kernel: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """The sum over positions of what each output reads, (groups, inputs per output), and the number
    of positions: _patches summed, one strided slice per kernel tap instead of a copy per position."""
    if layer.node.op_type == "Gemm":
        rows = x.reshape(x.shape[0], -1)
        return rows.sum(axis=0, dtype=np.float64)[None], rows.shape[0]
    taps = _taps(x, layer, kernel)
    sums = np.array([[tap.sum(axis=(0, 2, 3), dtype=np.float64) for tap in row] for row in taps])  # kh, kw, C
    n, _, ho, wo = taps[0][0].shape
    return sums.transpose(2, 0, 1).reshape(layer.groups, -1), n * ho * wo


def _set_bias(proto, inits, layer: _Layer, shift: np.ndarray) -> None:
    """Subtracts an output shift (one value per output channel) from the layer's bias, adding one if needed."""
    delta = shift.reshape(-1) * layer.bias_scale
    if layer.bias is not None:
        old = _array(inits, layer.bias)
        _store(inits, layer.bias, old - delta.reshape(old.shape))
        return
    taken = {t.name for t in proto.graph.initializer} | {o for n in proto.graph.node for o in n.output}
    name = f"{layer.weight}_bias"
    while name in taken:
        name += "_"
    proto.graph.initializer.append(numpy_helper.from_array((-delta).astype(np.float32), name))
    del layer.node.input[2:]
    layer.node.input.append(name)


def correct_bias(
    model: Model, data: Iterable[Mapping[str, np.ndarray]], *, per_channel: bool = True, narrow_range: bool = True
) -> tuple[Model, PrepassReport]:
    """Subtract from every Conv and Gemm bias the mean output shift its weight rounding will cause:
    (W_q - W) applied to the mean of what each output reads on the calibration data (zero padding
    included, so borders are exact). The float model changes slightly; the quantized one gets closer."""
    proto, inits = _copy(model)
    layers, skipped = _layers(proto, inits)
    grid, moved, few = _Grid(per_channel, narrow_range), [], 0
    for layer, (_, mu, count) in zip(layers, _moments(model.proto, layers, data, inits, covariance=False), strict=True):
        if count < _MIN_POSITIONS:
            few += 1
            continue
        rows = _rows(_array(inits, layer.weight), layer)
        shift = ((grid.fake_quant(rows) - rows) * mu[:, None, :]).sum(axis=2)
        _set_bias(proto, inits, layer, shift)
        moved.append(float(np.abs(shift).max()))
    detail = (
        f"bias correction: {len(moved)} Conv/Gemm biases adjusted for int8 weight rounding "
        f"({'per channel' if per_channel else 'per tensor'}), largest shift {max(moved, default=0.0):.3g}"
        + (f"; {few} read too few positions for a steady mean and were left alone" if few else "")
        + _left_alone(skipped)
    )
    return _finish(model, proto, PrepassReport("bias correction", len(moved), detail))


def round_weights(
    model: Model, data: Iterable[Mapping[str, np.ndarray]], *, per_channel: bool = True, narrow_range: bool = True
) -> tuple[Model, PrepassReport]:
    """Put every Conv and Gemm weight on the engine's int8 grid, rounding each so that the layer's
    output on the calibration data stays closest to the float one (GPTQ on the centred input
    covariance), and correct each bias for the mean output shift that remains. The covariances are
    gathered a few layers per pass over the data, within _BUDGET_BYTES."""
    proto, inits = _copy(model)
    layers, skipped = _layers(proto, inits)
    samples = data if isinstance(data, Sequence) else list(data)  # read once per group of layers
    grid, gains, plain = _Grid(per_channel, narrow_range), [], 0
    for group in _by_budget(layers, inits):
        for layer, (cov, mu, count) in zip(group, _moments(model.proto, group, samples, inits), strict=True):
            gains.append(_round_layer(proto, inits, layer, grid, cov, mu if count >= _MIN_POSITIONS else None))
            plain += cov is None
    detail = (
        f"weight rounding: {len(layers)} Conv/Gemm weights put on the int8 grid "
        f"({'per channel' if per_channel else 'per tensor'}) by GPTQ with bias correction; output error "
        f"{np.median(gains) if gains else 1.0:.2f}x that of nearest rounding (median over layers)"
        + (f"; {plain} layers too wide for GPTQ rounded to nearest" if plain else "")
        + _left_alone(skipped)
    )
    return _finish(model, proto, PrepassReport("weight rounding", len(layers), detail))


def gptq_macs(model: Model) -> int | None:
    """Multiply-adds per calibration sample that round_weights spends gathering input covariances
    (its dominant cost), or None when an output shape is unknown."""
    proto, inits = _copy(model)
    layers, _ = _layers(proto, inits)
    shapes = {v.name: v.type.tensor_type.shape for v in [*proto.graph.value_info, *proto.graph.output]}
    total = 0
    for layer in layers:
        positions = 1
        if layer.node.op_type == "Conv":
            shape = shapes.get(layer.node.output[0])
            dims = [d.dim_value for d in shape.dim[2:]] if shape is not None else []
            if not dims or min(dims) <= 0:
                return None
            positions = int(np.prod(dims))
        inputs = _covariance_bytes(layer, inits) // 8  # groups * inputs per output squared
        total += positions * inputs
    return total


def _covariance_bytes(layer: _Layer, inits) -> int:
    dims = tuple(inits[layer.weight].dims)
    inputs = (
        int(np.prod(dims[1:])) if layer.node.op_type == "Conv" else dims[1 if _attr(layer.node, "transB", 0) else 0]
    )
    return layer.groups * inputs * inputs * 8


def _by_budget(layers: list[_Layer], inits) -> list[list[_Layer]]:
    groups: list[list[_Layer]] = [[]]
    used = 0
    for layer in layers:
        size = min(_covariance_bytes(layer, inits), _BUDGET_BYTES)  # wider ones keep no covariance
        if groups[-1] and used + size > _BUDGET_BYTES:
            groups.append([])
            used = 0
        groups[-1].append(layer)
        used += size
    return groups


def _moments(
    proto, layers: list[_Layer], data, inits, *, covariance: bool = True
) -> list[tuple[np.ndarray | None, np.ndarray, int]]:
    """Per layer and group: the covariance of what each output reads (None when not asked for or
    wider than the budget), its mean, and the number of positions they come from."""
    shapes = {layer.weight: tuple(inits[layer.weight].dims) for layer in layers}
    wide = {layer.weight for layer in layers if not covariance or _covariance_bytes(layer, inits) > _BUDGET_BYTES}
    sums: dict[str, list] = {layer.weight: [0.0, 0.0, 0] for layer in layers}

    def add(layer: _Layer, x: np.ndarray) -> None:
        m = sums[layer.weight]
        if layer.weight in wide:  # the mean alone needs no patches
            total, count = _patch_sums(x, layer, shapes[layer.weight])
            m[1], m[2] = m[1] + total, m[2] + count
            return
        p = np.ascontiguousarray(_patches(x, layer, shapes[layer.weight]))
        m[0] = m[0] + np.matmul(p.transpose(0, 2, 1), p).astype(np.float64)
        m[1] = m[1] + p.sum(axis=1, dtype=np.float64)
        m[2] += p.shape[1]

    _collect(proto, layers, data, add)
    out: list[tuple[np.ndarray | None, np.ndarray, int]] = []
    for layer in layers:
        square, total, count = sums[layer.weight]
        mu = total / count
        if layer.weight in wide:
            out.append((None, mu, count))
            continue
        cov = square / count - mu[:, :, None] * mu[:, None, :]
        # shrink towards the diagonal (which makes GPTQ plain rounding) as the samples per input fall:
        # with fewer samples than inputs the covariance is singular and GPTQ would fit noise
        shrink = min(1.0, cov.shape[-1] / count)
        diagonal = np.einsum("gkk->gk", cov)[:, :, None] * np.eye(cov.shape[-1])
        out.append(((1 - shrink) * cov + shrink * diagonal, mu, count))
    return out


def _left_alone(skipped: int) -> str:
    return f"; {skipped} Conv/Gemm layers with shared or computed weights left alone" if skipped else ""


def _round_layer(proto, inits, layer: _Layer, grid: _Grid, cov: np.ndarray | None, mu: np.ndarray | None) -> float:
    """Rounds one layer in place (to nearest without a covariance) and corrects its bias (unless
    `mu` is None); returns its output error over nearest rounding's, on the calibration covariance."""
    weight = _array(inits, layer.weight)
    rows = _rows(weight, layer)
    scale = grid.scales(rows)
    keep = scale_setters(rows, per_channel=grid.per_channel)
    nearest = grid.fake_quant(rows).astype(np.float64)  # also how the engine rounds the kept elements
    rounded = nearest if cov is None else gptq_round(rows, cov, scale, np.where(keep, nearest, np.nan))
    stored = np.where(keep, rows, rounded)  # the scale-setting element stays as it was: same scale
    _store(inits, layer.weight, _unrows(stored, weight.shape, layer))
    if mu is not None:
        _set_bias(proto, inits, layer, ((rounded - rows) * mu[:, None, :]).sum(axis=2))
    if cov is None:
        return 1.0
    error, baseline = rounded - rows, nearest - rows
    reference = np.einsum("grk,gkl,grl->", baseline, cov, baseline)
    return float(np.einsum("grk,gkl,grl->", error, cov, error) / reference) if reference > 0 else 1.0
