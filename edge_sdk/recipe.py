"""Calibration recipes (calibration/*.toml): where a model's real sample data is and how to
preprocess it, and the named image preprocessings a recipe or a folder of images can use.

A split is a .npz file (raw pixels under `images_key`, labels under `labels_key`), a .npy file
or a folder of images. Arrays are read with allow_pickle=False: user data is never unpickled.
Every value is normalised as x = (pixel * scale - mean) / std, per channel.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.errors import DataError, DependencyError
from edge_sdk.targets import data_dir
from edge_sdk.tomltable import Table, read_toml

SCHEMA_VERSION = 1
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("rgb", "bgr", "gray")
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Preprocessing:
    """A named image preprocessing. Images are read as RGB (or L for one-channel inputs), the
    shorter side is resized (bilinear) to floor(max(crop) / crop_fraction), the centre crop is
    taken, then x = (pixel * scale - mean) / std."""

    name: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_fraction: float
    about: str


PREPROCESSINGS: dict[str, Preprocessing] = {
    "imagenet": Preprocessing(
        "imagenet", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.875, "torchvision ImageNet models"
    ),
    # EfficientNet-Lite and other TF models: (x / 127.5) - 1, i.e. [-1, 1]
    "imagenet-tf": Preprocessing("imagenet-tf", 1 / 127.5, (1.0,), (1.0,), 0.875, "TF models scaled to [-1, 1]"),
    "unit": Preprocessing("unit", 1 / 255, (0.0,), (1.0,), 1.0, "pixels scaled to [0, 1]"),
    "raw": Preprocessing("raw", 1.0, (0.0,), (1.0,), 1.0, "pixels as floats 0..255"),
}


@dataclass(frozen=True)
class Recipe:
    """One recipe file, validated. `samples` is how many samples calibration takes from the
    "calibration" split (the first N; 0 takes all; other splits are read whole). `resize`, `crop`
    and `preprocess` apply to folder splits; with `preprocess` set, scale/mean/std/channel_order
    are the named preprocessing's."""

    name: str
    description: str
    path: Path
    model_input: str
    layout: str
    channel_order: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, Path]
    images_key: str
    labels_key: str | None
    samples: int
    source: str
    float_accuracy: float | None
    resize: int | None = None
    crop: tuple[int, int] | None = None
    preprocess: str | None = None
    class_names: tuple[str, ...] = ()  # what each label index means, for demos and reports


@dataclass(frozen=True)
class Split:
    inputs: np.ndarray  # preprocessed float32, in the recipe's layout
    labels: np.ndarray | None


def _table(data: Any, where: str, path: Path) -> Table:
    return Table(data, where, path, error=DataError, hint="calibration/demo.toml")


def load_recipe(path: str | Path) -> Recipe:
    """A recipe by file path, or by the name of a shipped one ("demo")."""
    file = Path(path)
    if not file.suffix and not file.exists():
        file = data_dir("calibration") / f"{path}.toml"
    if not file.is_file():
        shipped = ", ".join(sorted(p.stem for p in data_dir("calibration").glob("*.toml")))
        raise DataError(f"calibration recipe '{path}' not found; pass a .toml file or a shipped name ({shipped})")
    data = read_toml(file, DataError)
    return parse_recipe(data, file)


def parse_recipe(data: dict, file: Path) -> Recipe:
    """Validate the parsed TOML of one recipe file; split paths are relative to the file."""
    top = _table(data, "", file)
    schema = top.get("schema", int, required=True)
    if schema != SCHEMA_VERSION:
        raise top.fail("schema", f"is {schema}, but this edge-sdk reads schema {SCHEMA_VERSION}")
    block = _table(top.get("data", dict, {}), "data", file)
    preprocess = top.choice("preprocess", tuple(PREPROCESSINGS))
    norm = _normalisation(top, preprocess)
    recipe = Recipe(
        name=top.get("name", str, required=True),
        description=top.get("description", str, ""),
        path=file,
        model_input=top.get("model_input", str, required=True),
        layout=str(top.choice("layout", LAYOUTS, required=True)),
        channel_order=norm[0],
        scale=norm[1],
        mean=norm[2],
        std=norm[3],
        splits=_splits(top, file),
        images_key=block.get("images_key", str, "images"),
        labels_key=block.get("labels_key", str),
        samples=block.get("samples", int, 0),
        source=block.get("source", str, ""),
        float_accuracy=_optional_float(block.get("float_accuracy", (int, float))),
        resize=top.get("resize", int),
        crop=_crop(top),
        preprocess=preprocess,
        class_names=block.get_list("class_names", str),
    )
    top.done()
    block.done()
    _check_numbers(recipe, top, block)
    return recipe


def _normalisation(top: Table, preprocess: str | None) -> tuple[str, float, tuple[float, ...], tuple[float, ...]]:
    if preprocess is None:
        order = str(top.choice("channel_order", CHANNEL_ORDERS, "rgb"))
        scale = float(top.get("scale", (int, float), 1.0))
        return order, scale, top.numbers("mean", (0.0,)), top.numbers("std", (1.0,))
    for key in ("channel_order", "scale", "mean", "std"):
        if key in top.data:
            raise top.fail(key, f"conflicts with preprocess = '{preprocess}', which sets it; keep one of the two")
    named = PREPROCESSINGS[preprocess]
    return "rgb", named.scale, named.mean, named.std


def _splits(top: Table, file: Path) -> dict[str, Path]:
    table = _table(top.get("splits", dict, required=True), "splits", file)
    if not table.data:
        raise DataError(f"{file}: [splits] names no split; add one, e.g. calibration = 'data/calib.npz'")
    splits = {key: file.parent / table.get(key, str) for key in table.data}
    for key, path in splits.items():
        if not path.exists():
            raise table.fail(key, f"points at {path}, which does not exist; fix the path or create the data")
        if path.is_file() and path.suffix.lower() not in (".npz", ".npy"):
            raise table.fail(key, f"points at {path}; a split is a .npz or .npy file or a folder of images")
    return splits


def _crop(top: Table) -> tuple[int, int] | None:
    values = top.get("crop", list)
    if values is None:
        return None
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
        raise top.fail("crop", "must be two positive integers [h, w]")
    return (values[0], values[1])


def _check_numbers(recipe: Recipe, top: Table, block: Table) -> None:
    if any(s == 0 for s in recipe.std):
        raise top.fail("std", "has a zero; every std must be non-zero")
    if len(recipe.mean) != len(recipe.std):
        raise top.fail("std", f"has {len(recipe.std)} values but mean has {len(recipe.mean)}; give one per channel")
    if recipe.samples < 0:
        raise block.fail("samples", "must be 0 (all) or a positive count")
    if recipe.resize is not None and recipe.resize <= 0:
        raise top.fail("resize", "must be a positive integer (the shorter side in pixels)")
    if recipe.resize is not None and recipe.crop is not None and recipe.resize < max(recipe.crop):
        raise top.fail("resize", f"is {recipe.resize}, smaller than the crop {recipe.crop}; make it at least as large")


def _optional_float(value: int | float | None) -> float | None:
    return None if value is None else float(value)


def load_split(
    recipe: Recipe,
    split: str,
    *,
    size: tuple[int, int] | None = None,
    max_samples: int | None = None,
    progress: Progress | None = None,
) -> Split:
    """The preprocessed inputs (and labels, if the recipe names them) of one split.

    A folder split is cropped to the recipe's `crop`, else to `size` (the model's H, W);
    `max_samples` keeps the first N; `progress(done, total)` is called per image read."""
    if split not in recipe.splits:
        raise DataError(f"{recipe.path}: no split '{split}' (it has {', '.join(recipe.splits)}); pick one of those")
    path = recipe.splits[split]
    if path.is_dir():
        raw, labels = _read_folder_split(recipe, path, size, max_samples, progress), None
    else:
        raw, labels = _read_array_split(recipe, split, path)
        raw = raw[:max_samples]
        labels = labels[:max_samples] if labels is not None else None
    channel_axis = 1 if recipe.layout == "NCHW" else -1
    return Split(inputs=normalise(raw, recipe.scale, recipe.mean, recipe.std, channel_axis), labels=labels)


def _read_array_split(recipe: Recipe, split: str, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if path.suffix.lower() == ".npy":
        return read_npy(path), None
    arrays = read_npz(path)
    for key in (recipe.images_key, recipe.labels_key):
        if key is not None and key not in arrays:
            raise DataError(
                f"{path}: split '{split}' has no array '{key}' (it has: {', '.join(arrays) or 'none'}); "
                f"fix [data] in {recipe.path}"
            )
    return arrays[recipe.images_key], arrays[recipe.labels_key] if recipe.labels_key else None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file, read without unpickling."""
    with _reading(path), np.load(path, allow_pickle=False) as archive:
        if isinstance(archive, np.ndarray):
            raise DataError(f"{path}: holds a single .npy array, not a .npz archive; rename it to .npy")
        return {key: archive[key] for key in archive.files}


def read_npy(path: Path) -> np.ndarray:
    """The array of a .npy file, read without unpickling."""
    with _reading(path):
        array = np.load(path, allow_pickle=False)
        if not isinstance(array, np.ndarray):
            array.close()
            raise DataError(f"{path}: is a .npz archive, not a .npy array; rename it to .npz")
        return array


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except ValueError as exc:
        if "object arrays" in str(exc).lower():
            raise DataError(
                f"{path}: holds object arrays (pickled Python objects), which edge-sdk never loads; "
                "save plain numeric arrays with np.savez or np.save"
            ) from None
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{path}: not a .npy or .npz file (maybe a pickle, which edge-sdk never loads); "
                "save plain numeric arrays with np.savez or np.save"
            ) from None
        raise DataError(f"{path}: not a readable numpy file ({exc}); save it with np.savez or np.save") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable numpy file ({exc}); save it with np.savez or np.save") from None


def normalise(
    raw: np.ndarray, scale: float, mean: tuple[float, ...], std: tuple[float, ...], channel_axis: int
) -> np.ndarray:
    """x = (raw * scale - mean) / std as float32, with mean and std per channel (or one for all)."""
    channels = raw.shape[channel_axis] if raw.ndim > 1 else 1
    if len(mean) not in (1, channels):
        raise DataError(
            f"the preprocessing has {len(mean)} mean/std values but the data has {channels} channels; "
            "use a preprocessing made for this input (unit or raw for one channel)"
        )
    shape = [1] * raw.ndim
    if len(mean) > 1:
        shape[channel_axis] = -1
    mean_array = np.asarray(mean, np.float32).reshape(shape)
    std_array = np.asarray(std, np.float32).reshape(shape)
    return ((raw.astype(np.float32) * np.float32(scale) - mean_array) / std_array).astype(np.float32)


def folder_recipe(folder: Path, preprocess: str, *, model_input: str, layout: str, channels: int) -> Recipe:
    """An in-memory recipe whose one split, "calibration", is a folder of images."""
    if preprocess not in PREPROCESSINGS:
        raise DataError(f"unknown preprocessing '{preprocess}'; pass one of: {', '.join(PREPROCESSINGS)}")
    named = PREPROCESSINGS[preprocess]
    return Recipe(
        name=folder.name,
        description=f"images in {folder}",
        path=folder,
        model_input=model_input,
        layout=layout,
        channel_order="gray" if channels == 1 else "rgb",
        scale=named.scale,
        mean=named.mean,
        std=named.std,
        splits={"calibration": folder},
        images_key="images",
        labels_key=None,
        samples=0,
        source=str(folder),
        float_accuracy=None,
        preprocess=preprocess,
    )


def image_files(folder: Path) -> list[Path]:
    """The images under a folder (and its sub-folders), sorted by relative path."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        accepted = " ".join(IMAGE_EXTENSIONS)
        raise DataError(f"{folder}: no images found (accepted: {accepted}); put images there or pass another folder")
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _read_folder_split(
    recipe: Recipe, folder: Path, size: tuple[int, int] | None, max_samples: int | None, progress: Progress | None
) -> np.ndarray:
    crop = recipe.crop or size
    if crop is None:
        raise DataError(f"{recipe.path}: split folder {folder} needs a crop size; set crop = [h, w] in the recipe")
    fraction = PREPROCESSINGS[recipe.preprocess].crop_fraction if recipe.preprocess else 1.0
    resize = recipe.resize or math.floor(max(crop) / fraction)
    if resize < max(crop):
        raise DataError(f"{recipe.path}: resize {resize} is smaller than the crop {crop}; make it at least as large")
    files = image_files(folder)[:max_samples]
    mode = "L" if recipe.channel_order == "gray" else "RGB"
    images = []
    for done, file in enumerate(files, 1):
        image = read_image(file, mode=mode, resize=resize, crop=crop)
        images.append(image[..., ::-1] if recipe.channel_order == "bgr" else image)
        if progress is not None:
            progress(done, len(files))
    batch = np.stack(images)  # NHWC
    return batch.transpose(0, 3, 1, 2) if recipe.layout == "NCHW" else batch


def read_image(path: Path, *, mode: str, resize: int, crop: tuple[int, int]) -> np.ndarray:
    """One image as float32 HWC pixels 0..255: shorter side resized to `resize` (bilinear), centre
    crop of crop = (h, w), converted to `mode` ("RGB" or "L")."""
    try:
        from PIL import Image
    except ImportError:
        raise DependencyError("reading images needs Pillow: pip install pillow") from None
    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc}); replace or remove the file") from None
    width, height = image.size
    if width <= height:
        new_size = (resize, max(resize, int(resize * height / width)))
    else:
        new_size = (max(resize, int(resize * width / height)), resize)
    image = image.resize(new_size, Image.Resampling.BILINEAR)
    top = round((new_size[1] - crop[0]) / 2)
    left = round((new_size[0] - crop[1]) / 2)
    pixels = np.asarray(image.crop((left, top, left + crop[1], top + crop[0])), dtype=np.float32)
    return pixels[..., None] if pixels.ndim == 2 else pixels
