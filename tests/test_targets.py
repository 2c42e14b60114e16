"""The shipped registry: every profile loads, ids are what the docs promise, lookups and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_profile

from edge_sdk import TargetError, list_targets, load_target
from edge_sdk.profile import Kind
from edge_sdk.targets import ENV_VAR, data_dir

SHIPPED = sorted(p.stem for p in data_dir("targets").glob("*.toml"))
REQUIRED = {
    "host",
    "rpi-zero2w",
    "rpi3b-plus",
    "rpi4b",
    "rpi5",
    "rpi5-hailo8l",
    "coral-edgetpu-usb",
    "ethos-u55-128",
    "ethos-u65-256",
    "rk3588-npu",
    "rk3588-mali-g610",
    "sd8gen2-hexagon",
    "sd8gen2-adreno740",
    "jetson-orin-nano-cpu",
}


def test_every_required_target_ships():
    assert set(SHIPPED) >= REQUIRED


@pytest.mark.parametrize("target_id", SHIPPED)
def test_shipped_profile_loads_and_is_sourced(target_id):
    p = load_target(target_id)
    assert p.id == target_id and p.builtin
    assert p.sources and all(s.strip() for s in p.sources)
    assert p.deploy.default_precision in p.deploy.precisions
    assert p.ops.rules, "a profile lists the ops its unit runs"
    for precision, gops in p.compute.peak_gops.items():
        assert gops > 0, precision
    if p.compute.peak_gops:
        lines = Path(p.path).read_text().splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("peak_gops"))
        assert any(line.lstrip().startswith("#") for line in lines[max(0, at - 8) : at]), (
            "every peak carries its derivation in a comment above it"
        )
    aliases = [a for q in list_targets() for a in q.aliases]
    assert len(aliases) == len(set(aliases)), "aliases are unique"


def test_host_profile_reads_this_machine():
    host = load_target("host")
    assert host.detect and host.kind is Kind.CPU
    assert host.compute.cores and host.compute.cores >= 1
    assert host.memory.ram_mb and host.memory.ram_mb[0] > 0


def test_unknown_target_suggests_close_ids():
    with pytest.raises(TargetError, match=r"unknown target 'rpi6'.*did you mean .*rpi5"):
        load_target("rpi6")


def test_unknown_target_without_close_match_says_how_to_list():
    with pytest.raises(TargetError, match="edge-sdk targets list"):
        load_target("zzzzzzzz")


def test_alias_lookup():
    profile = load_target("rpi5")
    if profile.aliases:
        assert load_target(profile.aliases[0]).id == "rpi5"


def test_user_directory_adds_and_overrides(tmp_path):
    write_profile(tmp_path, "my-board")
    write_profile(tmp_path, "rpi5")
    ids = {p.id: p for p in list_targets([tmp_path])}
    assert "my-board" in ids and not ids["my-board"].builtin
    assert ids["rpi5"].name == "Test NPU" and not ids["rpi5"].builtin
    assert load_target("rpi5").builtin  # without the directory, the built-in one


def test_environment_variable_adds_directories(tmp_path, monkeypatch):
    write_profile(tmp_path, "env-board")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert load_target("env-board").id == "env-board"


def test_missing_user_directory(tmp_path):
    with pytest.raises(TargetError, match="does not exist"):
        list_targets([tmp_path / "nope"])


def test_invalid_user_profile_is_an_error_naming_it(tmp_path):
    path = write_profile(tmp_path, "broken")
    path.write_text(path.read_text().replace('kind = "npu"', 'kind = "quantum"'))
    with pytest.raises(TargetError, match=r"broken\.toml"):
        list_targets([tmp_path])
