"""The edge-sdk command line: parse, call one public function, render. The CLI modules (this one,
cli_profile.py for profile/bench/results, cli_common.py) are the only ones that print or exit; errors
are turned into output here only. A user error is one line on stderr and a non-zero exit, never a
traceback."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edge_sdk import __version__, cli_compile, cli_profile, render
from edge_sdk.cli_common import JsonOpt, TargetsDirOpt, err, native_stderr_filtered, out, parse_input_shapes
from edge_sdk.cli_common import emit_json as _emit_json
from edge_sdk.cli_common import stage_display as _stage_display
from edge_sdk.engines import EngineName
from edge_sdk.errors import EdgeSdkError, UsageError
from edge_sdk.profile import Precision
from edge_sdk.quantize import Rounding
from edge_sdk.ranges import RangeMethod

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Take a trained model to an edge device.",
)
targets_app = typer.Typer(no_args_is_help=True, help="The device target registry.")
app.add_typer(targets_app, name="targets")
app.command("compile")(cli_compile.compile_cmd)
app.command("demo")(cli_compile.demo_cmd)
app.command("profile")(cli_profile.profile_cmd)
app.command("bench")(cli_profile.bench_cmd)
app.add_typer(cli_profile.results_app, name="results")


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False) -> None:
    if version:
        out.print(f"edge-sdk {__version__}")
        raise typer.Exit()


@targets_app.command("list")
def targets_list(json_out: JsonOpt = False, targets_dir: TargetsDirOpt = None) -> None:
    """Every device profile, one line each."""
    from edge_sdk.targets import list_targets

    profiles = list_targets(targets_dir or ())
    if json_out:
        _emit_json({"targets": profiles})
    else:
        out.print(render.targets_table(profiles))


@targets_app.command("show")
def targets_show(target: str, json_out: JsonOpt = False, targets_dir: TargetsDirOpt = None) -> None:
    """Specs, precisions, runtimes, quantization rules, supported ops and sources of one target."""
    from edge_sdk.targets import load_target

    profile = load_target(target, targets_dir or ())
    if json_out:
        _emit_json(profile)
    else:
        out.print(render.target_detail(profile))


@app.command("inspect")
def inspect_cmd(
    model: Annotated[Path, typer.Argument(help="The .onnx model.")],
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="Target id (repeatable).")] = None,
    precision: Annotated[Precision | None, typer.Option(help="Precision (default: each target's own).")] = None,
    input_shape: Annotated[
        list[str] | None, typer.Option("--input-shape", help="Fix a dynamic input: NAME=1x3x224x224 (repeatable).")
    ] = None,
    per_node: Annotated[bool, typer.Option("--per-node", help="Show every node.")] = False,
    json_out: JsonOpt = False,
    targets_dir: TargetsDirOpt = None,
) -> None:
    """MACs, parameters, memory, and where each node runs on each target (with the reason)."""
    from edge_sdk.inspection import inspect

    result = inspect(
        model,
        target or [],
        precision=precision,
        input_shapes=parse_input_shapes(input_shape),
        targets_dirs=targets_dir or (),
    )
    if json_out:
        _emit_json(result.to_dict())
    else:
        out.print(render.inspection(result, per_node=per_node))


@app.command("quantize")
def quantize_cmd(
    model: Annotated[Path, typer.Argument(help="The float .onnx model.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Target id.")],
    calib: Annotated[str, typer.Option("--calib", help="Recipe .toml (or 'demo'), image folder, .npz/.npy.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory or .onnx path.")],
    precision: Annotated[Precision | None, typer.Option(help="Precision (default: the target's).")] = None,
    engine: Annotated[EngineName, typer.Option(help="onnxruntime (default), nncf, or auto: both, keep the better.")] = (
        EngineName.ONNXRUNTIME
    ),
    rounding: Annotated[
        Rounding,
        typer.Option(help="Weight pre-pass: auto (gptq where cheap, else bias-correct), nearest, bias-correct, gptq."),
    ] = Rounding.AUTO,
    ranges: Annotated[
        RangeMethod,
        typer.Option(help="Activation ranges: mse (least quantization error, default) or minmax (ONNX Runtime's)."),
    ] = RangeMethod.MSE,
    data: Annotated[str | None, typer.Option("--data", help="Evaluation data (same forms as --calib).")] = None,
    preprocess: Annotated[str | None, typer.Option(help="Preprocessing for image folders (e.g. imagenet).")] = None,
    max_drop: Annotated[float | None, typer.Option(help="Accuracy budget in metric points.")] = None,
    min_sqnr: Annotated[float | None, typer.Option(help="Output SQNR budget in dB.")] = None,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", help="Node to keep in float (repeatable).")] = None,
    input_shape: Annotated[list[str] | None, typer.Option("--input-shape", help="NAME=1x3x224x224.")] = None,
    json_out: JsonOpt = False,
    targets_dir: TargetsDirOpt = None,
) -> None:
    """Calibrate, quantize with the target's rules, verify, and write the QDQ ONNX model with its manifest."""
    from edge_sdk.quantize import quantize

    with _stage_display(enabled=not json_out) as (stage, progress):
        result = quantize(
            model,
            target,
            calib,
            precision=precision,
            engine=engine,
            rounding=rounding,
            ranges=ranges,
            evaluation=data,
            preprocess=preprocess,
            max_drop=max_drop,
            min_sqnr_db=min_sqnr,
            ignore=ignore or (),
            output=output,
            input_shapes=parse_input_shapes(input_shape),
            targets_dirs=targets_dir or (),
            on_stage=stage,
            on_progress=progress,
        )
    if json_out:
        _emit_json(result.to_dict())
    else:
        out.print(render.quantization(result))


@app.command("export")
def export_cmd(
    model: Annotated[Path | None, typer.Argument(help="The float .onnx model.")] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Target id (a TFLite target).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output .tflite path or directory.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Output format: tflite.")] = "tflite",
    precision: Annotated[Precision | None, typer.Option(help="Precision (default: the target's).")] = None,
    calib: Annotated[str | None, typer.Option("--calib", help="Calibration data (int8, int16x8).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Evaluation data for the LiteRT check.")] = None,
    preprocess: Annotated[str | None, typer.Option(help="Preprocessing for image folders (e.g. imagenet).")] = None,
    rounding: Annotated[Rounding, typer.Option(help="Weight pre-pass: bias-correct, gptq, auto or nearest.")] = (
        Rounding.BIAS_CORRECT
    ),
    nchw_io: Annotated[bool, typer.Option("--nchw-io", help="Keep the ONNX model's NCHW inputs/outputs.")] = False,
    io: Annotated[str | None, typer.Option("--io", help="int8 or float I/O (default: int8 for NPUs).")] = None,
    list_ops: Annotated[bool, typer.Option("--list-ops", help="List the ONNX ops the lowering converts.")] = False,
    max_drop: Annotated[float | None, typer.Option("--max-drop", help="Accuracy budget in points (int8).")] = None,
    min_sqnr: Annotated[float | None, typer.Option("--min-sqnr", help="Output SQNR budget in dB (int8).")] = None,
    input_shape: Annotated[list[str] | None, typer.Option("--input-shape", help="NAME=1x3x224x224.")] = None,
    json_out: JsonOpt = False,
    targets_dir: TargetsDirOpt = None,
) -> None:
    """Lower to TFLite without TensorFlow (fp32, fp16, int8, int16x8, dynamic-int8), verify in LiteRT, write."""
    from edge_sdk.lower.lower import supported_ops

    if list_ops:
        _emit_json(supported_ops()) if json_out else out.print(", ".join(supported_ops()))
        return
    if model is None or target is None or output is None:
        raise UsageError("export needs MODEL, --target and -o (or --list-ops)")
    if fmt != "tflite":
        raise UsageError(f"--format {fmt} is not an export format; use tflite (`edge-sdk quantize` writes QDQ ONNX)")
    if io not in (None, "int8", "float"):
        raise UsageError(f"--io {io}: use int8 or float")
    from edge_sdk.export import export_tflite

    with _stage_display(enabled=not json_out) as (stage, _):
        result = export_tflite(
            model,
            target,
            precision=precision,
            calibration=calib,
            preprocess=preprocess,
            evaluation=data,
            rounding=rounding,
            nchw_io=nchw_io,
            int8_io=None if io is None else io == "int8",
            output=output,
            input_shapes=parse_input_shapes(input_shape),
            targets_dirs=targets_dir or (),
            on_stage=stage,
            max_drop=max_drop,
            min_sqnr_db=min_sqnr,
        )
    if json_out:
        _emit_json(result.to_dict())
    else:
        out.print(render.export(result))


@app.command("verify")
def verify_cmd(
    quantized: Annotated[Path, typer.Argument(help="The quantized .onnx model.")],
    reference: Annotated[Path, typer.Option("--reference", help="The float .onnx it came from.")],
    data: Annotated[str, typer.Option("--data", help="Evaluation data: recipe, image folder, .npz/.npy.")],
    preprocess: Annotated[str | None, typer.Option(help="Preprocessing for image folders.")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Also the error at every layer.")] = False,
    host_kernels: Annotated[
        bool,
        typer.Option(
            "--host-kernels", help="Measure with this host's ONNX Runtime int8 kernels instead of exact Q/DQ."
        ),
    ] = False,
    input_shape: Annotated[list[str] | None, typer.Option("--input-shape", help="NAME=1x3x224x224.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Fidelity of a quantized model against its float reference: SQNR, cosine, max error, top-1, accuracy."""
    from edge_sdk.calibration import load_calibration
    from edge_sdk.model import load_model
    from edge_sdk.verify import verify

    float_model = load_model(reference, input_shapes=parse_input_shapes(input_shape), simplify=False)
    samples = load_calibration(data, float_model, split="evaluation", preprocess=preprocess)
    fidelity = verify(quantized, reference, samples, labels=samples.labels, per_layer=per_layer, optimized=host_kernels)
    if json_out:
        _emit_json(fidelity.to_dict())
    else:
        out.print(render.verification(fidelity, layers=per_layer))


def _fail(message: str, code: int) -> None:
    if "--json" in sys.argv[1:]:
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


# Set by Ctrl-C. A library that swallows the KeyboardInterrupt (a bare except around an import) turns
# it into some later error; after Ctrl-C, whatever error follows is reported as the interruption.
_interrupted = threading.Event()


def _on_sigint(signum, frame) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("onnxslim").setLevel(logging.ERROR)
    signal.signal(signal.SIGINT, _on_sigint)
    with native_stderr_filtered():
        _run()


def _run() -> None:
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into this return value outside standalone mode
            _fail("interrupted; nothing was written", 130)
    except EdgeSdkError as exc:
        if _interrupted.is_set():
            _fail("interrupted; nothing was written", 130)
        _fail(str(exc), exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # typer's own click: bad options, missing arguments
        message = " ".join((exc.format_message() if hasattr(exc, "format_message") else str(exc)).split())
        if not message:  # no arguments at all: the help was shown
            sys.exit(0)
        _fail(message, getattr(exc, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        _fail("interrupted; nothing was written", 130)


if __name__ == "__main__":
    main()
