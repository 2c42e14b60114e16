"""Run a float ONNX model with ONNX Runtime over a data split, and score a classifier."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edge_sdk.model import Model
from edge_sdk.recipe import Split


def session(model: Model, *, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model.proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def predict(model: Model, inputs: np.ndarray, input_name: str) -> np.ndarray:
    """The first output for every sample, run one at a time at the model's static batch size."""
    sess = session(model)
    output = model.outputs[0].name
    batch = model.inputs[0].shape[0] if model.inputs[0].shape else 1
    results = [sess.run([output], {input_name: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)]
    return np.concatenate(results, axis=0)


def top1_accuracy(model: Model, split: Split, input_name: str) -> float:
    if split.labels is None:
        raise ValueError("top-1 accuracy needs labels")
    logits = predict(model, split.inputs, input_name)
    return float((logits.argmax(axis=-1) == split.labels).mean())
