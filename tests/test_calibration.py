"""Calibration data: every source kind, the named preprocessings, and every bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import conv_bn_relu_model, make_model
from onnx import TensorProto, helper

from edge_sdk.calibration import CalibrationData, check_calibration, load_calibration
from edge_sdk.demo import DEMO_MODEL
from edge_sdk.errors import DataError
from edge_sdk.model import Model, load_model
from edge_sdk.recipe import PREPROCESSINGS, load_recipe, load_split

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def relu_model(shape: list[int]) -> Model:
    return load_model(make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", shape)], [("y", shape)]))


@pytest.fixture(scope="module")
def demo_model() -> Model:
    return load_model(DEMO_MODEL)


@pytest.fixture(scope="module")
def rgb16() -> Model:
    return load_model(conv_bn_relu_model())  # input x: 1x3x16x16


@pytest.fixture(scope="module")
def two_inputs() -> Model:
    node = helper.make_node("Add", ["a", "b"], ["y"])
    return load_model(make_model([node], [("a", [1, 4]), ("b", [1, 4])], [("y", [1, 4])]))


def photos(tmp_path: Path, names=("chelsea", "astronaut", "coffee")) -> Path:
    """Real photos from scikit-image, written as PNG and JPEG; file names sort differently from
    the order they are written in."""
    skimage_data = pytest.importorskip("skimage.data", reason="real photos come from scikit-image")
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(names):
        ext = "png" if i % 2 == 0 else "jpg"
        Image.fromarray(getattr(skimage_data, name)()).save(folder / f"{len(names) - i}_{name}.{ext}")
    return folder


def reference_imagenet(path: Path, size: int) -> np.ndarray:
    """torchvision's Resize(size / 0.875) + CenterCrop(size) + ToTensor + Normalize, written out."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    short = int(size / 0.875)
    w, h = image.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    image = image.resize(new, Image.Resampling.BILINEAR)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / 255
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None]


# ---------------------------------------------------------------------------------------- recipes
def test_demo_recipe_is_the_models_input(demo_model):
    data = load_calibration("demo", demo_model)
    assert len(data) == 256 and data.labels is not None and data.labels.dtype == np.int64
    assert all(s["input"].shape == (1, 1, 28, 28) and s["input"].dtype == np.float32 for s in data)
    assert "demo.toml split 'calibration' (256 samples)" in data.source
    split = load_split(load_recipe("demo"), "calibration")
    np.testing.assert_array_equal(np.concatenate([s["input"] for s in data]), split.inputs)
    np.testing.assert_array_equal(data.labels, split.labels)
    assert check_calibration(data, demo_model) == []


def test_recipe_object_path_and_split(demo_model):
    recipe = load_recipe("demo")
    by_path = load_calibration(recipe.path, demo_model, split="evaluation", max_samples=10)
    by_object = load_calibration(recipe, demo_model, split="evaluation", max_samples=10)
    assert len(by_path) == len(by_object) == 10
    assert len(load_calibration(recipe, demo_model, split="evaluation")) == 1000  # `samples` caps calibration only
    np.testing.assert_array_equal(by_path.labels, by_object.labels)


def test_max_samples_take_and_progress(demo_model):
    calls: list[tuple[int, int]] = []
    data = load_calibration("demo", demo_model, max_samples=5, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]
    full = load_calibration("demo", demo_model)
    np.testing.assert_array_equal(data.samples[4]["input"], full.samples[4]["input"])
    taken = full.take(3)
    assert len(taken) == 3 and list(taken.labels) == list(full.labels[:3])


def test_to_nhwc_transposes(rgb16):
    rng = np.random.default_rng(0)
    data = load_calibration([{"x": rng.standard_normal((1, 3, 16, 16))} for _ in range(2)], rgb16)
    nhwc = data.to_nhwc()
    assert nhwc.samples[0]["x"].shape == (1, 16, 16, 3) and nhwc.samples[0]["x"].flags.c_contiguous
    for c, h, w in [(0, 0, 0), (2, 5, 11), (1, 15, 3)]:
        assert nhwc.samples[1]["x"][0, h, w, c] == data.samples[1]["x"][0, c, h, w]


def test_recipe_with_a_folder_split(tmp_path, rgb16):
    photos(tmp_path)
    (tmp_path / "r.toml").write_text(
        'schema = 1\nname = "photos"\nmodel_input = "x"\nlayout = "NCHW"\npreprocess = "imagenet"\n'
        'resize = 20\ncrop = [16, 16]\n[splits]\ncalibration = "photos"\n'
    )
    data = load_calibration(tmp_path / "r.toml", rgb16)
    assert len(data) == 3 and data.labels is None
    assert data.samples[0]["x"].shape == (1, 3, 16, 16)


# ---------------------------------------------------------------------------------------- images
def test_folder_of_real_photos_with_imagenet_preprocessing(tmp_path):
    folder = photos(tmp_path)
    model = relu_model([1, 3, 224, 224])
    calls: list[tuple[int, int]] = []
    data = load_calibration(folder, model, preprocess="imagenet", progress=lambda d, t: calls.append((d, t)))
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["1_coffee.png", "2_astronaut.jpg", "3_chelsea.png"]
    assert calls == [(1, 3), (2, 3), (3, 3)]
    for file, sample in zip(files, data, strict=True):
        np.testing.assert_allclose(sample["x"], reference_imagenet(file, 224), atol=1e-5)
    assert float(data.samples[0]["x"].min()) > -2.2 and float(data.samples[0]["x"].max()) < 2.7
    again = load_calibration(folder, model, preprocess="imagenet")
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(data, again, strict=True))
    assert check_calibration(data, model, recommended=300)[0].startswith("only 3 calibration samples")


def test_folder_crops_to_the_models_size_keeping_channel_order(tmp_path, rgb16):
    from PIL import Image

    stripes = np.zeros((200, 300, 3), np.uint8)  # red | green | blue, 100 px each
    for c in range(3):
        stripes[:, c * 100 : (c + 1) * 100, c] = 255
    folder = tmp_path / "img"
    folder.mkdir()
    Image.fromarray(stripes).save(folder / "stripes.png")
    x = load_calibration(folder, rgb16, preprocess="raw").samples[0]["x"][0]
    # shorter side 200 -> 16, width 300 -> 24, centre crop keeps columns 4..19 of 24
    np.testing.assert_array_equal(x[:, 8, 1], [255, 0, 0])
    np.testing.assert_array_equal(x[:, 8, 8], [0, 255, 0])
    np.testing.assert_array_equal(x[:, 8, 14], [0, 0, 255])


@pytest.mark.parametrize(
    ("name", "pixel", "expected"),
    [
        ("imagenet", 128, (128 / 255 - IMAGENET_MEAN) / IMAGENET_STD),
        ("imagenet-tf", 255, [1.0, 1.0, 1.0]),
        ("imagenet-tf", 0, [-1.0, -1.0, -1.0]),
        ("unit", 51, [0.2, 0.2, 0.2]),
        ("raw", 51, [51.0, 51.0, 51.0]),
    ],
)
def test_named_preprocessing_math(tmp_path, rgb16, name, pixel, expected):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.fromarray(np.full((40, 30, 3), pixel, np.uint8)).save(tmp_path / "img" / "flat.png")
    x = load_calibration(tmp_path / "img", rgb16, preprocess=name).samples[0]["x"]
    np.testing.assert_allclose(x[0, :, 7, 7], expected, rtol=1e-6, atol=1e-6)


def test_grayscale_model_reads_images_as_luminance(tmp_path):
    folder = photos(tmp_path, names=("camera", "coffee"))
    model = relu_model([1, 1, 28, 28])
    data = load_calibration(folder, model, preprocess="unit")
    assert data.samples[0]["x"].shape == (1, 1, 28, 28)
    assert float(data.samples[1]["x"].min()) >= 0.0 and float(data.samples[1]["x"].max()) <= 1.0
    with pytest.raises(DataError, match="3 mean/std values but the data has 1 channels"):
        load_calibration(folder, model, preprocess="imagenet")


def test_nhwc_model_gets_nhwc_images(tmp_path):
    folder = photos(tmp_path, names=("rocket",))
    data = load_calibration(folder, relu_model([1, 16, 16, 3]), preprocess="unit")
    assert data.samples[0]["x"].shape == (1, 16, 16, 3)


# ---------------------------------------------------------------------------------- arrays, iterables
def test_npz_with_labels_and_npy(tmp_path, two_inputs, rgb16):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((6, 1, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", a=a, b=b, labels=np.arange(6, dtype=np.int32))
    data = load_calibration(tmp_path / "d.npz", two_inputs, max_samples=4)
    assert len(data) == 4 and data.labels.dtype == np.int64 and list(data.labels) == [0, 1, 2, 3]
    np.testing.assert_allclose(data.samples[2]["a"], a[2:3].astype(np.float32))
    assert data.samples[2]["b"].shape == (1, 4)
    np.save(tmp_path / "x.npy", rng.integers(0, 255, (3, 3, 16, 16), dtype=np.uint8))
    images = load_calibration(tmp_path / "x.npy", rgb16)
    assert len(images) == 3 and images.samples[0]["x"].dtype == np.float32


def test_generator_list_and_missing_batch_dim(rgb16):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((3, 16, 16)) for _ in range(4)]
    calls: list[tuple[int, int]] = []
    data = load_calibration((dict(x=a) for a in arrays), rgb16, progress=lambda d, t: calls.append((d, t)))
    assert len(data) == 4 and calls[-1] == (4, 0)  # a generator's length is not known
    np.testing.assert_allclose(data.samples[3]["x"][0], arrays[3].astype(np.float32))
    assert len(load_calibration([{"x": a[None]} for a in arrays], rgb16, max_samples=2)) == 2


def test_calibration_data_is_accepted_and_rechecked(rgb16):
    data = load_calibration([{"x": np.ones((1, 3, 16, 16)) * i} for i in range(3)], rgb16)
    assert len(load_calibration(data, rgb16, max_samples=2)) == 2


# ------------------------------------------------------------------------------------ bad input
def test_shape_mismatch_names_the_input_and_both_shapes(demo_model):
    with pytest.raises(DataError, match=r"input 'input' has shape 1x3x28x28 but the model expects 1x1x28x28"):
        load_calibration([{"input": np.zeros((1, 3, 28, 28), np.float32)}], demo_model)


def test_nhwc_data_for_an_nchw_model_says_transpose(rgb16):
    with pytest.raises(DataError, match=r"1x16x16x3 .* looks NHWC .* transpose it \(0, 3, 1, 2\)"):
        load_calibration([{"x": np.zeros((1, 16, 16, 3))}], rgb16)


def test_dtype_mismatch():
    node = helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)
    graph = helper.make_graph(
        [node],
        "ids",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    with pytest.raises(DataError, match="input 'ids' has float32 data in sample 0 but the model expects int64"):
        load_calibration([{"ids": np.zeros((1, 4), np.float32)}], model)
    ok = load_calibration([{"ids": np.arange(4, dtype=np.int32)}], model)
    assert ok.samples[0]["ids"].dtype == np.int64
    with pytest.raises(DataError, match="has <U1 data"):
        load_calibration([{"ids": np.array(list("abcd"))}], model)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_names_input_and_sample(rgb16, bad):
    samples = [{"x": np.zeros((1, 3, 16, 16), np.float32)} for _ in range(3)]
    samples[2]["x"][0, 1, 2, 3] = bad
    with pytest.raises(DataError, match="input 'x' has NaN or inf values in sample 2"):
        load_calibration(samples, rgb16)


def test_missing_and_extra_input_names(two_inputs):
    with pytest.raises(DataError, match=r"sample 0 lacks input 'b' and has unknown input 'c'"):
        load_calibration([{"a": np.zeros((1, 4)), "c": np.zeros((1, 4))}], two_inputs)
    with pytest.raises(DataError, match="not a dict"):
        load_calibration([np.zeros((1, 4))], two_inputs)


def test_no_samples(rgb16, tmp_path):
    with pytest.raises(DataError, match="no calibration samples"):
        load_calibration([], rgb16)
    np.save(tmp_path / "empty.npy", np.zeros((0, 3, 16, 16), np.float32))
    with pytest.raises(DataError, match=r"empty.npy .*no calibration samples"):
        load_calibration(tmp_path / "empty.npy", rgb16)


def test_too_few_samples_and_constant_input_warn(rgb16):
    rng = np.random.default_rng(3)
    data = load_calibration([{"x": rng.standard_normal((1, 3, 16, 16))} for _ in range(8)], rgb16)
    assert check_calibration(data, rgb16) == []
    [warning] = check_calibration(data, rgb16, recommended=300)
    assert "only 8 calibration samples, fewer than the 300" in warning
    flat = load_calibration([{"x": np.full((1, 3, 16, 16), 0.5)} for _ in range(4)], rgb16)
    [constant] = check_calibration(flat, rgb16)
    assert "input 'x' is constant" in constant
    same = load_calibration([{"x": np.arange(768.0).reshape(1, 3, 16, 16)} for _ in range(4)], rgb16)
    assert "is the same in all 4 samples" in check_calibration(same, rgb16)[0]


def test_empty_folder_names_folder_and_extensions(tmp_path, rgb16):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"empty: no images found \(accepted: .bmp .jpeg .jpg .pgm .png"):
        load_calibration(tmp_path / "empty", rgb16, preprocess="imagenet")


def test_unreadable_image_names_the_file(tmp_path, rgb16):
    folder = photos(tmp_path, names=("coffee",))
    (folder / "0_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"0_broken.jpg: cannot read the image"):
        load_calibration(folder, rgb16, preprocess="imagenet")


def test_folder_needs_a_known_preprocessing(tmp_path, rgb16):
    folder = photos(tmp_path, names=("coffee",))
    with pytest.raises(DataError, match=r"pass --preprocess NAME .*imagenet, imagenet-tf, unit, raw"):
        load_calibration(folder, rgb16)
    with pytest.raises(DataError, match="unknown preprocessing 'imagenet-torch'; pass one of: imagenet, "):
        load_calibration(folder, rgb16, preprocess="imagenet-torch")
    assert set(PREPROCESSINGS) == {"imagenet", "imagenet-tf", "unit", "raw"}


def test_folder_for_a_non_image_model(tmp_path, two_inputs):
    folder = photos(tmp_path, names=("coffee",))
    with pytest.raises(DataError, match="one 4-D image input, but this one has: a 1x4, b 1x4"):
        load_calibration(folder, two_inputs, preprocess="unit")


class _Tripwire:
    """Unpickling this would create a file: the proof that data is never unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_arrays_are_refused_never_loaded(tmp_path, rgb16):
    flag = tmp_path / "unpickled"
    payload = np.array([_Tripwire(flag)], dtype=object)
    pickle.loads(pickle.dumps(_Tripwire(tmp_path / "armed")))  # the tripwire works when unpickled
    assert (tmp_path / "armed").exists()
    np.save(tmp_path / "obj.npy", payload, allow_pickle=True)
    np.savez(tmp_path / "obj.npz", x=payload)
    for name in ("obj.npy", "obj.npz"):
        with pytest.raises(DataError, match=r"object arrays \(pickled Python objects\), which edge-sdk never loads"):
            load_calibration(tmp_path / name, rgb16)
    assert not flag.exists()
    with pytest.raises(DataError, match="object data"):
        load_calibration([{"x": payload}], rgb16)


def test_npz_keys_must_be_the_input_names(tmp_path, two_inputs, rgb16):
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 4)), images=np.zeros((2, 4)))
    with pytest.raises(DataError, match="has arrays a, images but the model's inputs are a, b"):
        load_calibration(tmp_path / "d.npz", two_inputs)
    np.save(tmp_path / "x.npy", np.zeros((2, 4)))
    with pytest.raises(DataError, match=r"a .npy holds one array but the model has 2 inputs"):
        load_calibration(tmp_path / "x.npy", two_inputs)
    (tmp_path / "bad.npz").write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match=r"bad.npz: not a .npy or .npz file \(maybe a pickle"):
        load_calibration(tmp_path / "bad.npz", rgb16)
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps(_Tripwire(tmp_path / "unpickled")))
    with pytest.raises(DataError, match="maybe a pickle, which edge-sdk never loads"):
        load_calibration(tmp_path / "pickle.npy", rgb16)
    assert not (tmp_path / "unpickled").exists()


def test_unsupported_sources(tmp_path, rgb16):
    with pytest.raises(DataError, match="no such file"):
        load_calibration(tmp_path / "missing.npz", rgb16)
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(DataError, match=r"from a '.csv' file"):
        load_calibration(tmp_path / "data.csv", rgb16)
    with pytest.raises(DataError, match=r"not found; pass a .toml file or a shipped name"):
        load_calibration("no-such-recipe", rgb16)
    with pytest.raises(DataError, match="from a dict"):
        load_calibration({"x": np.zeros((1, 3, 16, 16))}, rgb16)


def test_recipe_for_another_model(demo_model, rgb16):
    with pytest.raises(DataError, match="feeds input 'input' but the model's inputs are: x"):
        load_calibration("demo", rgb16)
    assert isinstance(load_calibration("demo", demo_model, max_samples=1), CalibrationData)
