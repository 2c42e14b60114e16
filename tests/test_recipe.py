"""Recipe files: the shipped one loads, and every schema mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_sdk.errors import DataError
from edge_sdk.recipe import PREPROCESSINGS, load_recipe, load_split

VALID = """
schema = 1
name = "mine"
model_input = "x"
layout = "NCHW"
{top}
[splits]
calibration = "calib.npz"
{splits}
[data]
images_key = "images"
{data}
"""


def write(tmp_path: Path, *, top: str = "", splits: str = "", data: str = "") -> Path:
    np.savez(tmp_path / "calib.npz", images=np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4))
    path = tmp_path / "mine.toml"
    path.write_text(VALID.format(top=top, splits=splits, data=data))
    return path


def test_shipped_demo_recipe():
    recipe = load_recipe("demo")
    assert recipe.layout == "NCHW" and recipe.channel_order == "gray" and recipe.samples == 256
    assert set(recipe.splits) == {"calibration", "evaluation"} and recipe.preprocess is None


def test_defaults_and_normalisation(tmp_path):
    recipe = load_recipe(write(tmp_path, top="scale = 0.5\nmean = [1.0, 2.0, 3.0]\nstd = [2.0, 2.0, 2.0]"))
    assert recipe.channel_order == "rgb" and recipe.labels_key is None and recipe.samples == 0
    split = load_split(recipe, "calibration")
    raw = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    expected = (raw * 0.5 - np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3, 1, 1)) / 2.0
    np.testing.assert_allclose(split.inputs, expected)
    assert split.labels is None


def test_preprocess_sets_the_normalisation(tmp_path):
    recipe = load_recipe(write(tmp_path, top='preprocess = "imagenet"\nresize = 256\ncrop = [224, 224]'))
    named = PREPROCESSINGS["imagenet"]
    assert (recipe.scale, recipe.mean, recipe.std) == (named.scale, named.mean, named.std)
    assert recipe.resize == 256 and recipe.crop == (224, 224)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top": "colour = 'rgb'"}, "key 'colour' is not a known key"),
        ({"data": "sample = 10"}, "key 'data.sample' is not a known key"),
        ({"top": "layout2 = 1"}, "key 'layout2' is not a known key"),
        ({"top": "preprocess = 'imagenet'\nmean = [0.5]"}, "key 'mean' conflicts with preprocess = 'imagenet'"),
        ({"top": "preprocess = 'vgg'"}, "key 'preprocess' is 'vgg', expected one of: imagenet, imagenet-tf"),
        ({"top": "crop = [224]"}, "key 'crop' must be two positive integers"),
        ({"top": "resize = 100\ncrop = [224, 224]"}, "key 'resize' is 100, smaller than the crop"),
        ({"top": "std = [0.0]"}, "key 'std' has a zero"),
        ({"top": "scale = 'big'"}, "key 'scale' must be an integer or a number"),
        ({"top": "channel_order = 'cmyk'"}, "key 'channel_order' is 'cmyk', expected one of: rgb, bgr, gray"),
        ({"splits": "evaluation = 'eval.npz'"}, r"key 'splits.evaluation' points at .*eval.npz, which does not exist"),
        ({"splits": "notes = 'calib.txt'"}, "does not exist"),
        ({"data": "samples = -1"}, "key 'data.samples' must be 0"),
    ],
)
def test_schema_errors_name_file_and_key(tmp_path, kwargs, message):
    path = write(tmp_path, **kwargs)
    with pytest.raises(DataError, match=message) as info:
        load_recipe(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_keys_schema_and_bad_toml(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('schema = 1\nname = "r"\nlayout = "NCHW"\n[splits]\n')
    with pytest.raises(DataError, match="key 'model_input' is missing"):
        load_recipe(path)
    path.write_text('schema = 2\nname = "r"\n')
    with pytest.raises(DataError, match="key 'schema' is 2, but this edge-sdk reads schema 1"):
        load_recipe(path)
    path.write_text("schema = [")
    with pytest.raises(DataError, match="not valid TOML"):
        load_recipe(path)
    path.write_text('schema = 1\nname = "r"\nmodel_input = "x"\nlayout = "NCHW"\n[splits]\n')
    with pytest.raises(DataError, match=r"\[splits\] names no split"):
        load_recipe(path)


def test_split_errors(tmp_path):
    recipe = load_recipe(write(tmp_path, data='labels_key = "labels"'))
    with pytest.raises(DataError, match="no split 'evaluation' \\(it has calibration\\)"):
        load_split(recipe, "evaluation")
    with pytest.raises(DataError, match="has no array 'labels' \\(it has: images\\)"):
        load_split(recipe, "calibration")
    (tmp_path / "calib.txt").write_text("x")
    path = write(tmp_path, splits='notes = "calib.txt"')
    with pytest.raises(DataError, match=r"a split is a .npz or .npy file or a folder of images"):
        load_recipe(path)


def test_folder_split_in_bgr_nhwc(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.fromarray(np.full((10, 12, 3), (10, 20, 30), np.uint8)).save(tmp_path / "img" / "a.png")
    path = tmp_path / "r.toml"
    text = 'schema = 1\nname = "r"\nmodel_input = "x"\nlayout = "NHWC"\nchannel_order = "bgr"\n'
    path.write_text(text + '[splits]\ncalibration = "img"\n')
    with pytest.raises(DataError, match=r"needs a crop size; set crop = \[h, w\]"):
        load_split(load_recipe(path), "calibration")
    path.write_text(text + 'crop = [8, 6]\n[splits]\ncalibration = "img"\n')
    split = load_split(load_recipe(path), "calibration")
    assert split.inputs.shape == (1, 8, 6, 3)
    np.testing.assert_array_equal(split.inputs[0, 4, 3], [30, 20, 10])
