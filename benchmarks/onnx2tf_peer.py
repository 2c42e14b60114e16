"""Peer baseline: ONNX -> TFLite (fp32 and int8) with onnx2tf, which needs TensorFlow.

Runs ONLY inside its own venv, never in edge-sdk's environment (no edge_sdk import):

    python -m venv ~/.cache/edge-sdk-bench/onnx2tf-venv
    ~/.cache/edge-sdk-bench/onnx2tf-venv/bin/python -m pip install tensorflow-cpu==2.19.0 \\
        numpy==1.26.4 onnx==1.19.1 onnxruntime==1.23.0 onnxsim==0.4.36 onnx-graphsurgeon==0.5.8 \\
        sng4onnx==1.0.5 sne4onnx==1.0.15 psutil==5.9.5 ai-edge-litert==2.1.0 h5py==3.11.0 \\
        ml-dtypes==0.5.1 flatbuffers==25.12.19 protobuf==4.25.5 requests==2.32.5
    ~/.cache/edge-sdk-bench/onnx2tf-venv/bin/python -m pip install --no-deps tf-keras==2.19.0 onnx2tf==1.29.24

(onnx2tf and tf-keras pin `tensorflow`, the GPU-capable dist, hence --no-deps beside tensorflow-cpu.)

    python onnx2tf_peer.py --model M.onnx --out DIR [--input-shape x=1x3x48x192]
        [--int8 --calib calib_nhwc.npy --mean 0 --std 1]

fp32 and int8 are two separate onnx2tf.convert() calls (DIR/fp32, DIR/int8), each timed in wall
seconds; the int8 one includes the SavedModel build, calibration and every quantized variant
onnx2tf writes. --calib is float32 NHWC [N,H,W,C] (the TF-side layout); onnx2tf feeds
(calib - mean) / std to the converter. Prints one JSON document on stdout; logs go to stderr.
Known onnx2tf 1.29.24 quirk: with -cind data of N > 1 samples its pre-conversion ONNX dry run
feeds the NHWC array to onnxruntime unpermuted and logs "shape estimation is skipped"; the
int8 run's float32 .tflite still matched the fp32 run's on all three test models.

Offline: onnx2tf fetches calibration_image_sample_data_20x128x128x3_float32.npy from GitHub
(fallback: Wasabi S3) whenever every input is 4D with 3 channels (NHWC) - for the fp32 run too,
to get test data for its ONNX/TF check - unless that file is in the working directory. Without
it EfficientNet-Lite0 fp32 died with requests.exceptions.ConnectionError (NameResolutionError for
github.com; only Timeout is caught). So we write a seeded uniform[0,1) stand-in there and run
onnx2tf in DIR. int8 calibration itself uses --calib, never the sample file. onnx2tf also runs
the `onnxsim` CLI via PATH ("No such file or directory: 'onnxsim'" when the venv is not
activated), so the venv's bin/ is put on PATH.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
BAD_SCOPE_CHARS = re.compile(r"[^A-Za-z0-9_.\\/>-]")  # TF scope names allow only these


def sanitized(onnx, model: Path, out: Path) -> tuple[Path, int]:
    """A copy of the model for onnx2tf, which overwrites its input file with its onnxsim result (the
    caller's model must stay as it was). Paddle exports name nodes like 'Softmax@0', which onnx2tf
    passes to TF as a scope name (ValueError: not a valid scope name): such nodes are renamed in the
    copy; tensors keep their names."""
    proto = onnx.load(str(model))
    bad = [n for n in proto.graph.node if BAD_SCOPE_CHARS.search(n.name)]
    for node in bad:
        node.name = BAD_SCOPE_CHARS.sub("_", node.name)
    copy = out / "input" / model.name  # same stem: onnx2tf names outputs after it
    copy.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(copy))
    return copy, len(bad)


@contextlib.contextmanager
def stdout_to_stderr():
    """Send fd 1 (Python prints and child processes alike) to stderr, keeping stdout for JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def io_kind(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    dtype = Interpreter(model_path=str(path)).get_input_details()[0]["dtype"]
    return "int8" if np.dtype(dtype) in (np.int8, np.uint8) else "float"


def tflite(folder: Path, model: Path, suffix: str) -> str | None:
    path = folder / f"{model.stem}_{suffix}.tflite"  # onnx2tf names outputs after the ONNX file
    return str(path) if path.is_file() else None


def convert(onnx2tf, model: Path, folder: Path, errors: list, **kwargs) -> float | None:
    start = time.perf_counter()
    try:
        with stdout_to_stderr():
            onnx2tf.convert(
                input_onnx_file_path=str(model),
                output_folder_path=str(folder),
                verbosity="warn",
                **kwargs,
            )
    except BaseException as exc:  # onnx2tf reports failures with sys.exit(1)
        if isinstance(exc, KeyboardInterrupt):
            raise
        errors.append(f"{folder.name}: {type(exc).__name__}: {exc}")
    return round(time.perf_counter() - start, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--input-shape", action="append", default=[], help="name=1x3x224x224")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--calib", type=Path, help="float32 NHWC .npy calibration data")
    ap.add_argument("--calib-input", help="input name for --calib (default: first ONNX input)")
    ap.add_argument("--mean", default="0", help="number or list literal, NHWC-broadcastable")
    ap.add_argument("--std", default="1", help="number or list literal, NHWC-broadcastable")
    args = ap.parse_args()
    if args.int8 and args.calib is None:
        ap.error("--int8 needs --calib (the default calibration set is downloaded from GitHub)")

    model, out = args.model.resolve(), args.out.resolve()
    calib = args.calib.resolve() if args.calib else None
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    os.chdir(out)  # onnx2tf looks for SAMPLE in the working directory before downloading it
    rng = np.random.default_rng(0)
    np.save(out / SAMPLE, rng.uniform(0, 1, (20, 128, 128, 3)).astype(np.float32))

    with stdout_to_stderr():
        import onnx
        import onnx2tf
        import tensorflow as tf

    shapes = []
    for item in args.input_shape:
        name, dims = item.split("=")
        shapes.append(f"{name}:{','.join(dims.split('x'))}")
    kwargs = {"overwrite_input_shape": shapes} if shapes else {}
    errors: list[str] = []
    model, renamed = sanitized(onnx, model, out)
    result = {
        "onnx2tf_version": onnx2tf.__version__,
        "tensorflow_version": tf.__version__,
        "renamed_nodes": renamed,
        "fp32": None,
        "int8": None,
        "errors": errors,
    }

    seconds = convert(onnx2tf, model, out / "fp32", errors, **kwargs)
    result["fp32"] = {"path": tflite(out / "fp32", model, "float32"), "seconds": seconds}

    if args.int8:
        graph = onnx.load(str(model), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        name = args.calib_input or next(i.name for i in graph.input if i.name not in inits)
        mean = np.asarray(ast.literal_eval(args.mean), dtype=np.float32)
        std = np.asarray(ast.literal_eval(args.std), dtype=np.float32)
        seconds = convert(
            onnx2tf,
            model,
            out / "int8",
            errors,
            output_integer_quantized_tflite=True,
            custom_input_op_name_np_data_path=[[name, str(calib), mean, std]],
            **kwargs,
        )
        full = tflite(out / "int8", model, "full_integer_quant")
        float_io = tflite(out / "int8", model, "integer_quant")
        path = full or float_io
        result["int8"] = {
            "path": path,
            "seconds": seconds,
            "io": io_kind(Path(path)) if path else None,
            "float_io_path": float_io,
            "dynamic_range_path": tflite(out / "int8", model, "dynamic_range_quant"),
        }
    for key in ("fp32", "int8"):
        if result[key] and result[key]["path"] is None:
            errors.append(f"{key}: no .tflite produced")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
