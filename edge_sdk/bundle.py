"""Build directories that appear whole or not at all.

`compile` writes everything into a hidden staging directory beside the output and renames it into
place only when every target is done, so an error, a full disk or an interrupt leaves the previous
build (or nothing), never a half-written one. Each target's bundle is its artifact and manifest, the
standalone device runner and a README saying how to run it on the device.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edge_sdk import runner
from edge_sdk.artifact import replace_atomically
from edge_sdk.errors import UsageError
from edge_sdk.profile import TargetProfile

if TYPE_CHECKING:
    from edge_sdk.compile import TargetBundle

REPORT_JSON = "report.json"  # marks a directory as an edge-sdk build, which a new build may replace


@contextlib.contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """A fresh staging directory beside `output`; on success it replaces `output`, on any error or
    interrupt it is removed (with any parent directories it created) and `output` is left as it was."""
    output = Path(output)
    check_output(output)
    created = _missing_parents(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = output.with_name(f".{output.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
        staging.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise UsageError(f"cannot create the output directory {output} ({exc.strerror}); choose another -o") from None
    done = False
    try:
        yield staging
        _promote(staging, output)
        done = True
    except UsageError as exc:  # name the output, not the staging directory that is about to go
        raise UsageError(str(exc).replace(str(staging), str(output))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            _remove_empty(created)


def check_output(output: Path) -> None:
    """Refuse an output that is a file, or a non-empty directory holding no edge-sdk build."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} is a file; pass a directory for -o")
    if output.is_dir() and any(output.iterdir()) and not (output / REPORT_JSON).is_file():
        raise UsageError(
            f"output directory {output} is not empty and holds no edge-sdk build ({REPORT_JSON}); "
            "pass a new or empty directory for -o"
        )


def _missing_parents(output: Path) -> list[Path]:
    """The parents of `output` that do not exist yet, deepest first."""
    missing = []
    parent = output.absolute().parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if empty: never anything a user put there meanwhile


def _promote(staging: Path, output: Path) -> None:
    """Two renames: the old build aside, the new one in; the old one is deleted only afterwards."""
    old = output.with_name(f".{output.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        if output.exists():
            output.rename(old)
        staging.rename(output)
    except OSError as exc:
        if old.exists() and not output.exists():
            old.rename(output)
        raise UsageError(f"cannot move the build into {output} ({exc.strerror}); check the directory") from None
    shutil.rmtree(old, ignore_errors=True)


def summary_lines(profile: TargetProfile, bundle: TargetBundle) -> list[str]:
    """What the bundle is, for the top of its device README."""
    out = bundle.fidelity.outputs[0] if bundle.fidelity.outputs else None
    lines = [
        f"- target: {profile.name}, {profile.compute.unit}",
        f"- format and precision: {bundle.format}, {bundle.precision.value}",
        f"- sha256: {bundle.artifact.sha256} ({bundle.artifact.size_bytes:,} bytes)",
        f"- verified on {bundle.verified_on}",
    ]
    if out is not None:
        lines.append(f"- output '{out.name}': SQNR {out.sqnr_db:.2f} dB, cosine {out.cosine:.5f}")
        if out.accuracy_quant is not None and out.accuracy_float is not None:
            lines.append(f"- accuracy {100 * out.accuracy_float:.2f}% float, {100 * out.accuracy_quant:.2f}% here")
    if bundle.vela is not None:
        lines.append(
            f"- Vela: {bundle.vela.inference_time_ms:.3f} ms estimated, {bundle.vela.sram_bytes:,} B SRAM, "
            f"{bundle.vela.npu_ops} ops on the NPU, {bundle.vela.cpu_ops} on the CPU"
        )
    lines += [f"- note: {w}" for w in bundle.warnings]
    return lines


def write_device_files(directory: Path, profile: TargetProfile, artifact: Path, summary: list[str]) -> None:
    """The device README and, for targets that run Linux, the standalone runner (numpy and the
    runtime, nothing of edge-sdk). An Ethos-U model runs inside a microcontroller firmware instead."""
    files = [(directory / "README.md", device_readme(profile, artifact, summary).encode())]
    if not is_microcontroller(profile):
        files.append((directory / "runner.py", Path(runner.__file__).read_bytes()))
    replace_atomically(files)


def is_microcontroller(profile: TargetProfile) -> bool:
    return "vela-tflite" in profile.deploy.formats


def device_readme(profile: TargetProfile, artifact: Path, summary: list[str]) -> str:
    """What the bundle is (`summary`) and how to run it on the device."""
    head = [f"# {artifact.name} for {profile.id} ({profile.name})", "", *summary, ""]
    how = _firmware_steps(artifact) if is_microcontroller(profile) else _linux_steps(profile, artifact)
    return "\n".join([*head, *how, ""])


def _linux_steps(profile: TargetProfile, artifact: Path) -> list[str]:
    name = artifact.name
    install = "onnxruntime" if artifact.suffix == ".onnx" else "ai-edge-litert"
    return [
        "## Run it on the device",
        "",
        "```console",
        f"$ scp -r {profile.id}/ USER@DEVICE:",
        f"$ ssh USER@DEVICE 'cd {profile.id} && pip install {install} numpy && python3 runner.py {name}'",
        "```",
        "",
        "`runner.py` needs only numpy and the runtime (on boards without an ai-edge-litert wheel,",
        "`pip install tflite-runtime`). It prints one JSON document: init, first run, every timed run, peak",
        "memory, CPU governor, temperature and throttling. `--threads N`, `--runs N` and `--input data.npz`",
        "(arrays keyed by input name) change what it does; `--help` lists the rest.",
        f"`{name}.json` is the manifest: sha256, target, precision, verification, and the preprocessing",
        "the model expects, which examples/raspberry_pi/classify.py reads.",
        "",
        f"From the build machine, `edge-sdk bench {name} --device USER@DEVICE --target {profile.id}` does the",
        "copy, the run and the clean-up, and stores the result.",
        *(_classify_steps() if artifact.suffix == ".tflite" else []),
    ]


def _classify_steps() -> list[str]:
    return [
        "",
        "## Classify images or camera frames",
        "",
        "Copy `examples/raspberry_pi/*.py` from the edge-sdk repository into this folder, then",
        "`python3 classify.py image.png` (or `--camera` with picamera2): label, confidence and latency per",
        "image, with only numpy and LiteRT installed. It reads the preprocessing and labels from the manifest.",
    ]


def _firmware_steps(artifact: Path) -> list[str]:
    return [
        "## Run it on the device",
        "",
        f"`{artifact.name}` is Vela's output: the NPU part is one `ethos-u` custom operator, so it runs in",
        "TensorFlow Lite Micro with the Ethos-U driver (ethos-u-core-driver / ml-embedded-evaluation-kit),",
        "linked into the microcontroller's firmware, not under Linux; there is no runner for it here.",
        f"The latency in `{artifact.name}.json` is Vela's estimate for the NPU part.",
    ]
