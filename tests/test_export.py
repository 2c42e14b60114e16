"""export_tflite: whole models lowered, quantized and verified in LiteRT; bad input leaves no file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import const, make_model
from onnx import helper

from edge_sdk.errors import DependencyError, ExportError, QuantizeError, UsageError
from edge_sdk.export import export_tflite
from edge_sdk.lower.lower import lower_to_tflite
from edge_sdk.model import load_model
from edge_sdk.profile import Precision

pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert")
DEMO = Path(__file__).parents[1] / "edge_sdk" / "assets" / "demo_mnist.onnx"


def encoder_block(opset: int = 20) -> onnx.ModelProto:
    """One pre-norm transformer encoder block (4 heads, d=32, 16 tokens), built from ONNX ops."""
    rng = np.random.default_rng(0)
    d, heads, tokens = 32, 4, 16

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    inits = [
        const("g1", np.ones(d, np.float32)), const("b1", np.zeros(d, np.float32)),
        const("wq", w(d, d)), const("wk", w(d, d)), const("wv", w(d, d)), const("wo", w(d, d)),
        const("heads", np.array([1, tokens, heads, d // heads], np.int64)),
        const("merged", np.array([1, tokens, d], np.int64)),
        const("scale", np.array(1 / np.sqrt(d // heads), np.float32)),
        const("g2", np.ones(d, np.float32)), const("b2", np.zeros(d, np.float32)),
        const("w1", w(d, 4 * d)), const("bias1", np.zeros(4 * d, np.float32)), const("w2", w(4 * d, d)),
    ]  # fmt: skip
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "g1", "b1"], ["ln1"], axis=-1),
        n("MatMul", ["ln1", "wq"], ["q"]), n("MatMul", ["ln1", "wk"], ["k"]), n("MatMul", ["ln1", "wv"], ["v"]),
        n("Reshape", ["q", "heads"], ["qh"]), n("Reshape", ["k", "heads"], ["kh"]),
        n("Reshape", ["v", "heads"], ["vh"]),
        n("Transpose", ["qh"], ["qt"], perm=[0, 2, 1, 3]), n("Transpose", ["kh"], ["kt"], perm=[0, 2, 3, 1]),
        n("Transpose", ["vh"], ["vt"], perm=[0, 2, 1, 3]),
        n("MatMul", ["qt", "kt"], ["scores"]), n("Mul", ["scores", "scale"], ["scaled"]),
        n("Softmax", ["scaled"], ["attn"], axis=-1), n("MatMul", ["attn", "vt"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]), n("Reshape", ["ctx_t", "merged"], ["ctx_m"]),
        n("MatMul", ["ctx_m", "wo"], ["proj"]), n("Add", ["x", "proj"], ["res1"]),
        n("LayerNormalization", ["res1", "g2", "b2"], ["ln2"], axis=-1),
        n("MatMul", ["ln2", "w1"], ["h1"]), n("Add", ["h1", "bias1"], ["h1b"]), n("Gelu", ["h1b"], ["act"]),
        n("MatMul", ["act", "w2"], ["h2"]), n("Add", ["res1", "h2"], ["y"]),
    ]  # fmt: skip
    return make_model(nodes, [("x", [1, tokens, d])], [("y", [1, tokens, d])], inits, opset)


def test_demo_fp32_matches_onnx_runtime_with_no_layout_transpose():
    result = export_tflite(DEMO, "rpi4b", precision="fp32")
    assert result.fidelity.outputs[0].max_abs_error < 1e-4
    assert result.layout_transposes == 0 and "TRANSPOSE" not in result.op_counts
    assert result.nhwc_io and result.io_dtype == "float32"


def test_transformer_block_fp32_and_fp16():
    model = load_model(encoder_block())
    fp32 = export_tflite(model, "rpi5", precision="fp32")
    assert fp32.fidelity.outputs[0].max_abs_error < 1e-4, fp32.op_counts
    assert "BATCH_MATMUL" in fp32.op_counts and "GELU" in fp32.op_counts
    fp16 = export_tflite(model, "rpi5", precision="fp16")
    assert fp16.fidelity.outputs[0].sqnr_db > 40
    assert "DEQUANTIZE" in fp16.op_counts or len(fp16.flatbuffer) < len(fp32.flatbuffer)


def test_demo_int8_keeps_accuracy_and_float_io_on_cpu_targets():
    result = export_tflite(DEMO, "rpi5", precision="int8", calibration="demo", evaluation="demo")
    out = result.fidelity.outputs[0]
    assert result.io_dtype == "float32"
    assert out.sqnr_db > 30
    assert out.accuracy_float - out.accuracy_quant <= 0.005


def test_int8_io_for_npus_and_int16x8():
    result = export_tflite(DEMO, "ethos-u55-128", precision="int16x8", calibration="demo")
    assert result.io_dtype == "int16"
    assert result.fidelity.outputs[0].sqnr_db > 30
    assert result.vela is not None and result.vela.npu_ops > 0


def test_dynamic_int8_needs_no_calibration():
    result = export_tflite(DEMO, "rpi4b", precision="dynamic-int8")
    assert result.fidelity.outputs[0].sqnr_db > 25


def test_artifact_and_manifest_are_deterministic(tmp_path: Path):
    first = export_tflite(DEMO, "rpi5", precision="int8", calibration="demo", output=tmp_path / "a")
    second = export_tflite(DEMO, "rpi5", precision="int8", calibration="demo", output=tmp_path / "b")
    assert first.artifact is not None and second.artifact is not None
    assert first.artifact.path.read_bytes() == second.artifact.path.read_bytes()
    manifest = json.loads(first.artifact.manifest_path.read_text())
    assert manifest["target"] == "rpi5" and manifest["precision"] == "int8"
    assert manifest["artifact"]["sha256"] == first.artifact.sha256


def test_ethos_u_output_is_the_vela_model(tmp_path: Path):
    result = export_tflite(DEMO, "ethos-u65-256", calibration="demo", output=tmp_path)
    assert result.artifact is not None and result.artifact.path.name.endswith("_vela.tflite")
    assert result.vela.cpu_ops == 0
    assert json.loads(result.artifact.manifest_path.read_text())["vela"]["inference_time_ms"] > 0


@pytest.mark.parametrize(
    ("target", "precision", "calib", "fragment"),
    [
        ("rpi5", "int8", None, "needs calibration data"),
        ("rpi4b", "fp16", None, "does not run fp16"),
        ("rk3588-npu", "int8", "demo", "not TFLite"),
    ],
)
def test_bad_requests_are_usage_errors_and_write_nothing(tmp_path: Path, target, precision, calib, fragment):
    with pytest.raises(UsageError, match=fragment):
        export_tflite(DEMO, target, precision=precision, calibration=calib, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_op_names_the_node_and_writes_nothing(tmp_path: Path):
    model = make_model(
        [helper.make_node("Einsum", ["x", "x"], ["y"], name="mix", equation="ij,ij->ij")],
        [("x", [4, 4])],
        [("y", [4, 4])],
    )
    with pytest.raises(ExportError, match=r"node 'mix' \(Einsum, opset 17\)"):
        export_tflite(load_model(model), "rpi5", precision="fp32", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_vela_names_the_extra(monkeypatch, tmp_path: Path):
    import edge_sdk.vela as vela

    def missing() -> str:
        raise DependencyError("Ethos-U targets need Vela: pip install 'edge-sdk[ethos-u]'")

    monkeypatch.setattr(vela, "locate_vela", missing)
    with pytest.raises(DependencyError, match=r"edge-sdk\[ethos-u\]"):
        export_tflite(DEMO, "ethos-u55-128", calibration="demo", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_nchw_io_keeps_the_onnx_layout():
    lowered = lower_to_tflite(load_model(DEMO), nchw_io=True)
    result = export_tflite(DEMO, "rpi5", precision="fp32", nchw_io=True)
    assert not result.nhwc_io and lowered.op_counts.get("TRANSPOSE") == 1  # the input's; logits are 2-D
    assert result.fidelity.outputs[0].max_abs_error < 1e-4


def test_nchw_io_int8_calibrates_in_the_onnx_layout():
    result = export_tflite(DEMO, "rpi5", precision="int8", calibration="demo", nchw_io=True, speed_threads=())
    assert not result.nhwc_io and result.fidelity.outputs[0].sqnr_db > 30


def test_accuracy_fallback_keeps_the_fewest_layers_in_float(tmp_path: Path):
    plain = export_tflite(DEMO, "rpi5", calibration="demo", evaluation="demo", speed_threads=())
    result = export_tflite(
        DEMO, "rpi5", calibration="demo", evaluation="demo", min_sqnr_db=40.0, speed_threads=(), output=tmp_path
    )
    assert plain.fidelity.outputs[0].sqnr_db < 40 <= result.fidelity.outputs[0].sqnr_db
    report = result.fallback
    assert report is not None and report.met and 1 <= report.layers < 16 and report.extra_weight_bytes > 0
    assert [s.holds for s in report.steps if s.float_layers == report.layers] == [True]
    assert all(not s.holds for s in report.steps if s.float_layers < report.layers)  # the fewest that hold
    from edge_sdk.tflite_verify import litert_interpreter

    interpreter = litert_interpreter(result.flatbuffer)
    tensors = interpreter.get_tensor_details()
    float_ops = [o for o in interpreter._get_ops_details() if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")
                 and tensors[o["outputs"][0]]["dtype"] == np.float32]  # fmt: skip
    assert float_ops  # the kept layers run in float between DEQUANTIZE and QUANTIZE
    manifest = json.loads(result.artifact.manifest_path.read_text())
    assert manifest["fallback"]["layers"] == report.layers


def test_an_unreachable_budget_is_a_clear_error(tmp_path: Path):
    with pytest.raises(QuantizeError, match="no fallback meets SQNR >= 200"):
        export_tflite(DEMO, "rpi5", calibration="demo", min_sqnr_db=200.0, speed_threads=(), output=tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_efficientnet_lite0_fp32_and_int8(efficientnet_lite0_onnx: Path):
    model = load_model(efficientnet_lite0_onnx)
    fp32 = export_tflite(model, "rpi5", precision="fp32")
    assert fp32.layout_transposes == 0 and "TRANSPOSE" not in fp32.op_counts
    assert fp32.fidelity.outputs[0].max_abs_error < 1e-3
    rng = np.random.default_rng(0)
    calib = [{model.inputs[0].name: rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(8)]
    int8 = export_tflite(model, "rpi5", precision=Precision.INT8, calibration=calib)
    assert int8.fidelity.outputs[0].cosine > 0.9


def test_ppocr_direction_classifier_fp32_fuses_hard_swish():
    rapidocr = pytest.importorskip("rapidocr_onnxruntime", reason="needs rapidocr-onnxruntime (test extra)")
    path = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    result = export_tflite(load_model(path, input_shapes={"x": (1, 3, 48, 192)}), "rpi5", precision="fp32")
    assert result.fidelity.outputs[0].max_abs_error < 1e-4
    assert result.op_counts["HARD_SWISH"] == 18 and result.layout_transposes == 0


def test_cli_export_json_and_list_ops(tmp_path: Path):
    cli = [sys.executable, "-m", "edge_sdk.cli", "export"]
    done = subprocess.run(
        [*cli, str(DEMO), "--target", "rpi5", "--precision", "fp32", "-o", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["precision"] == "fp32" and Path(document["artifact"]["path"]).exists()
    ops = subprocess.run([*cli, "--list-ops", "--json"], capture_output=True, text=True, timeout=120)
    assert "Conv" in json.loads(ops.stdout)
    bad = subprocess.run(
        [*cli, str(DEMO), "--target", "rpi5", "-o", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "needs calibration data" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_supported_ops_document_is_generated_from_the_registry():
    from edge_sdk.lower.ops_doc import supported_ops_markdown

    committed = Path(__file__).parents[1] / "docs" / "tflite_ops.md"
    fix = "run: python -m edge_sdk.lower.ops_doc > docs/tflite_ops.md"
    assert committed.read_text() == supported_ops_markdown(), fix
