"""Model loading: validation, shapes, simplification, and every bad-input case as one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import const, conv_bn_relu_model, make_model
from onnx import helper

from edge_sdk import DynamicShapeError, ModelError, UsageError
from edge_sdk.model import load_model


def test_loads_simplifies_and_folds_batchnorm(tiny_model_path):
    model = load_model(tiny_model_path)
    ops = [n.op_type for n in model.proto.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 1
    assert "BatchNormalization: 1 -> 0" in model.passes
    assert model.inputs[0].shape == (1, 3, 16, 16) and model.outputs[0].shape == (1, 8, 16, 16)
    assert model.opset == 17 and len(model.sha256) == 64


def test_simplified_model_computes_the_same(tiny_model_path):
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(tiny_model_path)).run(None, {"x": x})[0]
    got = ort.InferenceSession(load_model(tiny_model_path).proto.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_loading_is_deterministic(tiny_model_path):
    a = load_model(tiny_model_path).proto.SerializeToString(deterministic=True)
    b = load_model(tiny_model_path).proto.SerializeToString(deterministic=True)
    assert a == b


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ModelError, match="is a directory"):
        load_model(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(path)


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "photo.onnx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match="not an ONNX"):
        load_model(path)


def test_text_file_is_not_an_onnx_model(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("hello, this is not a model\n")
    with pytest.raises(ModelError, match="not an ONNX"):
        load_model(path)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9, 0.99])
def test_truncated_file(tiny_model_path, tmp_path, fraction):
    data = tiny_model_path.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError, match=r"truncated|invalid|not an ONNX"):
        load_model(path)


def test_missing_external_data_file(tmp_path):
    model = conv_bn_relu_model()
    path = tmp_path / "ext.onnx"
    onnx.save(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelError, match=r"external data file 'weights\.bin' is missing"):
        load_model(path)


def test_external_data_loads_when_present(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(conv_bn_relu_model(), path, save_as_external_data=True, location="w.bin", size_threshold=0)
    assert load_model(path).outputs[0].shape == (1, 8, 16, 16)


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    path = tmp_path / "sub" / "ext.onnx"
    path.parent.mkdir()
    onnx.save(conv_bn_relu_model(), path, save_as_external_data=True, location="w.bin", size_threshold=0)
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save(model, path)
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(path)


@pytest.mark.parametrize(("opset", "match"), [(6, "opset 6 is older than 7"), (22, "newer than 21")])
def test_opset_out_of_range(tmp_path, opset, match):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])], opset=opset)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match=match):
        load_model(path)


def test_old_opset_is_upgraded_to_13(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])], opset=11)
    loaded = load_model(model)
    assert loaded.opset == 11 and "opset 11 -> 13 (onnx.version_converter)" in loaded.passes
    assert loaded.proto.opset_import[0].version == 13


def test_invalid_graph_is_reported(tmp_path):
    model = make_model([helper.make_node("Relu", ["missing"], ["y"])], [("x", [1, 4])], [("y", [1, 4])])
    with pytest.raises(ModelError, match="invalid ONNX model"):
        load_model(model)


def test_dynamic_input_needs_input_shape():
    with pytest.raises(DynamicShapeError, match=r"--input-shape x=1x3x16x16"):
        load_model(conv_bn_relu_model(batch="N"))


def test_input_shape_fixes_dynamic_dims_without_touching_the_callers_proto():
    proto = conv_bn_relu_model(batch="N")
    model = load_model(proto, input_shapes={"x": (2, 3, 16, 16)})
    assert model.inputs[0].shape == (2, 3, 16, 16) and model.outputs[0].shape == (2, 8, 16, 16)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        ({"nope": (1, 3, 16, 16)}, "model's inputs are: x"),
        ({"x": (1, 3, 16)}, "rank 4"),
        ({"x": (1, 4, 16, 16)}, "dim 1 is fixed at 3"),
        ({"x": (0, 3, 16, 16)}, "positive"),
    ],
)
def test_bad_input_shape(shapes, match):
    with pytest.raises(UsageError, match=match):
        load_model(conv_bn_relu_model(batch="N"), input_shapes=shapes)


def test_data_dependent_shape_is_rejected():
    model = make_model(
        [
            helper.make_node("NonZero", ["x"], ["idx"]),
            helper.make_node("Cast", ["idx"], ["y"], to=onnx.TensorProto.FLOAT),
        ],
        [("x", [4, 4])],
        [("y", [2, "K"])],
    )
    with pytest.raises(DynamicShapeError, match="no static shape"):
        load_model(model, simplify=False)


def test_shape_arithmetic_folds_to_constants():
    # Reshape to a shape computed from Shape/Gather/Concat, as torch exports often write it
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [
        const("zero", np.array(0, np.int64)),
        const("zero1", np.array([0], np.int64)),
        const("minus1", np.array([-1], np.int64)),
    ]
    model = load_model(make_model(nodes, [("x", [2, 3, 4])], [("y", [2, 12])], inits))
    assert [n.op_type for n in model.proto.graph.node] == ["Reshape"]


def test_torch_module_is_exported():
    torch = pytest.importorskip("torch", reason="needs the torch extra")
    pytest.importorskip("onnxscript", reason="needs onnxscript")
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    model = load_model(module, example_inputs=(torch.zeros(1, 3, 8, 8),))
    assert model.outputs[0].shape == (1, 4, 6, 6)
    assert "BatchNormalization" not in {n.op_type for n in model.proto.graph.node}


def test_torch_module_needs_example_inputs():
    torch = pytest.importorskip("torch", reason="needs the torch extra")
    with pytest.raises(UsageError, match="example_inputs"):
        load_model(torch.nn.ReLU())


def test_unsupported_source_type():
    with pytest.raises(UsageError, match="cannot load a model from int"):
        load_model(42)


def test_real_paddleocr_classifier_upgraded_and_simplified_computes_the_same():
    """PP-OCR's direction classifier (opset 11, dynamic input) from rapidocr-onnxruntime."""
    rapidocr = pytest.importorskip("rapidocr_onnxruntime", reason="needs rapidocr-onnxruntime (test extra)")
    import onnxruntime as ort

    path = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    model = load_model(path, input_shapes={"x": (1, 3, 48, 192)})
    assert model.opset == 11 and model.passes[0] == "opset 11 -> 13 (onnx.version_converter)"
    assert "BatchNormalization" not in {n.op_type for n in model.proto.graph.node}
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got = ort.InferenceSession(model.proto.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
