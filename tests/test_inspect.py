"""inspect(): totals, per-target placement, precision-dependent sizes and the JSON form."""

from __future__ import annotations

import json

import pytest
from conftest import write_profile

from edge_sdk import Precision
from edge_sdk.inspection import inspect
from edge_sdk.support import Where


def test_totals_and_placement_on_a_user_target(tiny_model_path, tmp_path):
    write_profile(tmp_path / "t", "conv-only", ops="[ops.Conv]\n")
    result = inspect(tiny_model_path, ["conv-only"], targets_dirs=[tmp_path / "t"])
    assert result.totals.nodes == 2 and result.totals.op_counts == {"Conv": 1, "Relu": 1}
    assert result.totals.macs == 8 * 16 * 16 * 27
    assert result.totals.params == 8 * 27 + 8  # BatchNorm folded into a bias
    report = result.targets[0]
    assert (report.on_unit, report.on_fallback, report.unsupported) == (1, 1, 0)
    assert report.macs_on_unit_pct == 100.0
    assert report.fallbacks[0].op_type == "Relu" and "not in the op list" in report.fallbacks[0].reason
    assert [p.where for p in report.placements] == [Where.UNIT, Where.FALLBACK]


def test_int8_sizes_are_a_quarter_of_fp32_except_int32_biases(tiny_model_path, tmp_path):
    write_profile(tmp_path / "t", ops="[ops.Conv]\n[ops.Relu]\n")
    int8 = inspect(tiny_model_path, ["test-npu"], precision=Precision.INT8, targets_dirs=[tmp_path / "t"])
    fp32 = inspect(tiny_model_path, ["test-npu"], precision=Precision.FP32, targets_dirs=[tmp_path / "t"])
    assert fp32.targets[0].weights_bytes == 4 * (8 * 27 + 8)
    assert int8.targets[0].weights_bytes == 8 * 27 + 4 * 8
    assert fp32.targets[0].peak_activation_bytes == 4 * int8.targets[0].peak_activation_bytes


def test_every_shipped_target_inspects_the_tiny_model(tiny_model_path):
    from edge_sdk import list_targets

    result = inspect(tiny_model_path, list_targets())
    assert len(result.targets) == len(list_targets())
    for report in result.targets:
        assert report.on_unit + report.on_fallback + report.unsupported == 2


def test_json_round_trip(tiny_model_path):
    doc = json.loads(json.dumps(inspect(tiny_model_path, ["rpi5"]).to_dict()))
    assert doc["targets"][0]["target"] == "rpi5"
    assert doc["targets"][0]["precision"] == "int8"
    assert doc["totals"]["macs"] == 8 * 16 * 16 * 27
    assert doc["nodes"][0]["op_type"] == "Conv"


@pytest.mark.slow
def test_efficientnet_lite0_across_targets(efficientnet_lite0_onnx):
    result = inspect(efficientnet_lite0_onnx, ["rpi5", "coral-edgetpu-usb", "ethos-u55-128"])
    assert result.totals.op_counts["Conv"] == 49
    by_id = {r.target: r for r in result.targets}
    for report in by_id.values():
        assert report.on_unit + report.on_fallback + report.unsupported == result.totals.nodes
    # int8 weights: 4.63M parameters, a quarter of the fp32 bytes plus int32 biases
    assert 4.6e6 < by_id["rpi5"].weights_bytes < 4.75e6
    assert by_id["rpi5"].fit.ok is True
