"""CNNs built in code as ONNX graphs (onnx.helper, seeded random weights: fine for latency), so the
latency model can be fitted on models whose graphs are at hand. Nothing is downloaded; the builders need
numpy and onnx only.

Every build is deterministic (the same bytes every time, in every process), so the sha256 of a file made
from a zoo model identifies it across runs: stored host and device runs are tied back to their graphs
(edge_sdk.calibrate). Families: MobileNet v1 (depthwise separable, ReLU6), MobileNet v2 (inverted
residuals), MobileNet v3 Large/Small (hard-swish, squeeze-excite), ResNet-10/18 (basic blocks).

    reference_models()["MobileNet v2 1.0X"]      # the graph behind a row of reference_latencies.csv
    for name, proto in calibration_models():     # a small set that spans the families and sizes
        ...
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_sdk.errors import UsageError
from edge_sdk.model import Model, load_model

OPSET = 17


class _Net:
    """Appends nodes to one graph; every method returns the name of its output tensor."""

    def __init__(self, name: str, resolution: int, seed: int = 0) -> None:
        self.name, self.rng = name, np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.channels = 3
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, resolution, resolution])

    def _tensor(self, prefix: str, array: np.ndarray) -> str:
        name = f"{prefix}_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def _node(self, op: str, inputs: list[str], **attrs) -> str:
        out = f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(
        self,
        x: str,
        out_ch: int,
        k: int,
        stride: int = 1,
        *,
        groups: int = 1,
        act: str | None = "relu",
        gain: float = 1.0,
    ) -> str:
        in_ch = self.channels
        fan_in = in_ch // groups * k * k
        # He-scaled weights keep activations O(1) through depth: no overflow, no denormals slowing x86.
        w = self.rng.standard_normal((out_ch, in_ch // groups, k, k)) * gain * math.sqrt(2.0 / fan_in)
        b = self.rng.standard_normal(out_ch) * 0.01
        pad = k // 2
        y = self._node(
            "Conv",
            [x, self._tensor("w", w), self._tensor("b", b)],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=groups,
        )
        self.channels = out_ch
        return self.act(y, act)

    def act(self, x: str, kind: str | None) -> str:
        if kind == "relu":
            return self._node("Relu", [x])
        if kind == "relu6":
            return self._node("Clip", [x, self._tensor("lo", np.array(0.0)), self._tensor("hi", np.array(6.0))])
        if kind == "hswish":
            return self._node("HardSwish", [x])
        if kind == "hsigmoid":
            return self._node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)
        return x

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b])

    def squeeze_excite(self, x: str, reduce: int = 4) -> str:
        channels = self.channels
        pooled = self._node("GlobalAveragePool", [x])
        squeezed = self.conv(pooled, _round8(channels / reduce), 1, act="relu")
        gate = self.conv(squeezed, channels, 1, act="hsigmoid")
        return self._node("Mul", [x, gate])

    def max_pool(self, x: str) -> str:
        return self._node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])

    def head(self, x: str, classes: int = 1000) -> str:
        pooled = self._node("GlobalAveragePool", [x])
        flat = self._node("Flatten", [pooled])
        w = self.rng.standard_normal((classes, self.channels)) * math.sqrt(1.0 / self.channels)
        return self._node("Gemm", [flat, self._tensor("fc", w), self._tensor("fcb", np.zeros(classes))], transB=1)

    def finish(self, y: str) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [y], ["output"], name="output"))
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, self.name, [self.input], [out], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return onnx.shape_inference.infer_shapes(model)


def _round8(value: float) -> int:
    """Channel counts rounded to a multiple of 8, as the MobileNet papers do."""
    return max(8, int(value + 4) // 8 * 8)


def mobilenet_v1(width: float, resolution: int) -> onnx.ModelProto:
    net = _Net(f"mobilenet_v1_{width}_{resolution}", resolution)
    x = net.conv("input", _round8(32 * width), 3, 2, act="relu6")
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
    for out_ch, stride in blocks:
        x = net.conv(x, net.channels, 3, stride, groups=net.channels, act="relu6")
        x = net.conv(x, _round8(out_ch * width), 1, act="relu6")
    return net.finish(net.head(x))


def mobilenet_v2(width: float, resolution: int) -> onnx.ModelProto:
    net = _Net(f"mobilenet_v2_{width}_{resolution}", resolution)
    x = net.conv("input", _round8(32 * width), 3, 2, act="relu6")
    for t, c, n, s in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for i in range(n):
            x = _inverted_residual(net, x, expand=t, out_ch=_round8(c * width), k=3, stride=s if i == 0 else 1)
    x = net.conv(x, max(1280, _round8(1280 * width)), 1, act="relu6")
    return net.finish(net.head(x))


def _inverted_residual(
    net: _Net,
    x: str,
    *,
    expand: float,
    out_ch: int,
    k: int,
    stride: int,
    act: str = "relu6",
    se: bool = False,
    mid: int | None = None,
) -> str:
    in_ch = net.channels
    hidden = mid or _round8(in_ch * expand)
    y = net.conv(x, hidden, 1, act=act) if hidden != in_ch else x
    y = net.conv(y, hidden, k, stride, groups=hidden, act=act)
    if se:
        y = net.squeeze_excite(y)
    y = net.conv(y, out_ch, 1, act=None, gain=0.5)
    return net.add(x, y) if stride == 1 and in_ch == out_ch else y


# MobileNet v3 (Howard et al. 2019, tables 1 and 2): kernel, expanded size, out, SE, activation, stride
_V3_LARGE = [
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
]
_V3_SMALL = [
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
]


def mobilenet_v3(size: str, resolution: int = 224) -> onnx.ModelProto:
    net = _Net(f"mobilenet_v3_{size}_{resolution}", resolution)
    x = net.conv("input", 16, 3, 2, act="hswish")
    for k, mid, out_ch, se, act, stride in _V3_LARGE if size == "large" else _V3_SMALL:
        x = _inverted_residual(net, x, expand=1, out_ch=out_ch, k=k, stride=stride, act=act, se=se, mid=mid)
    x = net.conv(x, 960 if size == "large" else 576, 1, act="hswish")
    pooled = net._node("GlobalAveragePool", [x])
    hidden = net.conv(pooled, 1280 if size == "large" else 1024, 1, act="hswish")
    return net.finish(net.head(hidden))


def resnet(depth: int, width: float, resolution: int) -> onnx.ModelProto:
    """ResNet-10 (one basic block per stage) or ResNet-18 (two)."""
    net = _Net(f"resnet{depth}_{width}_{resolution}", resolution)
    x = net.max_pool(net.conv("input", _round8(64 * width), 7, 2))
    per_stage = {10: 1, 18: 2}[depth]
    for stage, base in enumerate([64, 128, 256, 512]):
        for block in range(per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            in_ch, out_ch = net.channels, _round8(base * width)
            y = net.conv(x, out_ch, 3, stride)
            y = net.conv(y, out_ch, 3, act=None, gain=0.5)
            if stride != 1 or in_ch != out_ch:
                net.channels = in_ch
                x = net.conv(x, out_ch, 1, stride, act=None)
            x = net.act(net.add(x, y), "relu")
    return net.finish(net.head(x))


# Builders by name: the name is also the graph's name, so a file written as NAME.onnx is measured as NAME.
BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mobilenet_v1_0.25_128": functools.partial(mobilenet_v1, 0.25, 128),
    "mobilenet_v1_0.5_160": functools.partial(mobilenet_v1, 0.5, 160),
    "mobilenet_v1_1.0_224": functools.partial(mobilenet_v1, 1.0, 224),
    "mobilenet_v2_0.25_160": functools.partial(mobilenet_v2, 0.25, 160),
    "mobilenet_v2_0.5_128": functools.partial(mobilenet_v2, 0.5, 128),
    "mobilenet_v2_1.0_224": functools.partial(mobilenet_v2, 1.0, 224),
    "mobilenet_v3_small_224": functools.partial(mobilenet_v3, "small"),
    "mobilenet_v3_large_224": functools.partial(mobilenet_v3, "large"),
    "resnet10_0.25_128": functools.partial(resnet, 10, 0.25, 128),
    "resnet10_0.5_160": functools.partial(resnet, 10, 0.5, 160),
    "resnet18_0.25_224": functools.partial(resnet, 18, 0.25, 224),
}
# The models named in reference_latencies.csv. Its rows say "224x224 (assumed)": XNNPACK's end2end_bench
# builds these networks at 224 with random weights, as the builders here do.
REFERENCE_NAMES = {
    "MobileNet v1 1.0X": "mobilenet_v1_1.0_224",
    "MobileNet v2 1.0X": "mobilenet_v2_1.0_224",
    "MobileNet v3 Large": "mobilenet_v3_large_224",
    "MobileNet v3 Small": "mobilenet_v3_small_224",
}
# Each family at a small and a larger size, up to the reference models: the fit needs both overhead-bound
# and compute-bound points. The quick set keeps one small model per family.
CALIBRATION = tuple(BUILDERS)
QUICK_CALIBRATION = ("mobilenet_v1_0.25_128", "mobilenet_v2_0.25_160", "mobilenet_v3_small_224", "resnet10_0.25_128")


def build(name: str) -> onnx.ModelProto:
    """A fresh graph of the zoo model `name` (the caller may change it)."""
    if name not in BUILDERS:
        raise UsageError(f"no zoo model '{name}'; the zoo has {', '.join(BUILDERS)}")
    return BUILDERS[name]()


@functools.cache
def zoo_model(name: str) -> Model:
    """The zoo model loaded once per process, as built: no onnxslim pass (it would only drop the final
    Identity, which the runtimes drop too, and it would triple the build time)."""
    return load_model(build(name), simplify=False)


def reference_models() -> dict[str, Model]:
    """The graphs behind the model names of reference_latencies.csv."""
    return {reference: zoo_model(name) for reference, name in REFERENCE_NAMES.items()}


def calibration_models(quick: bool = False) -> list[tuple[str, onnx.ModelProto]]:
    """The models `calibrate_host` measures: every zoo model, or one small model per family."""
    return [(name, build(name)) for name in (QUICK_CALIBRATION if quick else CALIBRATION)]
