"""Memory fit: weights and peak activations against where the profile says they live."""

from __future__ import annotations

from conftest import write_profile

from edge_sdk.fit import MiB, check_fit
from edge_sdk.targets import load_target


def profile(tmp_path, **memory):
    path = write_profile(tmp_path, "mem")
    text = path.read_text()
    block = "[memory]\n" + "".join(f"{k} = {v}\n" for k, v in memory.items())
    start = text.index("[memory]")
    end = text.index("[deploy]")
    path.write_text(text[:start] + block + "\n" + text[end:])
    return load_target("mem", [tmp_path])


def test_ram_holds_weights_and_activations(tmp_path):
    target = profile(tmp_path, ram_mb="[512, 1024]", weights_in='"ram"', activations_in='"ram"')
    assert check_fit(target, 100 * MiB, 100 * MiB).ok is True
    fit = check_fit(target, 400 * MiB, 200 * MiB)
    assert fit.ok is False and "exceed 512 MB RAM" in fit.reason  # the smallest board decides


def test_sram_activations_and_flash_weights(tmp_path):
    target = profile(tmp_path, sram_kb=384, flash_mb=4, weights_in='"flash"', activations_in='"sram"')
    assert check_fit(target, 3 * MiB, 300 * 1024).ok is True
    fit = check_fit(target, 3 * MiB, 500 * 1024)
    assert fit.ok is False and "exceed 384 KB on-chip SRAM" in fit.reason
    fit = check_fit(target, 5 * MiB, 1024)
    assert fit.ok is False and "weights 5.00 MB exceed 4 MB flash" in fit.reason


def test_onchip_weights_stream_instead_of_failing(tmp_path):
    target = profile(tmp_path, sram_kb=8192, ram_mb="[1024]", weights_in='"onchip"', activations_in='"ram"')
    fit = check_fit(target, 10 * MiB, 1 * MiB)
    assert fit.ok is True and "2.00 MB stream from host memory" in fit.reason


def test_unknown_capacity_is_unknown_not_yes(tmp_path):
    target = profile(tmp_path, weights_in='"flash"', activations_in='"sram"')
    fit = check_fit(target, MiB, MiB)
    assert fit.ok is None and "no on-chip SRAM size stated" in fit.reason
    target = profile(tmp_path, weights_in='"ram"', activations_in='"ram"')
    assert check_fit(target, MiB, MiB).ok is None
