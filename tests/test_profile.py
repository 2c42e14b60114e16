"""Target profile validation: each schema violation is one error naming the file and the key."""

from __future__ import annotations

import pytest
from conftest import write_profile

from edge_sdk import TargetError
from edge_sdk.profile import Fallback, Kind, Partitioning, Precision
from edge_sdk.targets import load_target


def _load(tmp_path, text_edit=None, **kwargs):
    path = write_profile(tmp_path / "t", **kwargs)
    if text_edit:
        path.write_text(text_edit(path.read_text()))
    return load_target(path.stem, [path.parent])


def test_minimal_profile_parses(tmp_path):
    p = _load(tmp_path, ops='[ops.Conv]\nstride_max = [2, 2]\nprecisions = ["int8"]\n')
    assert p.kind is Kind.NPU and p.deploy.default_precision is Precision.INT8
    assert p.ops.partitioning is Partitioning.MULTI and p.ops.fallback is Fallback.CPU
    assert p.ops.rules["Conv"].stride_max == (2, 2)
    assert p.ops.rules["Conv"].precisions == (Precision.INT8,)
    assert p.compute.peak_gops[Precision.INT8] == 100.0
    assert not p.builtin


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace('kind = "npu"', 'kind = "npu"\nfrequency = 3'), "key 'frequency' is not a known key"),
        (lambda t: t.replace('name = "Test NPU"\n', ""), "key 'name' is missing"),
        (
            lambda t: t.replace("sram_kb = 512", 'sram_kb = "big"'),
            "key 'memory.sram_kb' must be an integer or a number, got str",
        ),
        (lambda t: t.replace('kind = "npu"', 'kind = "tpu"'), "key 'kind' is 'tpu', expected one of: cpu, npu, gpu"),
        (
            lambda t: t.replace('default_precision = "int8"', 'default_precision = "fp16"'),
            "key 'deploy.default_precision' is 'fp16', which is not in deploy.precisions",
        ),
        (
            lambda t: t.replace('precisions = ["int8", "fp32"]', 'precisions = ["int8", "fp64"]'),
            "unknown precision 'fp64'",
        ),
        (lambda t: t.replace("schema = 1", "schema = 2"), "schema 2 is not supported"),
        (lambda t: t.replace('id = "test-npu"', 'id = "other"'), "must equal the file name"),
        (
            lambda t: t.replace("[ops.Conv]", "[ops.Conv]\nkernel_max = [3]"),
            "ops.Conv.kernel_max' must be a list of two",
        ),
        (
            lambda t: t.replace("[ops.Conv]", "[ops.Conv]\nstrides = [3, 3]"),
            "key 'ops.Conv.strides' is not a known key",
        ),
        (lambda t: t.replace("[ops.Conv]", "[ops.conv2d]"), "is not an ONNX op type"),
        (lambda t: t.replace('sources = ["tests/conftest.py"]', "sources = []"), "at least one source"),
        (lambda t: t.replace("cores", "cores") + "\n[extra]\n", "key 'extra' is not a known key"),
        (lambda t: t.replace('formats = ["tflite"]', 'formats = ["pb"]'), "unknown format 'pb'"),
        (lambda t: t.replace("[ops.Conv]", "[ops.Conv]\ngrouped = 1"), "must be true or false"),
        (lambda t: t.replace("sram_kb = 512", "sram_kb = true"), "must be an integer or a number, not a boolean"),
        (lambda t: t + "\nnot toml = = =\n", "not valid TOML"),
    ],
)
def test_invalid_profile_names_file_and_key(tmp_path, edit, match):
    with pytest.raises(TargetError, match=match) as info:
        _load(tmp_path, edit)
    assert "test-npu.toml" in str(info.value) or "other" in str(info.value)
    assert "\n" not in str(info.value)
