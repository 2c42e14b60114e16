"""examples/raspberry_pi: the classification demo, copied alone into tmp_path as onto a Pi, run as a
subprocess that can import numpy and LiteRT but none of this machine's other packages, on demo
bundles exported here; and its PNG, PGM/PPM and .npy readers against known pixels and Pillow."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import edge_sdk

pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert")

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "raspberry_pi"
DEMO = ROOT / "edge_sdk" / "assets" / "demo_mnist.onnx"
EVAL = ROOT / "calibration" / "demo" / "eval.npz"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# on this machine but not on a Pi that has only numpy and LiteRT; the demo must not need any of them
NOT_ON_THE_PI = (
    "PIL", "cv2", "edge_sdk", "onnx", "onnxruntime", "onnxslim", "torch", "skimage", "scipy", "tensorflow",
    "picamera2",
)  # fmt: skip
# the manifest entries the demo reads (edge_sdk/export.py writes them; the same numbers as calibration/demo.toml)
DEMO_DEPLOY = {
    "preprocess": {
        "channel_order": "gray", "scale": 1 / 255, "mean": [0.1307], "std": [0.3081],
        "resize": None, "crop": None, "source": "recipe demo",
    },
    "labels": [str(d) for d in range(10)],
}  # fmt: skip
VARIANTS = {  # name: export_tflite options
    "int8": {},
    "int8-io": {"int8_io": True},  # quantized input and output, as NPU targets get
    "fp32-nchw": {"precision": "fp32", "nchw_io": True},
}
DIGIT_FILES = ["png-gray"] * 6 + ["png-rgb", "png-palette", "pgm", "npy"]

# Runs a script with some top-level packages made unimportable: python blocked_run.py A,B script.py args...
BLOCKED_RUN = """
import runpy, sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1].split(","))

class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Stands in for picamera2: each capture is the next digit, grown 10x; after the last the user presses Ctrl-C
FAKE_PICAMERA2 = """
import os
import numpy as np

DIGITS = np.load(os.environ["FAKE_CAMERA_DIGITS"])
LOG = os.environ["FAKE_CAMERA_LOG"]

def log(event):
    with open(LOG, "a") as f:
        f.write(event + "\\n")

class Picamera2:
    def __init__(self):
        self.captured = 0
        log("open")

    def create_preview_configuration(self, main):
        log(f"configure {main['format']} {main['size'][0]}x{main['size'][1]}")
        return {"main": main}

    def configure(self, config):
        pass

    def start(self):
        log("start")

    def capture_array(self, stream="main"):
        if self.captured == len(DIGITS):
            raise KeyboardInterrupt
        digit = np.kron(DIGITS[self.captured], np.ones((10, 10), np.uint8))
        self.captured += 1
        return np.repeat(digit[:, :, None], 3, axis=2)

    def stop(self):
        log("stop")

    def close(self):
        log("close")
"""


def load_images_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("raspberry_pi_images", EXAMPLE / "images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


images = load_images_module()


# --- writing test images -------------------------------------------------------------------------


def paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def packed_rows(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    height = pixels.shape[0]
    if bit_depth == 16:
        return pixels.astype(">u2").view(np.uint8).reshape(height, -1)
    if bit_depth < 8:
        shifts = np.arange(bit_depth - 1, -1, -1)
        bits = ((pixels.reshape(height, -1)[:, :, None] >> shifts) & 1).astype(np.uint8)
        return np.packbits(bits.reshape(height, -1), axis=1)
    return pixels.reshape(height, -1).astype(np.uint8)


def png_bytes(
    pixels: np.ndarray,
    colour_type: int,
    *,
    bit_depth: int = 8,
    palette: np.ndarray | None = None,
    filters: tuple[int, ...] = (0, 1, 2, 3, 4),
    interlace: int = 0,
) -> bytes:
    """A PNG of (H, W, C) samples, row y filtered with filters[y % len(filters)], IDAT split in two."""
    height, width, channels = pixels.shape
    rows = packed_rows(pixels, bit_depth).astype(np.int32)
    step = max(1, channels * bit_depth // 8)
    lines, prior = [], np.zeros(rows.shape[1], np.int32)
    for y, row in enumerate(rows):
        kind = filters[y % len(filters)]
        left = np.concatenate([np.zeros(step, np.int32), row[:-step]])
        up_left = np.concatenate([np.zeros(step, np.int32), prior[:-step]])
        predicted = [np.zeros_like(row), left, prior, (left + prior) // 2, paeth(left, prior, up_left)][kind]
        lines.append(bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes())
        prior = row
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    data = zlib.compress(b"".join(lines))
    chunks = [png_chunk(b"IHDR", header)]
    if palette is not None:
        chunks.append(png_chunk(b"PLTE", palette.astype(np.uint8).tobytes()))
    chunks += [png_chunk(b"IDAT", data[: len(data) // 2]), png_chunk(b"IDAT", data[len(data) // 2 :])]
    return PNG_SIGNATURE + b"".join(chunks) + png_chunk(b"IEND", b"")


def gray_palette() -> np.ndarray:
    return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)


def write_digit(folder: Path, index: int, kind: str, pixels: np.ndarray) -> Path:
    """A (28, 28) uint8 digit written as `kind` (one of DIGIT_FILES)."""
    gray = pixels[:, :, None]
    stem = folder / f"digit{index}"
    if kind == "png-gray":
        data = png_bytes(gray, 0, filters=(index % 5, (index + 1) % 5, 4))
    elif kind == "png-rgb":
        data = png_bytes(np.repeat(gray, 3, axis=2), 2)
    elif kind == "png-palette":
        data = png_bytes(gray, 3, palette=gray_palette())
    elif kind == "pgm":
        stem.with_suffix(".pgm").write_bytes(b"P5\n# an MNIST digit\n28 28\n255\n" + pixels.tobytes())
        return stem.with_suffix(".pgm")
    else:
        np.save(stem.with_suffix(".npy"), pixels[None, None])  # (1, 1, 28, 28), as in eval.npz
        return stem.with_suffix(".npy")
    stem.with_suffix(".png").write_bytes(data)
    return stem.with_suffix(".png")


# --- fixtures ------------------------------------------------------------------------------------


def with_deploy_entries(model: Path) -> Path:
    """The manifest keeps the entries the demo reads; filled in when this edge_sdk does not write them yet."""
    manifest_path = model.with_name(model.name + ".json")
    manifest = json.loads(manifest_path.read_text())
    assert isinstance(manifest["nhwc_io"], bool)
    if "preprocess" not in manifest or "labels" not in manifest:
        manifest_path.write_text(json.dumps({**DEMO_DEPLOY, **manifest}, indent=2))
    return model


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built = {}
    for name, options in VARIANTS.items():
        folder = tmp_path_factory.mktemp(name)
        result = edge_sdk.export_tflite(DEMO, "rpi5", calibration="demo", output=folder, **options)
        assert result.artifact is not None
        built[name] = with_deploy_entries(result.artifact.path)
    return built


@pytest.fixture(scope="module")
def pi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example folder copied alone, as onto a Pi."""
    folder = tmp_path_factory.mktemp("raspberry_pi")
    for path in EXAMPLE.iterdir():
        if path.is_file():
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def blocked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wrapper") / "blocked_run.py"
    path.write_text(BLOCKED_RUN)
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """(folder, file names, true labels) for the first evaluation digits, one file each."""
    data = np.load(EVAL)
    folder = tmp_path_factory.mktemp("digits")
    names = []
    for index, kind in enumerate(DIGIT_FILES):
        names.append(write_digit(folder, index, kind, data["images"][index, 0]).name)
    return folder, names, [str(label) for label in data["labels"][: len(DIGIT_FILES)]]


def run_demo(
    pi: Path,
    blocked_run: Path,
    *args: object,
    cwd: Path,
    blocked: tuple[str, ...] = NOT_ON_THE_PI,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    command = [sys.executable, str(blocked_run), ",".join(blocked), str(pi / "classify.py"), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=clean, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr


# --- the demo, end to end ------------------------------------------------------------------------


def test_the_blocker_blocks(pi: Path, blocked_run: Path, tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text("import numpy\nfrom ai_edge_litert.interpreter import Interpreter\nimport PIL\n")
    result = subprocess.run(
        [sys.executable, str(blocked_run), ",".join(NOT_ON_THE_PI), str(script)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "No module named 'PIL' (blocked by the test)" in result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_classifies_image_files_with_numpy_and_litert_only(
    variant: str, bundles: dict[str, Path], pi: Path, blocked_run: Path, digits: tuple[Path, list[str], list[str]]
) -> None:
    folder, names, labels = digits
    model = bundles[variant]
    result = run_demo(pi, blocked_run, "--model", model, "--threads", 2, *names, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "INFO:" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(names) + 2, result.stdout
    shape, dtype, layout = {
        "int8": ("1x28x28x1", "float32", "NHWC"),
        "int8-io": ("1x28x28x1", "int8", "NHWC"),
        "fp32-nchw": ("1x1x28x28", "float32", "NCHW"),
    }[variant]
    assert lines[0] == f"model {model.name}: input {shape} {dtype} {layout}, preprocess recipe demo, 2 threads"
    per_image = [line.split() for line in lines[1:-1]]
    assert [fields[0] for fields in per_image] == names
    predicted = [fields[1] for fields in per_image]
    assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 8, (predicted, labels)
    assert all(float(fields[2].rstrip("%")) > 50 for fields in per_image)
    assert lines[-1].startswith(f"{len(names)} images: invoke median ")


def test_json_document(
    bundles: dict[str, Path], pi: Path, blocked_run: Path, digits: tuple[Path, list[str], list[str]]
) -> None:
    folder, names, labels = digits
    result = run_demo(pi, blocked_run, "--model", bundles["int8-io"], "--top", 3, "--json", *names, cwd=folder)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"model", "threads", "input", "preprocess", "results", "errors", "summary"}
    assert document["input"] == {"shape": [1, 28, 28, 1], "dtype": "int8", "layout": "NHWC"}
    assert document["preprocess"]["mean"] == [0.1307] and document["preprocess"]["channel_order"] == "gray"
    assert document["errors"] == []
    assert [r["image"] for r in document["results"]] == names
    assert sum(r["label"] == t for r, t in zip(document["results"], labels, strict=True)) >= 8
    for entry in document["results"]:
        top = entry["top"]
        assert len(top) == 3 and top[0]["label"] == entry["label"] and top[0]["index"] == entry["index"]
        confidences = [t["confidence"] for t in top]
        assert confidences == sorted(confidences, reverse=True) and 0 < sum(confidences) <= 1 + 1e-5
        assert entry["invoke_ms"] > 0 and entry["preprocess_ms"] > 0 and entry["read_ms"] > 0
    summary = document["summary"]
    assert summary["images"] == len(names) and summary["errors"] == 0 and not summary["interrupted"]
    for key in ("invoke_ms", "preprocess_ms", "read_ms"):
        assert 0 < summary[key]["median"] <= summary[key]["p90"]


def test_finds_the_only_model_in_the_current_folder(
    bundles: dict[str, Path], pi: Path, blocked_run: Path, digits: tuple[Path, list[str], list[str]], tmp_path: Path
) -> None:
    folder, names, _ = digits
    model = bundles["int8"]
    for path in (model, model.with_name(model.name + ".json")):
        shutil.copy(path, tmp_path / path.name)
    result = run_demo(pi, blocked_run, folder / names[0], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"model {model.name}:")

    shutil.copy(model, tmp_path / "other.tflite")
    result = run_demo(pi, blocked_run, folder / names[0], cwd=tmp_path)
    assert_one_line_error(result, "several models found")
    assert model.name in result.stderr and "other.tflite" in result.stderr


def test_manifest_resize_and_crop_or_no_manifest(
    bundles: dict[str, Path], pi: Path, blocked_run: Path, digits: tuple[Path, list[str], list[str]], tmp_path: Path
) -> None:
    folder, names, labels = digits
    model = shutil.copy(bundles["int8"], tmp_path / "digits.tflite")
    manifest = json.loads(bundles["int8"].with_name(bundles["int8"].name + ".json").read_text())
    manifest["preprocess"] = {**manifest["preprocess"], "resize": 32, "crop": [28, 28], "source": "zoomed"}
    (tmp_path / "digits.tflite.json").write_text(json.dumps(manifest))
    result = run_demo(pi, blocked_run, "--model", model, "--json", *names, cwd=folder)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["preprocess"]["resize"] == 32 and document["preprocess"]["crop"] == [28, 28]
    assert sum(r["label"] == t for r, t in zip(document["results"], labels, strict=True)) >= 8

    (tmp_path / "digits.tflite.json").unlink()  # no manifest: resize to the input, scale to [0, 1], indices
    result = run_demo(pi, blocked_run, "--model", model, *names, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "preprocess default: scale to [0, 1]" in result.stdout.splitlines()[0]
    assert len(result.stdout.splitlines()) == len(names) + 2


def test_camera_frames_until_ctrl_c(
    bundles: dict[str, Path], pi: Path, blocked_run: Path, digits: tuple[Path, list[str], list[str]], tmp_path: Path
) -> None:
    fake = tmp_path / "fake"
    (fake / "picamera2").mkdir(parents=True)
    (fake / "picamera2" / "__init__.py").write_text(FAKE_PICAMERA2)
    data = np.load(EVAL)
    np.save(tmp_path / "frames.npy", data["images"][:5, 0])
    env = {"PYTHONPATH": str(fake), "FAKE_CAMERA_DIGITS": str(tmp_path / "frames.npy")}
    allowed = tuple(name for name in NOT_ON_THE_PI if name != "picamera2")

    for run, extra in (("ctrl-c", ["--camera"]), ("limit", ["--frames", 2])):  # no images: the camera is the default
        log = tmp_path / f"{run}.log"
        result = run_demo(
            pi, blocked_run, "--model", bundles["int8"], *extra, cwd=tmp_path, blocked=allowed,
            env={**env, "FAKE_CAMERA_LOG": str(log)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        frames = 5 if run == "ctrl-c" else 2
        lines = result.stdout.splitlines()
        assert [line.split("  ")[0] for line in lines[1:-1]] == [f"frame {n}" for n in range(1, frames + 1)]
        predicted = [line.split()[2] for line in lines[1:-1]]
        truth = [str(label) for label in data["labels"][:frames]]
        assert sum(p == t for p, t in zip(predicted, truth, strict=True)) >= frames - 1, (predicted, truth)
        assert lines[-1].startswith(f"{frames} images")
        assert ("stopped by Ctrl-C" in lines[-1]) == (run == "ctrl-c")
        assert log.read_text().splitlines() == ["open", "configure RGB888 640x480", "start", "stop", "close"]


def corrupt(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


RGB_PREPROCESS = {**DEMO_DEPLOY["preprocess"], "channel_order": "rgb"}
SMALL = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
GOOD_PNG = png_bytes(SMALL, 0)
BAD_INPUTS = {
    # name: (files written where it runs (m.tflite: the int8 model), arguments ({model}: the int8 bundle),
    #        also blocked, in the message)
    "missing image": ({}, ["--model", "{model}", "nothere.png"], (), "nothere.png: no such file"),
    "bad CRC": ({"crc.png": corrupt(GOOD_PNG, len(GOOD_PNG) - 20)}, ["--model", "{model}", "crc.png"], (), "bad CRC"),
    "truncated PNG": ({"cut.png": GOOD_PNG[:-30]}, ["--model", "{model}", "cut.png"], (), "truncated PNG"),
    "interlaced PNG": (
        {"adam7.png": png_bytes(SMALL, 0, interlace=1)}, ["--model", "{model}", "adam7.png"], (), "interlaced"
    ),
    "text as PNG": ({"notes.png": b"hello"}, ["--model", "{model}", "notes.png"], (), "not a PNG file"),
    "JPEG without Pillow": (
        {"photo.jpg": b"\xff\xd8\xff\xe0"}, ["--model", "{model}", "photo.jpg"], (), "needs Pillow (pip install pillow)"
    ),
    "no model": ({}, ["image.png"], (), "no .tflite beside classify.py"),
    "missing model": ({}, ["--model", "gone.tflite", "image.png"], (), "gone.tflite: no such file"),
    "corrupt model": ({"junk.tflite": b"TFL3" + bytes(200)}, ["--model", "junk.tflite", "x.png"], (), "cannot load"),
    "bad manifest": (
        {"m.tflite": b"", "m.tflite.json": b"{not json"}, ["--model", "m.tflite", "x.png"], (), "not valid JSON"
    ),
    "manifest for RGB": (
        {"m.tflite": b"", "m.tflite.json": json.dumps({"preprocess": RGB_PREPROCESS}).encode()},
        ["--model", "m.tflite", "x.png"], (), "channel_order 'rgb' does not fit an input with 1 channels",
    ),
    "no picamera2": ({}, ["--model", "{model}", "--camera"], (), "sudo apt install python3-picamera2"),
    "nothing to classify": ({}, ["--model", "{model}"], (), "no images given"),
    "no LiteRT": (
        {}, ["--model", "{model}", "x.png"], ("ai_edge_litert", "tflite_runtime"), "pip install ai-edge-litert"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    case: str, bundles: dict[str, Path], pi: Path, blocked_run: Path, tmp_path: Path
) -> None:
    files, arguments, also_blocked, expected = BAD_INPUTS[case]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    if "m.tflite" in files:  # a real model, so its manifest is what fails
        shutil.copy(bundles["int8"], tmp_path / "m.tflite")
    args = [a.replace("{model}", str(bundles["int8"])) for a in arguments]
    result = run_demo(pi, blocked_run, *args, cwd=tmp_path, blocked=NOT_ON_THE_PI + also_blocked)
    assert_one_line_error(result, expected)


# --- the image readers ---------------------------------------------------------------------------


def test_png_every_filter_colour_type_and_depth() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (11, 13, 4), dtype=np.uint8)  # odd width: filters must not assume alignment
    wide = rng.integers(0, 65536, (11, 13, 3), dtype=np.uint16)
    cases = {  # name: (PNG, expected pixels)
        "gray": (png_bytes(rgba[:, :, :1], 0), rgba[:, :, :1]),
        "rgb": (png_bytes(rgba[:, :, :3], 2), rgba[:, :, :3]),
        "gray+alpha": (png_bytes(rgba[:, :, :2], 4), rgba[:, :, :1]),
        "rgba": (png_bytes(rgba, 6), rgba[:, :, :3]),
        "palette": (png_bytes(rgba[:, :, :1], 3, palette=gray_palette()[::-1]), 255 - rgba[:, :, :1].repeat(3, 2)),
        "gray16": (png_bytes(wide[:, :, :1], 0, bit_depth=16), (wide[:, :, :1] >> 8).astype(np.uint8)),
        "rgb16": (png_bytes(wide, 2, bit_depth=16), (wide >> 8).astype(np.uint8)),
    }
    for depth in (1, 2, 4):
        levels = rgba[:, :, :1] % (1 << depth)
        cases[f"gray{depth}"] = (png_bytes(levels, 0, bit_depth=depth), levels * (255 // ((1 << depth) - 1)))
        palette = rng.integers(0, 256, (1 << depth, 3), dtype=np.uint8)
        cases[f"palette{depth}"] = (png_bytes(levels, 3, bit_depth=depth, palette=palette), palette[levels[:, :, 0]])
    for name, (data, expected) in cases.items():
        decoded = images.decode_png(data)
        assert decoded.dtype == np.uint8 and decoded.shape == expected.shape, name
        np.testing.assert_array_equal(decoded, expected, err_msg=name)


@pytest.mark.parametrize("photo", ["chelsea", "camera"])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "P16", "1"])
def test_png_matches_pillow_on_photos(photo: str, mode: str) -> None:
    pil = pytest.importorskip("PIL.Image", reason="the reference decoder is Pillow")
    data_module = pytest.importorskip("skimage.data", reason="the photos come from scikit-image")
    image = pil.fromarray(getattr(data_module, photo)())
    converted = image.convert("RGB").quantize(16) if mode == "P16" else image.convert(mode)
    buffer = io.BytesIO()
    converted.save(buffer, "PNG")  # Pillow picks Sub, Up or Paeth per row
    reference = pil.open(io.BytesIO(buffer.getvalue()))
    expected = np.asarray(reference.convert("L" if reference.mode in ("1", "L", "LA") else "RGB"))
    decoded = images.decode_png(buffer.getvalue())
    np.testing.assert_array_equal(decoded, expected.reshape(decoded.shape))


def test_png_damage_is_named() -> None:
    rgb_at_4_bits = struct.pack(">IIBBBBB", 8, 8, 4, 2, 0, 0, 0)
    cases = {
        "bad CRC": corrupt(GOOD_PNG, 40),
        "truncated PNG": GOOD_PNG[:-30],
        "interlaced (Adam7) PNG is not supported": png_bytes(SMALL, 0, interlace=1),
        "does not inflate": GOOD_PNG[:33] + png_chunk(b"IDAT", b"not zlib") + png_chunk(b"IEND", b""),
        "colour type 2 with bit depth 4": PNG_SIGNATURE + png_chunk(b"IHDR", rgb_at_4_bits),
        "palette image without a PLTE": png_bytes(SMALL, 3),
    }
    for expected, data in cases.items():
        with pytest.raises(images.ImageError, match=re.escape(expected)):
            images.decode_png(data)


def test_pgm_ppm_and_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    pgm = b"P5 7 # width\n5\n255\n" + rgb[:, :, 0].tobytes()
    np.testing.assert_array_equal(images.decode_pnm(pgm), rgb[:, :, :1])
    np.testing.assert_array_equal(images.decode_pnm(b"P6\n7 5\n255\n" + rgb.tobytes()), rgb)
    ten_bit = rng.integers(0, 1024, (5, 7), dtype=np.uint16)
    decoded = images.decode_pnm(b"P5\n7 5\n1023\n" + ten_bit.astype(">u2").tobytes())
    np.testing.assert_array_equal(decoded[:, :, 0], np.round(ten_bit.astype(np.int64) * 255 / 1023).astype(np.uint8))
    with pytest.raises(images.ImageError, match="truncated"):
        images.decode_pnm(b"P6\n7 5\n255\n" + rgb.tobytes()[:-1])

    layouts = {"hw.npy": rgb[:, :, 0], "chw.npy": rgb.transpose(2, 0, 1)[None], "unit.npy": rgb / 255.0}
    expected = {"hw.npy": rgb[:, :, :1], "chw.npy": rgb, "unit.npy": rgb}
    for name, array in layouts.items():
        np.save(tmp_path / name, array)
        np.testing.assert_array_equal(images.read_image(tmp_path / name), expected[name], err_msg=name)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(images.ImageError, match=r"not a readable \.npy"):
        images.read_image(tmp_path / "objects.npy")


def test_other_formats_go_through_pillow(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image", reason="JPEG and friends are read by Pillow when it is installed")
    pixels = np.random.default_rng(3).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    pil.fromarray(pixels).save(tmp_path / "photo.jpg")
    expected = np.asarray(pil.open(tmp_path / "photo.jpg").convert("RGB"))
    np.testing.assert_array_equal(images.read_image(tmp_path / "photo.jpg"), expected)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(images.ImageError, match="not an image Pillow can read"):
        images.read_image(tmp_path / "notes.txt")


def test_resize_and_gray() -> None:
    rng = np.random.default_rng(2)
    digit = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    # a 10x larger frame shrinks back exactly: box averaging of constant 10x10 blocks
    frame = np.kron(digit, np.ones((10, 10, 1), np.uint8))
    np.testing.assert_array_equal(images.resize_bilinear(frame, 28, 28), digit.astype(np.float32))
    np.testing.assert_allclose(images.resize_bilinear(np.full((9, 17, 3), 7, np.uint8), 4, 5), 7)
    pil = pytest.importorskip("PIL.Image", reason="the reference resize is Pillow's")
    upscaled = images.resize_bilinear(digit, 57, 45)[:, :, 0]
    reference = np.asarray(pil.fromarray(digit[:, :, 0]).resize((45, 57), pil.BILINEAR), np.float32)
    assert np.abs(upscaled - reference).max() <= 1.0
    shorter = images.resize_shorter_side(np.zeros((40, 80, 3), np.uint8), 20)
    assert shorter.shape == (20, 40, 3) and images.centre_crop(shorter, 20, 20).shape == (20, 20, 3)
    rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    luma = np.asarray(pil.fromarray(rgb).convert("L"), np.float32)
    assert np.abs(images.to_channels(rgb, "gray")[:, :, 0] - luma).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(images.to_channels(rgb, "bgr"), rgb[:, :, ::-1].astype(np.float32))
