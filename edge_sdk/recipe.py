"""Calibration recipes (calibration/*.toml): where a model's real sample data is and how to
preprocess it. Arrays are read with allow_pickle=False: user data is never unpickled."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.targets import data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Recipe:
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


@dataclass(frozen=True)
class Split:
    inputs: np.ndarray  # preprocessed float32, in the recipe's layout
    labels: np.ndarray | None


def load_recipe(path: str | Path) -> Recipe:
    """A recipe by file path, or by the name of a shipped one ("demo")."""
    file = Path(path)
    if not file.suffix and not file.exists():
        file = data_dir("calibration") / f"{path}.toml"
    if not file.is_file():
        raise UsageError(f"calibration recipe '{path}' not found; pass a .toml recipe file")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
        splits, block = data["splits"], data["data"]
        recipe = Recipe(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            path=file,
            model_input=str(data["model_input"]),
            layout=str(data["layout"]),
            channel_order=str(data.get("channel_order", "rgb")),
            scale=float(data.get("scale", 1.0)),
            mean=tuple(float(m) for m in data.get("mean", [0.0])),
            std=tuple(float(s) for s in data.get("std", [1.0])),
            splits={k: file.parent / str(v) for k, v in splits.items()},
            images_key=str(block.get("images_key", "images")),
            labels_key=block.get("labels_key"),
            samples=int(block.get("samples", 0)),
            source=str(block.get("source", "")),
            float_accuracy=float(block["float_accuracy"]) if "float_accuracy" in block else None,
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{file}: not a valid calibration recipe ({exc}); see calibration/demo.toml") from None
    return recipe


def load_split(recipe: Recipe, split: str) -> Split:
    """The preprocessed inputs (and labels, if the recipe names them) of one split."""
    if split not in recipe.splits:
        raise UsageError(f"{recipe.path}: no split '{split}' (it has {', '.join(recipe.splits)})")
    path = recipe.splits[split]
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = archive[recipe.images_key]
            labels = archive[recipe.labels_key] if recipe.labels_key else None
    except FileNotFoundError:
        raise UsageError(f"{path}: data file of split '{split}' is missing") from None
    except (KeyError, ValueError, OSError) as exc:
        raise UsageError(f"{path}: cannot read split '{split}' ({exc})") from None
    channel_axis = 1 if recipe.layout == "NCHW" else -1
    shape = [1] * raw.ndim
    shape[channel_axis] = -1
    mean = np.asarray(recipe.mean, np.float32).reshape(shape)
    std = np.asarray(recipe.std, np.float32).reshape(shape)
    inputs = ((raw.astype(np.float32) * np.float32(recipe.scale)) - mean) / std
    return Split(inputs=inputs.astype(np.float32), labels=labels)
