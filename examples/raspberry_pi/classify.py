#!/usr/bin/env python3
"""Classify images, or Raspberry Pi camera frames, with an edge-sdk .tflite bundle: numpy and LiteRT only.

    python3 classify.py digit.png more.pgm sample.npy
    python3 classify.py --model demo_mnist.int8.tflite --threads 4 --top 3 --json *.png
    python3 classify.py --camera            # Ctrl-C stops and prints the summary

The model's manifest (`<model>.tflite.json`, written beside it by edge-sdk) supplies the preprocessing,
the labels and the input layout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Generator, Iterable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run through runpy or from another directory: the siblings still import
    sys.path.insert(0, str(HERE))

try:
    import numpy as np
except ImportError:
    sys.exit("error: classify.py needs numpy: pip install numpy")

from camera import CameraError, camera_available, frames, require_camera  # noqa: E402
from classifier import Classifier, ModelError, Prediction, classify, load_classifier  # noqa: E402
from images import ImageError, read_image  # noqa: E402

DESCRIPTION = "Classify images, or Raspberry Pi camera frames, with an edge-sdk .tflite bundle."


class UsageError(Exception):
    """A command line this script cannot act on."""


@dataclass(frozen=True)
class Result:
    image: str
    prediction: Prediction
    read_ms: float


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    interrupted: bool = False


@dataclass(frozen=True)
class Summary:
    images: int
    errors: int
    interrupted: bool  # stopped by Ctrl-C
    invoke_ms: dict[str, float]  # "median" and "p90"
    preprocess_ms: dict[str, float]
    read_ms: dict[str, float]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="classify.py", description=DESCRIPTION)
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="PNG, PGM/PPM (P5/P6) or .npy; others need Pillow")
    parser.add_argument("--model", type=Path, help="the .tflite (default: the only one beside this script or here)")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="LiteRT CPU threads")
    parser.add_argument("--top", type=int, default=1, metavar="K", help="show the K best labels")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    parser.add_argument("--camera", action="store_true", help="classify picamera2 frames until Ctrl-C")
    parser.add_argument("--frames", type=int, default=0, metavar="N", help="with --camera: stop after N frames")
    args = parser.parse_args(argv)
    if args.camera and args.images:
        parser.error("pass IMAGE files or --camera, not both")
    if args.threads < 1 or args.top < 1 or args.frames < 0:
        parser.error("--threads and --top must be at least 1, --frames at least 0")
    return args


def find_model(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    found = sorted({p.resolve() for folder in (HERE, Path.cwd()) for p in folder.glob("*.tflite")})
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"no .tflite beside {Path(__file__).name} or in {Path.cwd()}; pass --model M.tflite")
    raise UsageError(f"several models found ({', '.join(str(p) for p in found)}); pick one with --model")


def sources(args: argparse.Namespace) -> Generator[tuple[str, np.ndarray | Exception, float], None, None]:
    """(name, pixels or the error reading them, read ms) per image file or camera frame."""
    if args.images:
        for name in args.images:
            started = time.perf_counter()
            try:
                pixels: np.ndarray | Exception = read_image(Path(name))
            except ImageError as error:
                pixels = error
            yield name, pixels, (time.perf_counter() - started) * 1000
        return
    with closing(frames()) as stream:
        started = time.perf_counter()
        for number, frame in enumerate(stream, 1):
            yield f"frame {number}", frame, (time.perf_counter() - started) * 1000
            if number == args.frames:
                return
            started = time.perf_counter()


def run(model: Classifier, items: Iterable[tuple[str, np.ndarray | Exception, float]], args: argparse.Namespace) -> Run:
    outcome = Run()
    width = max((len(name) for name in args.images), default=0)  # file names line up; frame names are short
    try:
        for name, pixels, read_ms in items:
            if isinstance(pixels, Exception):
                outcome.errors.append({"image": name, "error": str(pixels)})
                print(f"error: {pixels}", file=sys.stderr, flush=True)
                continue
            result = Result(name, classify(model, pixels, top_k=args.top), read_ms)
            outcome.results.append(result)
            if not args.json:
                print(result_line(result, width), flush=True)
    except KeyboardInterrupt:
        outcome.interrupted = True
    return outcome


def result_line(result: Result, width: int = 0) -> str:
    best, p = result.prediction.top[0], result.prediction
    line = (
        f"{result.image:<{width}}  {best.label}  {best.confidence:6.1%}  invoke {p.invoke_ms:.2f} ms"
        f"  preprocess {p.preprocess_ms:.2f} ms  read {result.read_ms:.2f} ms"
    )
    if len(p.top) > 1:
        line += "  top: " + ", ".join(f"{s.label} {s.confidence:.1%}" for s in p.top)
    return line


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p90": 0.0}
    return {"median": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90))}


def summarise(outcome: Run) -> Summary:
    return Summary(
        images=len(outcome.results),
        errors=len(outcome.errors),
        interrupted=outcome.interrupted,
        invoke_ms=percentiles([r.prediction.invoke_ms for r in outcome.results]),
        preprocess_ms=percentiles([r.prediction.preprocess_ms for r in outcome.results]),
        read_ms=percentiles([r.read_ms for r in outcome.results]),
    )


def model_line(model: Classifier) -> str:
    shape = "x".join(str(n) for n in model.input.shape)
    return (
        f"model {model.path.name}: input {shape} {model.input.dtype} {model.layout}, "
        f"preprocess {model.preprocess.source}, {model.threads} threads"
    )


def summary_line(summary: Summary) -> str:
    errors = f", {summary.errors} unreadable" if summary.errors else ""
    stopped = " (stopped by Ctrl-C)" if summary.interrupted else ""
    invoke, preprocess = summary.invoke_ms, summary.preprocess_ms
    return (
        f"{summary.images} images{errors}{stopped}: invoke median {invoke['median']:.2f} ms, "
        f"p90 {invoke['p90']:.2f} ms; preprocess median {preprocess['median']:.2f} ms"
    )


def document(model: Classifier, outcome: Run) -> dict[str, object]:
    return {
        "model": str(model.path),
        "threads": model.threads,
        "input": {"shape": list(model.input.shape), "dtype": str(model.input.dtype), "layout": model.layout},
        "preprocess": asdict(model.preprocess),
        "results": [
            {
                "image": r.image,
                "label": r.prediction.top[0].label,
                "index": r.prediction.top[0].index,
                "confidence": r.prediction.top[0].confidence,
                "top": [asdict(s) for s in r.prediction.top],
                "invoke_ms": r.prediction.invoke_ms,
                "preprocess_ms": r.prediction.preprocess_ms,
                "read_ms": r.read_ms,
            }
            for r in outcome.results
        ],
        "errors": outcome.errors,
        "summary": asdict(summarise(outcome)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.camera:
            require_camera()  # before loading the model: fail fast
        elif not args.images and not camera_available():
            raise UsageError("no images given; pass IMAGE files, or --camera on a Pi with picamera2")
        model = load_classifier(find_model(args.model), threads=args.threads)
        if not args.json:
            print(model_line(model), flush=True)
        with closing(sources(args)) as items:  # closing it releases the camera
            outcome = run(model, items, args)
    except (UsageError, ModelError, CameraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    except KeyboardInterrupt:  # before the first image: nothing to summarise
        return 130
    if args.json:
        print(json.dumps(document(model, outcome), indent=2))
    else:
        print(summary_line(summarise(outcome)))
    return 1 if outcome.errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # piped into `head`: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
