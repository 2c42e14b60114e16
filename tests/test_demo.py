"""The built-in demo: the model is small, trained on real data, and its stated accuracy holds."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx

from edge_sdk.demo import DEMO_MODEL, run_demo
from edge_sdk.recipe import load_recipe, load_split
from edge_sdk.targets import list_targets


def test_demo_model_is_small_and_mobilenet_style():
    assert DEMO_MODEL.stat().st_size < 1_000_000
    ops = {n.op_type for n in onnx.load(DEMO_MODEL).graph.node}
    depthwise = [
        n
        for n in onnx.load(DEMO_MODEL).graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    assert "Conv" in ops and depthwise, "depthwise-separable convolutions"


def test_demo_model_costs_match_the_hand_count():
    from edge_sdk.inspection import inspect

    totals = inspect(DEMO_MODEL).totals
    # hand count in examples/README_demo_model.md: stem 28,224 + depthwise 98,208 + pointwise 794,624 + FC 1,280
    assert totals.macs == 922_336
    assert totals.params == 36_138  # conv weights 34,112 + 736 folded BN biases + FC 1,290


def test_recipe_splits_are_real_labelled_digits():
    recipe = load_recipe("demo")
    calib, evaluation = load_split(recipe, "calibration"), load_split(recipe, "evaluation")
    assert calib.inputs.shape == (recipe.samples, 1, 28, 28)
    assert evaluation.inputs.shape == (1000, 1, 28, 28)
    assert sorted(set(evaluation.labels.tolist())) == list(range(10))
    assert abs(float(evaluation.inputs.mean())) < 0.5  # normalised with the recipe's mean/std


def test_demo_compiles_for_every_buildable_target_and_keeps_accuracy(tmp_path):
    result = run_demo(output=tmp_path / "demo")
    built = {b.target for b in result.compiled.bundles}
    skipped = {target for target, _ in result.skipped}
    assert built | skipped == {t.id for t in list_targets()} and not built & skipped
    assert skipped == {"rk3588-npu", "rpi5-hailo8l"}  # RKNN and HEF: only the vendors' compilers build them
    assert result.stated_accuracy is not None
    for bundle in result.compiled.bundles:  # every target's own rules keep the demo within half a point
        out = bundle.fidelity.outputs[0]
        assert out.accuracy_float is not None and abs(out.accuracy_float - result.stated_accuracy) < 0.002
        assert out.accuracy_quant is not None and out.accuracy_float - out.accuracy_quant <= 0.005, bundle.target
    assert (tmp_path / "demo" / "report.html").is_file()


def test_demo_cli_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["output"] == "edge-sdk-demo" and (tmp_path / "edge-sdk-demo" / "report.json").is_file()
    assert len(doc["targets"]) + len(doc["skipped"]) == len(list_targets())
