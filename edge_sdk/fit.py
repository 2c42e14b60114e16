"""Whether a model's weights and peak activations fit a target's memory."""

from __future__ import annotations

from dataclasses import dataclass

from edge_sdk.profile import TargetProfile

MiB = 1024 * 1024


@dataclass(frozen=True)
class Fit:
    ok: bool | None  # None: the profile states no capacity to check against
    reason: str


def _capacity(target: TargetProfile, where: str) -> tuple[int | None, str]:
    memory = target.memory
    if where == "ram":
        if not memory.ram_mb:
            return None, "RAM"
        return min(memory.ram_mb) * MiB, f"{min(memory.ram_mb)} MB RAM"
    if where in ("sram", "onchip"):
        if memory.sram_kb is None:
            return None, "on-chip SRAM"
        return int(memory.sram_kb * 1024), f"{memory.sram_kb:g} KB on-chip SRAM"
    if memory.flash_mb is None:
        return None, "flash"
    return int(memory.flash_mb * MiB), f"{memory.flash_mb:g} MB flash"


def _mb(n: int) -> str:
    return f"{n / MiB:.2f} MB"


def check_fit(target: TargetProfile, weights_bytes: int, activations_bytes: int) -> Fit:
    """Weights and peak activations at the target's precision against where the profile says they live.
    Weights that do not fit on-chip stream from host memory (slower, still runs)."""
    w_where, a_where = target.memory.weights_in, target.memory.activations_in
    if w_where == a_where:
        capacity, label = _capacity(target, w_where)
        need = weights_bytes + activations_bytes
        if capacity is None:
            return Fit(None, f"needs {_mb(need)}; the profile states no {label} size")
        verdict = need <= capacity
        return Fit(verdict, f"weights + peak activations {_mb(need)} {'within' if verdict else 'exceed'} {label}")
    w_cap, w_label = _capacity(target, w_where)
    a_cap, a_label = _capacity(target, a_where)
    notes, ok = [], True
    unknown = False
    if a_cap is None:
        notes.append(f"activations {_mb(activations_bytes)} (no {a_label} size stated)")
        unknown = True
    elif activations_bytes > a_cap:
        notes.append(f"activations {_mb(activations_bytes)} exceed {a_label}")
        ok = False
    else:
        notes.append(f"activations {_mb(activations_bytes)} within {a_label}")
    if w_cap is None:
        notes.append(f"weights {_mb(weights_bytes)} (no {w_label} size stated)")
        unknown = True
    elif weights_bytes > w_cap and w_where == "onchip":
        notes.append(
            f"weights {_mb(weights_bytes)} exceed {w_label}: "
            f"{_mb(weights_bytes - w_cap)} stream from host memory (slower)"
        )
    elif weights_bytes > w_cap:
        notes.append(f"weights {_mb(weights_bytes)} exceed {w_label}")
        ok = False
    else:
        notes.append(f"weights {_mb(weights_bytes)} within {w_label}")
    return Fit(None if unknown and ok else ok, "; ".join(notes))
