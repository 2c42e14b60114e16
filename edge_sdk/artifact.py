"""Artifacts: a model file and its manifest, written atomically and byte-for-byte reproducibly.

Both files go to temporary names in the target directory first and are renamed into place only
when both are complete, so a crash or an interrupt leaves no half-written model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx

from edge_sdk.errors import UsageError
from edge_sdk.serialize import to_jsonable

_VERSIONED = ("edge-sdk", "numpy", "onnx", "onnxruntime", "onnxslim", "nncf", "ai-edge-litert", "ai-edge-quantizer")


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest_path: Path
    sha256: str
    size_bytes: int


def versions() -> dict[str, str]:
    """Versions of edge-sdk and the packages that shape its artifacts (installed ones only)."""
    found = {}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def model_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def replace_atomically(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write every file to a temporary name beside it, then rename them all into place: a crash or an
    interrupt leaves the old files (or none), never a half-written one. The directories must exist."""
    temps: list[Path] = []
    try:
        for final, content in files:
            # unique per writer ("x" never reuses another's file): concurrent writers do not collide
            temp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
            temps.append(temp)
            with open(temp, "xb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        for (final, _), temp in zip(files, temps, strict=True):
            os.replace(temp, final)
    except BaseException as exc:
        for temp in temps:
            with contextlib.suppress(OSError):
                temp.unlink()
        if isinstance(exc, OSError):
            where = files[0][0]
            raise UsageError(
                f"cannot write {where} ({exc.strerror}); check the output directory and free space"
            ) from None
        raise


def write_artifact(path: Path, data: bytes, manifest: dict[str, Any]) -> Artifact:
    """Write `data` to `path` and `manifest` (plus sha256, size and versions) beside it as
    `<path>.json`; atomically, and with sorted keys so equal inputs give equal bytes."""
    path = Path(path)
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {directory} ({exc.strerror}); choose another -o") from None
    digest = hashlib.sha256(data).hexdigest()
    document = {
        **to_jsonable(manifest),
        "artifact": {"file": path.name, "sha256": digest, "size_bytes": len(data)},
        "versions": versions(),
    }
    manifest_path = path.with_name(path.name + ".json")
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    replace_atomically([(path, data), (manifest_path, text.encode())])
    return Artifact(path=path, manifest_path=manifest_path, sha256=digest, size_bytes=len(data))
