"""What a device must do to a camera frame or an image file before the model sees it, written into
each artifact's manifest so a deployed demo (examples/raspberry_pi/) preprocesses exactly as the
calibration data was preprocessed."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_sdk.calibration import spatial_size
from edge_sdk.model import Model
from edge_sdk.recipe import PREPROCESSINGS, Recipe


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


def deploy_info(recipe: Recipe | None, model: Model) -> DeployInfo:
    """The preprocessing of the calibration data's recipe (`calibration.recipe_of`); arrays and
    iterables carry none."""
    if recipe is None:
        return DeployInfo(None, ())
    split = recipe.splits.get("calibration") or next(iter(recipe.splits.values()))
    resize, crop = _geometry(recipe, model) if split.is_dir() else (None, None)
    where = f"recipe {recipe.name}" if recipe.path.suffix == ".toml" else f"preprocess '{recipe.preprocess}'"
    spec = DeployPreprocess(recipe.channel_order, recipe.scale, recipe.mean, recipe.std, resize, crop, where)
    return DeployInfo(spec, recipe.class_names)


def _geometry(recipe: Recipe, model: Model) -> tuple[int | None, tuple[int, int] | None]:
    size = spatial_size(model.inputs[0], recipe.layout)
    crop = recipe.crop or size
    if crop is None:
        return None, None
    fraction = PREPROCESSINGS[recipe.preprocess].crop_fraction if recipe.preprocess else 1.0
    return recipe.resize or math.floor(max(crop) / fraction), crop
