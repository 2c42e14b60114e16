"""Vela compilation for the Ethos-U targets: the demo model and a tiny conv model, quantized to int8 with
ai-edge-quantizer and compiled by the installed ethos-u-vela; a float model left on the CPU; missing Vela,
corrupt input, timeouts and profile mismatches as errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import conv_bn_relu_model

from edge_sdk import vela
from edge_sdk.calibration import load_calibration
from edge_sdk.errors import DependencyError, ExportError, ModelError, TargetError
from edge_sdk.lower.lower import lower_to_tflite
from edge_sdk.model import Model, load_model
from edge_sdk.targets import load_target
from edge_sdk.vela import Placement, VelaConfig, VelaResult, compile_for_ethos_u, vela_config

DEMO = Path(__file__).resolve().parents[1] / "edge_sdk" / "assets" / "demo_mnist.onnx"
TARGETS = ("ethos-u55-128", "ethos-u65-256")
SAMPLES = 8
# LiteRT warns that ai-edge-quantizer's calibration keeps all tensors; that is the quantizer's business
pytestmark = pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors:UserWarning")


def _needs_vela() -> None:
    pytest.importorskip("ethosu.vela", reason="needs ethos-u-vela (pip install 'edge-sdk[ethos-u]')")


def _int8(model: Model, samples: list[dict[str, np.ndarray]]) -> bytes:
    """Static int8 (weights and activations) with ai-edge-quantizer's default recipe."""
    pytest.importorskip("ai_edge_quantizer", reason="needs ai-edge-quantizer")
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(lower_to_tflite(model).flatbuffer, recipe.static_wi8_ai8())
    calibrated = q.calibrate({"serving_default": samples})
    return bytes(q.quantize(calibrated, enable_progress_report=False).quantized_model)


@pytest.fixture(scope="module")
def demo_model() -> Model:
    return load_model(DEMO)


@pytest.fixture(scope="module")
def demo_int8(demo_model: Model) -> bytes:
    calibration = load_calibration("demo", demo_model, max_samples=SAMPLES).to_nhwc()
    return _int8(demo_model, [dict(s) for s in calibration])


@pytest.fixture(scope="module")
def tiny_int8() -> bytes:
    model = load_model(conv_bn_relu_model())
    rng = np.random.default_rng(0)
    return _int8(model, [{"x": rng.standard_normal((1, 16, 16, 3)).astype(np.float32)} for _ in range(SAMPLES)])


@pytest.fixture(scope="module")
def demo_results(demo_int8: bytes) -> dict[str, VelaResult]:
    _needs_vela()
    return {target: compile_for_ethos_u(demo_int8, load_target(target)) for target in TARGETS}


def test_vela_settings_come_from_the_profiles() -> None:
    assert vela_config(load_target("ethos-u55-128")) == VelaConfig(
        "ethos-u55-128", "Ethos_U55_High_End_Embedded", "Shared_Sram", None
    )
    # Dedicated_Sram: the profile's 384 KiB SRAM is the NPU's cache (Vela's Dedicated_Sram_384KB)
    assert vela_config(load_target("ethos-u65-256")) == VelaConfig(
        "ethos-u65-256", "Ethos_U65_Client_Server", "Dedicated_Sram", 384 * 1024
    )


@pytest.mark.parametrize("target", TARGETS)
def test_demo_model_runs_on_the_npu(demo_results: dict[str, VelaResult], target: str) -> None:
    result = demo_results[target]
    profile = load_target(target)
    assert result.accelerator == target
    assert result.optimized_tflite[4:8] == b"TFL3" and b"ethos-u" in result.optimized_tflite
    assert len(result.ops) == 16  # PAD x2, CONV_2D x6, DEPTHWISE_CONV_2D x5, MEAN, RESHAPE, FULLY_CONNECTED
    assert {op.op_type for op in result.ops} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED"}
    assert result.npu_ops >= 0.9 * len(result.ops)
    assert result.npu_ops + result.cpu_ops == len(result.ops)
    assert result.inference_time_ms > 0 and result.cycles > 0 and result.sram_bytes > 0
    # Vela's time is its cycle count at the system config's clock, which the profile states
    assert profile.compute.clock_mhz is not None
    assert math.isclose(result.inference_time_ms, result.cycles / (profile.compute.clock_mhz * 1e3), rel_tol=1e-3)
    # the debug database accounts every NPU cycle to a source operator
    assert sum(op.cycles or 0 for op in result.ops) == result.cycles
    conv = next(op for op in result.ops if op.op_type == "CONV_2D")
    assert conv.placement is Placement.NPU and conv.reason is None and conv.cycles and conv.time_ms
    assert result.vela_version[0].isdigit()


def test_demo_model_memory_follows_the_memory_mode(demo_results: dict[str, VelaResult]) -> None:
    u55, u65 = demo_results["ethos-u55-128"], demo_results["ethos-u65-256"]
    assert (u55.memory_mode, u65.memory_mode) == ("Shared_Sram", "Dedicated_Sram")
    assert u55.flash_bytes > 0 and u55.dram_bytes == 0  # constants in flash, arena in SRAM
    assert u65.dram_bytes > 0 and u65.flash_bytes == 0  # constants and arena in DRAM, SRAM as cache
    assert u65.sram_bytes <= 384 * 1024


def test_u65_256_is_faster_than_u55_128(demo_results: dict[str, VelaResult]) -> None:
    assert demo_results["ethos-u65-256"].inference_time_ms < demo_results["ethos-u55-128"].inference_time_ms


def test_tiny_conv_model_compiles(tiny_int8: bytes) -> None:
    _needs_vela()
    result = compile_for_ethos_u(tiny_int8, load_target("ethos-u55-128"))
    assert [(op.op_type, op.placement) for op in result.ops] == [("CONV_2D", Placement.NPU)]
    assert result.cpu_ops == 0 and result.inference_time_ms > 0 and result.sram_bytes > 0


def test_float_model_stays_on_the_cpu_with_reasons(demo_model: Model, tmp_path: Path) -> None:
    _needs_vela()
    path = tmp_path / "demo_float.tflite"
    path.write_bytes(lower_to_tflite(demo_model).flatbuffer)
    result = compile_for_ethos_u(path, load_target("ethos-u55-128"))
    assert result.npu_ops == 0 and result.cpu_ops == len(result.ops) == 16
    for op in result.ops:
        assert op.placement is Placement.CPU and op.cycles is None
        assert op.reason is not None and "Float32" in op.reason, op


def test_compilation_is_deterministic(demo_int8: bytes, demo_results: dict[str, VelaResult], tmp_path: Path) -> None:
    again = compile_for_ethos_u(demo_int8, load_target("ethos-u55-128"), work_dir=tmp_path / "vela")
    assert again.optimized_tflite == demo_results["ethos-u55-128"].optimized_tflite
    assert again.cycles == demo_results["ethos-u55-128"].cycles
    kept = tmp_path / "vela" / "vela-ethos-u55-128"
    assert (kept / "model_vela.tflite").read_bytes() == again.optimized_tflite


def test_missing_vela_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vela, "find_spec", lambda name: None)
    with pytest.raises(DependencyError, match=r"pip install 'edge-sdk\[ethos-u\]'"):
        compile_for_ethos_u(b"\x00\x00\x00\x00TFL3", load_target("ethos-u55-128"))


def test_a_file_that_is_not_tflite_is_a_model_error(tmp_path: Path) -> None:
    _needs_vela()
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        compile_for_ethos_u(path, load_target("ethos-u55-128"))
    with pytest.raises(ModelError, match="cannot read"):
        compile_for_ethos_u(tmp_path / "missing.tflite", load_target("ethos-u55-128"))


def test_a_corrupt_tflite_is_one_export_error_line(demo_int8: bytes) -> None:
    _needs_vela()
    truncated = demo_int8[: len(demo_int8) // 2]  # keeps the TFL3 identifier, loses the tables
    with pytest.raises(ExportError) as failure:
        compile_for_ethos_u(truncated, load_target("ethos-u55-128"))
    message = str(failure.value)
    assert message.startswith("Vela could not compile the model for ethos-u55-128")
    assert "\n" not in message and "Traceback" not in message


def test_timeout_is_an_export_error(tiny_int8: bytes) -> None:
    _needs_vela()
    with pytest.raises(ExportError, match="did not finish"):
        compile_for_ethos_u(tiny_int8, load_target("ethos-u55-128"), timeout_s=0.01)


def test_non_ethos_targets_and_mismatched_profiles_are_target_errors() -> None:
    with pytest.raises(TargetError, match="no Vela configuration"):
        vela_config(load_target("rpi5"))
    u55 = load_target("ethos-u55-128")
    wrong_macs = dataclasses.replace(u55, compute=dataclasses.replace(u55.compute, macs_per_cycle=256))
    with pytest.raises(TargetError, match="macs_per_cycle"):
        vela_config(wrong_macs)
    wrong_memory = dataclasses.replace(u55, memory=dataclasses.replace(u55.memory, weights_in="onchip"))
    with pytest.raises(TargetError, match="memory mode"):
        vela_config(wrong_memory)


def test_cpu_reasons_from_both_vela_cores() -> None:
    printed = (
        "Warning (supported operators) operator: RELU6, ofm: 'conv_out'\n"
        "Reason: Operation has tensor with unsupported DataType Float32 (conv_out_act)\n"
        "Feature-map dataTypes must be one of {INT8}\n"
        "\n"
        "Warning: Unsupported TensorFlow Lite semantics for MEAN 'mean_out'. Placing on CPU instead\n"
        " - Input(s), Output and Weight tensors must have quantization parameters\n"
        "   Op has tensors with missing quantization parameters: mean_out\n"
        "Warning: CONV_2D 'big' is not supported on the NPU. Placing on CPU instead\n"
        " - Stride values for both width and height must be in the range [1, 3]\n"
        "Info: WHERE 'where_out' is a CPU only op\n"
        "Warning: Option --something is deprecated\n"
    )
    assert vela._cpu_reasons(printed) == {
        "conv_out": "Operation has tensor with unsupported DataType Float32 (conv_out_act); "
        "Feature-map dataTypes must be one of {INT8}",
        "mean_out": "Input(s), Output and Weight tensors must have quantization parameters; "
        "Op has tensors with missing quantization parameters: mean_out",
        "big": "Stride values for both width and height must be in the range [1, 3]",
        "where_out": "WHERE is a CPU-only operator in Vela",
    }
