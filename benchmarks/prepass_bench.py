"""Float pre-passes (edge_sdk.prepass) against int8 fidelity, per engine.

EfficientNet-Lite0 (pretrained): 100 calibration crops (seed 1), 300 evaluation crops (seed 2).
Each variant is quantized by onnxruntime quantize_static (QDQ, MinMax, activations QUInt8, weights
QInt8, per channel unless said) and by nncf.quantize, then compared with the float model on the
evaluation crops: SQNR over all logits and top-1 agreement. The demo MNIST model gets the same
treatment, scored by accuracy on its 1,000 evaluation digits.

The QDQ graphs run in ONNX Runtime with graph_optimization_level=ORT_DISABLE_ALL: that executes
them as exact fake-quant, which is what an int8 target computes. With ORT_ENABLE_ALL, ORT's u8s8
kernels on an AVX2 host without VNNI saturate and lose about 7 dB, an artifact of the host.

    python benchmarks/prepass_bench.py    # prints a table, writes benchmarks/results/prepass.json
"""

from __future__ import annotations

import os

# One BLAS thread: the covariance products of round_weights are small, and OpenBLAS threads spin
# against each other (and against ONNX Runtime's) on a busy 2-core machine, ten times slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# NNCF_CI swaps NNCF's telemetry for a stub; CI=true makes openvino_telemetry decline at import.
os.environ["NNCF_CI"] = "1"
os.environ["CI"] = "true"

import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import ort_quantize_static
from models import efficientnet_lite0_onnx
from photos import crops, imagenet_nchw

from edge_sdk.demo import DEMO_MODEL
from edge_sdk.equalize import equalize
from edge_sdk.model import Model, load_model
from edge_sdk.prepass import correct_bias, round_weights

ROOT = Path(__file__).resolve().parent.parent
Samples = list[dict[str, np.ndarray]]
Prepass = Callable[[Model, Samples], Model]

PREPASSES: dict[str, Prepass] = {
    "none": lambda m, d: m,
    "equalize": lambda m, d: equalize(m)[0],
    "correct_bias": lambda m, d: correct_bias(m, d)[0],
    "equalize + correct_bias": lambda m, d: correct_bias(equalize(m)[0], d)[0],
    "round_weights": lambda m, d: round_weights(m, d)[0],
    "equalize + round_weights": lambda m, d: round_weights(equalize(m)[0], d)[0],
    # per-tensor weight targets (rpi5-hailo8l) simulate per-tensor weights
    "round_weights per tensor": lambda m, d: round_weights(m, d, per_channel=False)[0],
    "equalize + round_weights per tensor": lambda m, d: round_weights(equalize(m)[0], d, per_channel=False)[0],
}
# engine -> the pre-passes it is measured with
ENGINES: dict[str, tuple[str, ...]] = {
    "ort per-channel": (
        "none",
        "equalize",
        "correct_bias",
        "equalize + correct_bias",
        "round_weights",
        "equalize + round_weights",
    ),
    "nncf default": ("none", "equalize", "correct_bias", "round_weights"),
    "nncf overflow_fix=disable": ("none", "correct_bias", "round_weights"),
    "ort per-tensor": ("none", "equalize", "round_weights per tensor", "equalize + round_weights per tensor"),
}


def ort_int8(proto: onnx.ModelProto, data: Samples, *, per_channel: bool) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, source)
        ort_quantize_static(source, target, data, per_channel=per_channel)
        return onnx.load(str(target))


def nncf_int8(proto: onnx.ModelProto, data: Samples, *, overflow_fix: str | None) -> onnx.ModelProto:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    logging.getLogger("nncf").setLevel(logging.ERROR)
    advanced = None if overflow_fix is None else AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix))
    return nncf.quantize(proto, nncf.Dataset(data), subset_size=len(data), advanced_parameters=advanced)


QUANTIZERS: dict[str, Callable[[onnx.ModelProto, Samples], onnx.ModelProto]] = {
    "ort per-channel": lambda p, d: ort_int8(p, d, per_channel=True),
    "ort per-tensor": lambda p, d: ort_int8(p, d, per_channel=False),
    "nncf default": lambda p, d: nncf_int8(p, d, overflow_fix=None),
    "nncf overflow_fix=disable": lambda p, d: nncf_int8(p, d, overflow_fix="disable"),
}


def logits(proto: onnx.ModelProto, data: Samples) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, sample)[0] for sample in data])


def sqnr_db(reference: np.ndarray, quantized: np.ndarray) -> float:
    return float(10 * np.log10(np.square(reference).sum() / np.square(reference - quantized).sum()))


def efficientnet() -> tuple[Model, Samples, Samples]:
    model = load_model(efficientnet_lite0_onnx())
    name = model.inputs[0].name
    calibration = [{name: x[None]} for x in imagenet_nchw(crops(100, seed=1))]
    evaluation = [{name: x[None]} for x in imagenet_nchw(crops(300, seed=2))]
    return model, calibration, evaluation


def demo() -> tuple[Model, Samples, Samples, np.ndarray]:
    model = load_model(DEMO_MODEL)
    name = model.inputs[0].name

    def split(file: str) -> tuple[Samples, np.ndarray]:
        arrays = np.load(ROOT / "calibration" / "demo" / file)
        x = ((arrays["images"].astype(np.float32) / 255.0 - 0.1307) / 0.3081).astype(np.float32)
        return [{name: image[None]} for image in x], arrays["labels"]

    (calibration, _), (evaluation, labels) = split("calib.npz"), split("eval.npz")
    return model, calibration, evaluation, labels


def prepassed(model: Model, data: Samples) -> tuple[dict[str, Model], dict[str, float]]:
    needed = {p for passes in ENGINES.values() for p in passes}
    models, seconds = {}, {}
    for name in (p for p in PREPASSES if p in needed):
        start = time.perf_counter()
        models[name] = PREPASSES[name](model, data)
        seconds[name] = time.perf_counter() - start
    return models, seconds


def main() -> None:
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer warns on the root logger
    ort.set_default_logger_severity(3)
    big, big_calibration, big_evaluation = efficientnet()
    small, small_calibration, small_evaluation, labels = demo()
    reference = logits(big.proto, big_evaluation)
    small_reference = logits(small.proto, small_evaluation)
    big_models, big_seconds = prepassed(big, big_calibration)
    small_models, _ = prepassed(small, small_calibration)
    rows = []
    header = f"{'engine':26} {'pre-pass':36} {'SQNR dB':>8} {'top-1 agr':>9} {'demo acc':>8} {'prepass s':>9}"
    print(
        f"EfficientNet-Lite0, 100 calibration / 300 evaluation crops; demo float accuracy "
        f"{(small_reference.argmax(1) == labels).mean():.4f}\n{header}"
    )
    for engine, passes in ENGINES.items():
        for name in passes:
            quantized = logits(QUANTIZERS[engine](big_models[name].proto, big_calibration), big_evaluation)
            small_quantized = logits(QUANTIZERS[engine](small_models[name].proto, small_calibration), small_evaluation)
            row = {
                "engine": engine,
                "prepass": name,
                "sqnr_db": round(sqnr_db(reference, quantized), 2),
                "top1_agreement": round(float((reference.argmax(1) == quantized.argmax(1)).mean()), 4),
                "demo_accuracy": round(float((small_quantized.argmax(1) == labels).mean()), 4),
                "prepass_seconds": round(big_seconds[name], 1),
            }
            rows.append(row)
            print(
                f"{engine:26} {name:36} {row['sqnr_db']:>8.2f} {row['top1_agreement']:>9.3f} "
                f"{row['demo_accuracy']:>8.3f} {row['prepass_seconds']:>9.1f}",
                flush=True,
            )
    out = Path(__file__).resolve().parent / "results" / "prepass.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "model": "EfficientNet-Lite0",
                "calibration_crops": 100,
                "evaluation_crops": 300,
                "demo_float_accuracy": float((small_reference.argmax(1) == labels).mean()),
                "reports": {name: list(big_models[name].passes) for name in big_models},
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
