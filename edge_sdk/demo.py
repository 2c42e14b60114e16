"""The built-in demo: `compile` of a small MNIST model for every target edge-sdk can build for,
calibrated and verified on its real digits (calibration/demo.toml)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.bundle import is_microcontroller
from edge_sdk.compile import CompileResult, compile_model, producible
from edge_sdk.compile_profile import ProfileOptions
from edge_sdk.errors import DependencyError
from edge_sdk.profile import TargetProfile
from edge_sdk.recipe import load_recipe
from edge_sdk.targets import list_targets
from edge_sdk.vela import locate_vela

DEMO_MODEL = Path(__file__).resolve().parent / "assets" / "demo_mnist.onnx"


@dataclass(frozen=True)
class DemoResult:
    compiled: CompileResult
    skipped: tuple[tuple[str, str], ...]  # (target id, why compile cannot build for it)
    stated_accuracy: float | None  # float top-1 the training script measured, from the recipe


def run_demo(
    *,
    output: Path,
    targets_dirs: Sequence[str | Path] = (),
    profiling: ProfileOptions | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> DemoResult:
    """Compile the demo model into `output` for every target whose format edge-sdk writes; the
    others (vendor formats such as RKNN or HEF) are listed with the reason."""
    recipe = load_recipe("demo")
    profiles, skipped = [], []
    for profile in list_targets(targets_dirs):
        reason = producible(profile) or _missing_toolchain(profile)
        if reason is None:
            profiles.append(profile)
        else:
            skipped.append((profile.id, reason))
    compiled = compile_model(
        DEMO_MODEL,
        profiles,
        output=output,
        calibration=recipe.path,
        targets_dirs=targets_dirs,
        profiling=profiling,
        on_stage=on_stage,
    )
    return DemoResult(compiled=compiled, skipped=tuple(skipped), stated_accuracy=recipe.float_accuracy)


def _missing_toolchain(profile: TargetProfile) -> str | None:
    """Vela is an optional extra: without it the demo builds every other target and says how to add these."""
    if not is_microcontroller(profile):
        return None
    try:
        locate_vela()
    except DependencyError as exc:
        return str(exc)
    return None
