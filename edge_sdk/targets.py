"""The target registry: find, load and look up device profiles.

Built-in profiles ship as package data; users add directories with `targets_dirs=` (CLI:
`--targets-dir`) or the `EDGE_SDK_TARGETS` environment variable (paths separated by os.pathsep).
A user profile with a built-in id overrides the built-in one.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from edge_sdk.errors import TargetError
from edge_sdk.hostinfo import read_host_info
from edge_sdk.profile import TargetProfile, parse_profile
from edge_sdk.tomltable import read_toml

ENV_VAR = "EDGE_SDK_TARGETS"


def data_dir(name: str) -> Path:
    """A shipped data directory: inside the wheel (edge_sdk/data/NAME) or, from a checkout, NAME/."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "data" / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise TargetError(f"edge-sdk's '{name}' data directory is missing; reinstall edge-sdk")


def _search_dirs(targets_dirs: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    dirs = [(data_dir("targets"), True)]
    env = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    for raw in [*env, *targets_dirs]:
        path = Path(raw).expanduser()
        if not path.is_dir():
            source = f"${ENV_VAR}" if raw in env else "--targets-dir"
            raise TargetError(f"targets directory '{path}' (from {source}) does not exist; create it or fix the path")
        dirs.append((path, False))
    return dirs


@cache
def _load_file(path: Path, builtin: bool, mtime_ns: int) -> TargetProfile:
    data = read_toml(path, TargetError)
    profile = parse_profile(data, path, builtin=builtin)
    return _fill_detected(profile) if profile.detect else profile


def _fill_detected(profile: TargetProfile) -> TargetProfile:
    host = read_host_info()
    compute = dataclasses.replace(profile.compute, cores=host.cores, clock_mhz=host.clock_mhz, isa=host.isa)
    memory = dataclasses.replace(profile.memory, ram_mb=(host.ram_mb,) if host.ram_mb else ())
    return dataclasses.replace(profile, soc=host.cpu_model, compute=compute, memory=memory)


def list_targets(targets_dirs: Sequence[str | Path] = ()) -> list[TargetProfile]:
    """Every profile: built-in ones, overridden by user ones with the same id. Sorted by id."""
    profiles: dict[str, TargetProfile] = {}
    for directory, builtin in _search_dirs(targets_dirs):
        for path in sorted(directory.glob("*.toml")):
            profile = _load_file(path.resolve(), builtin, path.stat().st_mtime_ns)
            profiles[profile.id] = profile
    return [profiles[k] for k in sorted(profiles)]


def load_target(target_id: str, targets_dirs: Sequence[str | Path] = ()) -> TargetProfile:
    """One profile by id or alias; an unknown id names the closest known ids."""
    profiles = list_targets(targets_dirs)
    for profile in profiles:
        if target_id == profile.id:
            return profile
    for profile in profiles:
        if target_id in profile.aliases:
            return profile
    names = [p.id for p in profiles] + [a for p in profiles for a in p.aliases]
    close = difflib.get_close_matches(target_id, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise TargetError(f"unknown target '{target_id}': {hint}run 'edge-sdk targets list' to see all ids")


def load_targets(target_ids: Sequence[str], targets_dirs: Sequence[str | Path] = ()) -> list[TargetProfile]:
    return [load_target(t, targets_dirs) for t in target_ids]
