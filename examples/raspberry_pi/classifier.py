"""The model side: a LiteRT interpreter for an edge-sdk .tflite, the preprocessing its manifest
(`<model>.tflite.json`) records, and top-k results with timings.

    model = load_classifier(Path("demo_mnist.int8.tflite"), threads=4)
    prediction = classify(model, pixels, top_k=3)   # pixels: uint8 (H, W, 1 or 3)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from images import centre_crop, resize_bilinear, resize_shorter_side, to_channels

CHANNEL_ORDERS = {"gray": 1, "rgb": 3, "bgr": 3}  # manifest "channel_order" -> channels it feeds
INSTALL_HINT = "pip install ai-edge-litert (or pip install tflite-runtime on boards without a LiteRT wheel)"


class ModelError(Exception):
    """A model or manifest this demo cannot use; the message names the file and the next step."""


@dataclass(frozen=True)
class Preprocess:
    """x = (pixel * scale - mean) / std per channel, after resizing (and cropping) to the input."""

    channel_order: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None  # shorter side, before the centre crop
    crop: tuple[int, int] | None
    source: str


@dataclass(frozen=True)
class TensorSpec:
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float  # 0 for float tensors
    zero_point: int


@dataclass(frozen=True)
class Classifier:
    path: Path
    interpreter: Any
    input: TensorSpec
    output: TensorSpec
    layout: str  # "NHWC" or "NCHW"
    preprocess: Preprocess
    labels: tuple[str, ...] | None
    threads: int

    @property
    def height(self) -> int:
        return self.input.shape[1 if self.layout == "NHWC" else 2]

    @property
    def width(self) -> int:
        return self.input.shape[2 if self.layout == "NHWC" else 3]

    @property
    def channels(self) -> int:
        return self.input.shape[3 if self.layout == "NHWC" else 1]


@dataclass(frozen=True)
class Scored:
    index: int
    label: str
    confidence: float


@dataclass(frozen=True)
class Prediction:
    top: tuple[Scored, ...]  # best first
    preprocess_ms: float
    invoke_ms: float


def load_classifier(path: Path, *, threads: int) -> Classifier:
    """The interpreter for `path` with its manifest's preprocessing, warmed up by one invoke."""
    if not path.is_file():
        raise ModelError(f"model {path}: no such file")
    interpreter = _interpreter(path, threads)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"model {path}: has {len(inputs)} inputs and {len(outputs)} outputs; a classifier has 1 and 1")
    manifest = read_manifest(path)
    spec = _tensor_spec(inputs[0])
    layout = _layout(spec.shape, manifest.get("nhwc_io"), path)
    channels = spec.shape[3 if layout == "NHWC" else 1]
    labels = manifest.get("labels")
    model = Classifier(
        path=path,
        interpreter=interpreter,
        input=spec,
        output=_tensor_spec(outputs[0]),
        layout=layout,
        preprocess=read_preprocess(manifest.get("preprocess"), channels, path),
        labels=tuple(str(label) for label in labels) if labels else None,
        threads=threads,
    )
    interpreter.set_tensor(spec.index, np.zeros(spec.shape, spec.dtype))
    interpreter.invoke()  # the first invoke pays one-off costs (XNNPACK packs weights); keep it out of the timings
    return model


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelError(f"LiteRT is not installed: {INSTALL_HINT}") from None
    return Interpreter


def _interpreter(path: Path, threads: int) -> Any:
    interpreter_class = _interpreter_class()
    try:
        with _native_stderr_without_info():
            interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"model {path}: LiteRT cannot load it ({reason}); export it again with edge-sdk") from None
    return interpreter


@contextmanager
def _native_stderr_without_info() -> Iterator[None]:
    """LiteRT's C++ logger writes "INFO: Created TensorFlow Lite XNNPACK delegate" straight to file
    descriptor 2 and Python cannot turn it off; hold fd 2 in a file and pass on everything else."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a detached service): nothing to tidy
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if not line.startswith("INFO: ")]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def _tensor_spec(details: dict[str, Any]) -> TensorSpec:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return TensorSpec(
        index=int(details["index"]),
        shape=tuple(int(n) for n in details["shape"]),
        dtype=np.dtype(details["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _layout(shape: tuple[int, ...], nhwc_io: object, path: Path) -> str:
    if len(shape) != 4 or shape[0] != 1:
        raise ModelError(f"model {path}: input shape {list(shape)} is not one image (1, H, W, C) or (1, C, H, W)")
    if nhwc_io is None:  # no manifest: channels are whichever end holds 1 or 3
        nhwc_io = shape[3] in (1, 3) or shape[1] not in (1, 3)
    layout = "NHWC" if nhwc_io else "NCHW"
    channels = shape[3] if nhwc_io else shape[1]
    if channels not in (1, 3):
        raise ModelError(f"model {path}: {layout} input {list(shape)} has {channels} channels; this demo feeds 1 or 3")
    return layout


def read_manifest(model_path: Path) -> dict[str, Any]:
    """The edge-sdk manifest beside the model, or {} when there is none (defaults apply)."""
    path = model_path.with_name(model_path.name + ".json")
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelError(f"manifest {path}: not valid JSON ({error}); copy it again from the bundle") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"manifest {path}: expected a JSON object")
    return manifest


def read_preprocess(entry: object, channels: int, model_path: Path) -> Preprocess:
    """The manifest's "preprocess" entry, checked against the input; None means resize to the input and
    scale to [0, 1]."""
    if entry is None:
        order = "gray" if channels == 1 else "rgb"
        return Preprocess(order, 1 / 255, (0.0,), (1.0,), None, None, "default: scale to [0, 1]")
    where = f"manifest {model_path.name}.json: preprocess"
    if not isinstance(entry, dict):
        raise ModelError(f"{where} must be an object or null, not {type(entry).__name__}")
    try:
        order = str(entry["channel_order"])
        mean = tuple(float(v) for v in entry["mean"])
        std = tuple(float(v) for v in entry["std"])
        resize, crop = entry.get("resize"), entry.get("crop")
        preprocess = Preprocess(
            channel_order=order,
            scale=float(entry["scale"]),
            mean=mean,
            std=std,
            resize=int(resize) if resize is not None else None,
            crop=(int(crop[0]), int(crop[1])) if crop is not None else None,
            source=str(entry.get("source", "manifest")),
        )
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise ModelError(f"{where} is malformed ({type(error).__name__}: {error})") from None
    if CHANNEL_ORDERS.get(order) != channels:
        raise ModelError(f"{where}: channel_order {order!r} does not fit an input with {channels} channels")
    if {len(mean), len(std)} - {1, channels} or 0.0 in std:
        raise ModelError(f"{where}: mean and std need 1 or {channels} values, std non-zero")
    return preprocess


def prepare(model: Classifier, pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) pixels -> the input tensor: channels, resize/crop, normalise, layout, quantize."""
    recipe = model.preprocess
    image = to_channels(pixels, recipe.channel_order)
    if recipe.resize is not None:
        image = resize_shorter_side(image, recipe.resize)
    if recipe.crop is not None:
        image = centre_crop(image, *recipe.crop)
    if image.shape[:2] != (model.height, model.width):
        image = resize_bilinear(image, model.height, model.width)
    mean, std = np.asarray(recipe.mean, np.float32), np.asarray(recipe.std, np.float32)
    x = (image * np.float32(recipe.scale) - mean) / std
    x = x[None] if model.layout == "NHWC" else x.transpose(2, 0, 1)[None]
    return quantize(x, model.input)


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.dtype.kind == "f":
        return x.astype(spec.dtype)
    if spec.scale == 0:
        raise ModelError(f"input of dtype {spec.dtype} has no quantization scale; this demo cannot feed it")
    info = np.iinfo(spec.dtype)
    return np.clip(np.round(x / spec.scale) + spec.zero_point, info.min, info.max).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.dtype.kind == "f" or spec.scale == 0:
        return q.astype(np.float32)
    return (q.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """The scores as they are when they already look like probabilities, else their softmax."""
    if scores.min() >= -1e-3 and scores.max() <= 1 + 1e-3 and abs(float(scores.sum()) - 1) < 0.02:
        return scores
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()


def classify(model: Classifier, pixels: np.ndarray, *, top_k: int = 1) -> Prediction:
    started = time.perf_counter()
    model.interpreter.set_tensor(model.input.index, prepare(model, pixels))
    prepared = time.perf_counter()
    model.interpreter.invoke()
    invoked = time.perf_counter()
    scores = dequantize(model.interpreter.get_tensor(model.output.index), model.output).reshape(-1)
    probs = probabilities(scores)
    best = np.argsort(-probs, kind="stable")[:top_k]
    return Prediction(
        top=tuple(Scored(int(i), label_of(model, int(i)), float(probs[i])) for i in best),
        preprocess_ms=(prepared - started) * 1000,
        invoke_ms=(invoked - prepared) * 1000,
    )


def label_of(model: Classifier, index: int) -> str:
    return model.labels[index] if model.labels and index < len(model.labels) else str(index)
