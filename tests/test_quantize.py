"""quantize(): end to end on the demo model with real engines, artifacts, determinism, bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from conftest import conv_bn_relu_model

from edge_sdk import DataError, QuantizeError, UsageError
from edge_sdk.demo import DEMO_MODEL
from edge_sdk.engines import EngineName
from edge_sdk.model import load_model
from edge_sdk.quantize import Rounding, quantize
from edge_sdk.recipe import load_recipe, load_split
from edge_sdk.verify import verify


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("q")
    return quantize(DEMO_MODEL, "rpi5", "demo", engine="auto", evaluation="demo", output=out, speed_threads=(1,)), out


def test_auto_runs_both_engines_and_keeps_the_better(demo_result):
    result, _ = demo_result
    engines = {c.engine for c in result.candidates}
    assert engines == {EngineName.ONNXRUNTIME, EngineName.NNCF}
    best = max(
        result.candidates, key=lambda c: (round(c.fidelity.worst_sqnr_db, 2), c.fidelity.outputs[0].accuracy_quant)
    )
    assert result.engine is best.engine
    assert any(w.startswith(f"kept {best.engine.value}") for w in result.warnings)


def test_demo_accuracy_drop_within_half_a_point(demo_result):
    result, _ = demo_result
    out = result.fidelity.outputs[0]
    assert out.accuracy_float == pytest.approx(0.986)
    assert out.accuracy_float - out.accuracy_quant <= 0.005
    assert result.fidelity.worst_sqnr_db > 25


def test_artifact_and_manifest(demo_result):
    result, out = demo_result
    artifact = result.artifact
    assert artifact.path == out / "demo_mnist.int8.onnx" and artifact.path.exists()
    manifest = json.loads(artifact.manifest_path.read_text())
    assert manifest["target"] == "rpi5" and manifest["plan"]["precision"] == "int8"
    assert manifest["artifact"]["sha256"] == artifact.sha256
    assert {"edge-sdk", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert not list(out.glob(".*partial"))
    # the written file is the verified model
    split = load_split(load_recipe("demo"), "evaluation")
    samples = [{"input": x[None]} for x in split.inputs[:100]]
    again = verify(artifact.path, DEMO_MODEL, samples)
    assert again.outputs[0].sqnr_db > 25


def test_same_inputs_give_byte_identical_artifacts(tmp_path):
    paths = []
    for name in ("a", "b"):
        result = quantize(DEMO_MODEL, "rpi5", "demo", engine="onnxruntime", output=tmp_path / name, speed_threads=())
        paths.append(result.artifact)
    assert paths[0].path.read_bytes() == paths[1].path.read_bytes()
    assert paths[0].manifest_path.read_bytes() == paths[1].manifest_path.read_bytes()


def test_dynamic_int8_and_fp16(tmp_path):
    dyn = quantize(DEMO_MODEL, "rpi5", "demo", precision="dynamic-int8", output=tmp_path, speed_threads=())
    assert dyn.engine is EngineName.ONNXRUNTIME and dyn.fidelity.worst_sqnr_db > 20
    half = quantize(DEMO_MODEL, "rpi5", "demo", precision="fp16", output=tmp_path, speed_threads=())
    assert half.fidelity.worst_sqnr_db > 50
    assert (tmp_path / "demo_mnist.fp16.onnx").exists() and (tmp_path / "demo_mnist.dynamic-int8.onnx").exists()


def test_int16_activations(tmp_path):
    result = quantize(DEMO_MODEL, "ethos-u55-128", "demo", precision="int16x8", speed_threads=())
    assert result.engine is EngineName.ONNXRUNTIME  # nncf's ONNX backend has no int16 activations
    assert result.fidelity.worst_sqnr_db > 35


def test_min_sqnr_fallback_keeps_the_fewest_layers_in_float(tmp_path):
    base = quantize(DEMO_MODEL, "rpi5", "demo", engine="onnxruntime", speed_threads=())
    goal = base.fidelity.worst_sqnr_db + 3.0
    result = quantize(DEMO_MODEL, "rpi5", "demo", engine="onnxruntime", min_sqnr_db=goal, speed_threads=())
    report = result.fallback
    assert report.met and report.float_nodes and result.fidelity.worst_sqnr_db >= goal
    assert {f.node for f in report.float_nodes} <= {f.node for f in result.plan.float_nodes}
    assert any(s.holds and s.float_layers == report.layers for s in report.steps)
    fewer = [s for s in report.steps if s.float_layers < report.layers]
    assert all(not s.holds for s in fewer), "no smaller count that was tried met the budget"
    assert report.extra_weight_bytes > 0


def test_unreachable_budget_is_a_clear_error():
    with pytest.raises(QuantizeError, match="no fallback meets SQNR >= 200 dB"):
        quantize(DEMO_MODEL, "rpi5", "demo", engine="onnxruntime", min_sqnr_db=200, speed_threads=())


def _bad_npz(tmp_path, array, name="input"):
    path = tmp_path / "calib.npz"
    np.savez(path, **{name: array})
    return path


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda t: _bad_npz(t, np.zeros((4, 1, 3, 28, 28), np.float32)), DataError, "calibration input 'input'"),
        (lambda t: _bad_npz(t, np.full((4, 1, 1, 28, 28), np.nan, np.float32)), DataError, "NaN"),
        (lambda t: _bad_npz(t, np.zeros((4, 1, 1, 28, 28), np.float32), "images"), DataError, "input"),
        (lambda t: (t / "empty").mkdir() or t / "empty", DataError, "empty|no images"),
        (lambda t: (t / "bad.png").write_bytes(b"not a png") and t, DataError, "bad.png"),
    ],
)
def test_bad_calibration_leaves_nothing_behind(tmp_path, make, error, match):
    source = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        quantize(DEMO_MODEL, "rpi5", source, preprocess="unit", output=out, speed_threads=())
    assert not out.exists() or not any(out.iterdir())


def test_too_few_samples_warns(tmp_path):
    rng = np.random.default_rng(0)
    path = _bad_npz(tmp_path, rng.standard_normal((8, 1, 1, 28, 28)).astype(np.float32))
    result = quantize(DEMO_MODEL, "rpi5", path, engine="onnxruntime", speed_threads=())
    assert any("only 8 calibration samples (onnxruntime recommends 100)" in w for w in result.warnings)


def test_engine_that_cannot_serve_the_plan():
    with pytest.raises(UsageError, match="nncf cannot serve this plan"):
        quantize(DEMO_MODEL, "ethos-u55-128", "demo", precision="int16x8", engine="nncf", speed_threads=())


def test_max_drop_needs_a_classifier(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.npz"
    np.savez(path, x=rng.standard_normal((4, 1, 3, 16, 16)).astype(np.float32))
    with pytest.raises(UsageError, match="--max-drop needs a classifier"):
        quantize(conv_bn_relu_model(), "rpi5", path, max_drop=1.0, speed_threads=())


def test_hexagon_uses_the_qnn_qdq_rules_and_only_onnxruntime():
    result = quantize(DEMO_MODEL, "sd8gen2-hexagon", "demo", speed_threads=())
    assert result.plan.qnn and [c.engine for c in result.candidates] == [EngineName.ONNXRUNTIME]
    assert result.fidelity.worst_sqnr_db > 30
    # uint8 activations and int8 weights, as the profile says
    types = {i.name: i.data_type for i in result.model.graph.initializer if i.name.endswith("zero_point")}
    assert types["input_zero_point"] == onnx.TensorProto.UINT8
    assert {t for name, t in types.items() if "_weight_" in name} == {onnx.TensorProto.INT8}


@pytest.mark.parametrize("rounding", ["nearest", "bias-correct", "gptq", "auto"])
def test_weight_rounding_modes(tmp_path, rounding):
    result = quantize(
        DEMO_MODEL,
        "rpi5",
        "demo",
        engine="onnxruntime",
        rounding=rounding,
        evaluation="demo",
        output=tmp_path,
        speed_threads=(),
    )
    manifest = json.loads(result.artifact.manifest_path.read_text())
    if rounding == "nearest":
        assert result.prepass is None and manifest["prepass"] is None
    else:
        # auto takes GPTQ here: the demo model's covariances cost a few hundred million multiply-adds
        assert result.prepass.startswith("bias correction" if rounding == "bias-correct" else "weight rounding")
        assert manifest["prepass"] == result.prepass
    out = result.fidelity.outputs[0]
    assert out.accuracy_float - out.accuracy_quant <= 0.005 and result.fidelity.worst_sqnr_db > 30


def test_auto_rounding_takes_bias_correction_where_gptq_would_be_slow(monkeypatch):
    quantize_module = sys.modules["edge_sdk.quantize"]  # the package exports the function under that name
    model = load_model(DEMO_MODEL)
    assert quantize_module.resolve_rounding(Rounding.AUTO, model, 256) is Rounding.GPTQ
    monkeypatch.setattr(quantize_module, "GPTQ_AUTO_MACS", 10**6)
    assert quantize_module.resolve_rounding(Rounding.AUTO, model, 256) is Rounding.BIAS_CORRECT
    assert quantize_module.resolve_rounding(Rounding.NEAREST, model, 256) is Rounding.NEAREST


@pytest.mark.parametrize("method", ["mse", "minmax"])
def test_activation_range_methods(method):
    result = quantize(DEMO_MODEL, "rpi5", "demo", engine="onnxruntime", ranges=method, speed_threads=())
    out = result.fidelity.outputs[0]
    assert result.fidelity.worst_sqnr_db > 30 and out.top1_agreement >= 0.99
