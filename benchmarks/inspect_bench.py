"""Inspection: MAC and parameter counts against independent counters, and how long inspecting a
real model for every shipped target takes.

    python benchmarks/inspect_bench.py            # prints a table, writes benchmarks/results/inspect.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import efficientnet_lite0_onnx, efficientnet_lite0_torch

from edge_sdk import list_targets
from edge_sdk.demo import DEMO_MODEL, run_demo
from edge_sdk.inspection import inspect

# published: tensorflow/tpu models/official/efficientnet/lite/README.md (4.7M params, 407M MAdds)
PUBLISHED = {"params": 4.7e6, "macs": 407e6}
# hand count: examples/README_demo_model.md
DEMO_HAND = {"params": 36_138, "macs": 922_336}


def torch_counts() -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = efficientnet_lite0_torch()
    with FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, 3, 224, 224))
    weights = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
    folded_biases = sum(m.num_features for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    fc_bias = sum(m.bias.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    return {"macs": counter.get_total_flops() // 2, "params": weights + folded_biases + fc_bias}


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    targets = list_targets()
    onnx_path = efficientnet_lite0_onnx()
    seconds, result = timed(lambda: inspect(onnx_path, targets))
    ours = {"macs": result.totals.macs, "params": result.totals.params}
    reference = torch_counts()
    demo_seconds, demo = timed(lambda: inspect(DEMO_MODEL, targets))
    accuracy = run_demo().float_accuracy
    rows = [
        ("EfficientNet-Lite0", "edge-sdk inspect", ours["macs"], ours["params"], seconds),
        ("EfficientNet-Lite0", "torch FlopCounterMode (BN folded)", reference["macs"], reference["params"], None),
        ("EfficientNet-Lite0", "published (tensorflow/tpu)", PUBLISHED["macs"], PUBLISHED["params"], None),
        ("demo model", "edge-sdk inspect", demo.totals.macs, demo.totals.params, demo_seconds),
        ("demo model", "hand count", DEMO_HAND["macs"], DEMO_HAND["params"], None),
    ]
    print(f"inspect across {len(targets)} targets (median of 3 runs, load + simplify + inspect)")
    print(f"{'model':20} {'counter':36} {'MACs':>14} {'params':>12} {'seconds':>8}")
    for model, counter, macs, params, secs in rows:
        print(
            f"{model:20} {counter:36} {macs:>14,.0f} {params:>12,.0f} {secs if secs is None else round(secs, 2)!s:>8}"
        )
    print(f"demo model float top-1 on the 1,000 held-out MNIST digits (ONNX Runtime): {accuracy:.4f}")
    out = Path(__file__).resolve().parent / "results" / "inspect.json"
    out.parent.mkdir(exist_ok=True)
    keys = ("model", "counter", "macs", "params", "seconds")
    out.write_text(
        json.dumps(
            {
                "targets": len(targets),
                "demo_float_accuracy": accuracy,
                "rows": [dict(zip(keys, r, strict=True)) for r in rows],
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
