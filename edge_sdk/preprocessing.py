"""What a device must do to a camera frame or an image file before the model sees it, written into
each artifact's manifest so a deployed demo (examples/raspberry_pi/) preprocesses exactly as the
calibration data was preprocessed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sdk.calibration import image_layout, spatial_size
from edge_sdk.model import Model
from edge_sdk.recipe import PREPROCESSINGS, Recipe, folder_recipe, load_recipe


@dataclass(frozen=True)
class DeployPreprocess:
    """x = (pixel * scale - mean) / std per channel, after an optional resize of the shorter side
    (bilinear) and centre crop; `resize`/`crop` are None when the data was already at the model's size."""

    channel_order: str  # "rgb", "bgr" or "gray"
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None
    crop: tuple[int, int] | None
    source: str


@dataclass(frozen=True)
class DeployInfo:
    preprocess: DeployPreprocess | None  # None: the calibration data came as arrays, preprocessing unknown
    labels: tuple[str, ...]  # class names by output index; empty when the recipe names none


def deploy_info(calibration: Any, preprocess: str | None, model: Model) -> DeployInfo:
    """The preprocessing behind `calibration` (a recipe name or file, or an image folder with a
    named preprocessing); arrays and iterables carry none."""
    recipe = _recipe(calibration, preprocess, model)
    if recipe is None:
        return DeployInfo(None, ())
    split = recipe.splits.get("calibration") or next(iter(recipe.splits.values()))
    resize, crop = _geometry(recipe, model) if split.is_dir() else (None, None)
    where = f"recipe {recipe.name}" if recipe.path.suffix == ".toml" else f"preprocess '{recipe.preprocess}'"
    spec = DeployPreprocess(recipe.channel_order, recipe.scale, recipe.mean, recipe.std, resize, crop, where)
    return DeployInfo(spec, recipe.class_names)


def _recipe(calibration: Any, preprocess: str | None, model: Model) -> Recipe | None:
    if not isinstance(calibration, str | Path):
        return None
    path = Path(calibration)
    if path.is_dir() and preprocess in PREPROCESSINGS and len(model.inputs) == 1 and len(model.inputs[0].shape) == 4:
        spec = model.inputs[0]
        layout = image_layout(spec)
        channels = spec.shape[1] if layout == "NCHW" else spec.shape[3]
        return folder_recipe(path, str(preprocess), model_input=spec.name, layout=layout, channels=channels)
    if path.suffix == ".toml" or (not path.suffix and not path.exists()):
        return load_recipe(path)
    return None


def _geometry(recipe: Recipe, model: Model) -> tuple[int | None, tuple[int, int] | None]:
    size = spatial_size(model.inputs[0], recipe.layout)
    crop = recipe.crop or size
    if crop is None:
        return None, None
    fraction = PREPROCESSINGS[recipe.preprocess].crop_fraction if recipe.preprocess else 1.0
    return recipe.resize or math.floor(max(crop) / fraction), crop
