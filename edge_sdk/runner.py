"""Time one model on this machine and print one JSON document: the device runner.

This file is copied alone to a device and run as `python3 runner.py model.tflite`, so it imports only
the standard library, numpy and the runtime the model needs (LiteRT or tflite-runtime for .tflite,
ONNX Runtime for .onnx). The SDK imports `measure` from it for host runs, so a host number and a
device number come from the same code.

    python3 runner.py MODEL [--threads N] [--runs N] [--budget-s S] [--warmup N] [--min-runs N]
                            [--input FILE.npz] [--per-op]

On success stdout holds the measurement (runner_version, model_name, model_sha256, init_ms,
first_run_ms, samples_ms, peak_rss_mb, conditions and, with --per-op, per_op) and the exit code is 0.
On failure stdout holds {"error": "...", "kind": "..."} and the exit code says the kind.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import numpy as np
except ImportError:
    if __name__ != "__main__":
        raise
    print(json.dumps({"error": "no numpy: pip install numpy", "kind": "dependency"}))  # the caller reads JSON
    sys.exit(5)

RUNNER_VERSION = 1
SEED = 0
DEFAULT_RUNS = 100
DEFAULT_BUDGET_S = 10.0
DEFAULT_WARMUP = 5
DEFAULT_MIN_RUNS = 5
EXIT_CODES = {"usage": 2, "model": 3, "dependency": 5, "internal": 1}
# Integer inputs are mostly indices or token ids: a small range keeps Gather/Embedding in bounds.
# 8-bit inputs are images or quantized activations, where the whole range is meaningful.
SMALL_INT_RANGE = (0, 9)
_TFLITE_HINT = "pip install ai-edge-litert (or tflite-runtime where LiteRT has no wheel)"


class RunnerError(Exception):
    """A failure the caller can act on; `kind` is one of EXIT_CODES."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]

    def doc(self) -> dict[str, str]:
        return {"error": str(self), "kind": self.kind}


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # None: a dimension the model leaves open
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class Session:
    """A loaded model behind the three calls the timing loop needs."""

    runtime: str  # "litert", "tflite-runtime" or "onnxruntime"
    runtime_version: str
    inputs: tuple[InputSpec, ...]
    bind: Callable[[dict[str, np.ndarray]], Callable[[], object]]  # feed -> one inference
    end_profiling: Callable[[], str | None]


def measure(
    path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    runs: int = DEFAULT_RUNS,
    budget_s: float = DEFAULT_BUDGET_S,
    warmup: int = DEFAULT_WARMUP,
    min_runs: int = DEFAULT_MIN_RUNS,
    inputs: Mapping[str, np.ndarray] | None = None,
    per_op: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Load, run once, warm up, then time runs until `runs` or `budget_s` (never fewer than
    `min_runs`). Returns the runner's JSON document as a dict; raises RunnerError."""
    model = Path(path)
    threads = usable_cores() if threads is None else threads
    _check_settings(threads=threads, runs=runs, budget_s=budget_s, warmup=warmup, min_runs=min_runs)
    suffix = _model_suffix(model, per_op)
    load_avg = _load_avg()  # before our own load raises it
    with _profile_dir(per_op) as profile_dir:
        start = time.perf_counter_ns()
        session = _load(model, suffix, threads, profile_dir)
        init_ns = time.perf_counter_ns() - start
        try:
            run = session.bind(_feed(session.inputs, inputs))
            first_ns = _first_run(run, model)
            for _ in range(warmup):
                run()
            samples_ns = _timed_runs(run, runs=runs, min_runs=min(min_runs, runs), budget_s=budget_s, progress=progress)
        finally:
            trace = session.end_profiling()
        per_op_times = _per_op_times(trace, skip_runs=1 + warmup) if trace else None
    doc = _document(model, init_ns, first_ns, samples_ns, read_conditions(session, threads, load_avg))
    if per_op_times is not None:
        doc["per_op"] = per_op_times
    return doc


def _document(
    model: Path, init_ns: int, first_ns: int, samples_ns: list[int], conditions: dict[str, Any]
) -> dict[str, Any]:
    return {
        "runner_version": RUNNER_VERSION,
        "model_name": model.name,
        "model_sha256": file_sha256(model),
        "init_ms": init_ns / 1e6,
        "first_run_ms": first_ns / 1e6,
        "samples_ms": [s / 1e6 for s in samples_ns],
        "peak_rss_mb": peak_rss_mb(),
        "conditions": conditions,
    }


def _check_settings(*, threads: int, runs: int, budget_s: float, warmup: int, min_runs: int) -> None:
    limits = {"threads": (threads, 1), "runs": (runs, 1), "warmup": (warmup, 0), "min-runs": (min_runs, 1)}
    for name, (value, low) in limits.items():
        if not isinstance(value, int) or value < low:
            raise RunnerError("usage", f"--{name} must be an integer >= {low}, got {value!r}")
    if not 0 < budget_s < float("inf"):
        raise RunnerError("usage", f"--budget-s must be a finite number of seconds > 0, got {budget_s!r}")


def _model_suffix(model: Path, per_op: bool) -> str:
    suffix = model.suffix.lower()
    if suffix not in (".onnx", ".tflite"):
        raise RunnerError("usage", f"{model.name} is not a .onnx or .tflite file; export the model to one of those")
    if per_op and suffix != ".onnx":
        raise RunnerError("usage", f"per-op times come from ONNX Runtime's profiler; drop --per-op for {model.name}")
    if not model.is_file():
        raise RunnerError("model", f"model file {model} not found; check the path")
    return suffix


@contextlib.contextmanager
def _profile_dir(per_op: bool) -> Iterator[str | None]:
    # ORT writes its trace into a file; keep it out of the cwd and delete it with the directory.
    if not per_op:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="edge-sdk-runner-") as directory:
        yield directory


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _load(model: Path, suffix: str, threads: int, profile_dir: str | None) -> Session:
    if suffix == ".tflite":
        return _load_tflite(model, threads)
    return _load_onnx(model, threads, profile_dir)


def _import_tflite() -> tuple[Any, str, str]:
    """The LiteRT interpreter module, or tflite-runtime where LiteRT has no wheel."""
    reasons = []
    for package, module, runtime in (
        ("ai-edge-litert", "ai_edge_litert", "litert"),
        ("tflite-runtime", "tflite_runtime", "tflite-runtime"),
    ):
        try:
            top = __import__(module)
            interpreter = __import__(f"{module}.interpreter", fromlist=["Interpreter"])
        except ImportError as exc:
            if not (isinstance(exc, ModuleNotFoundError) and exc.name == module):
                reasons.append(f"{module}: {_first_line(exc)}")
            continue
        return interpreter, runtime, _version(top, package)
    detail = f" ({'; '.join(reasons)})" if reasons else ""
    raise RunnerError("dependency", f"no TFLite runtime{detail}: {_TFLITE_HINT}")


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        detail = "" if isinstance(exc, ModuleNotFoundError) and exc.name == "onnxruntime" else f" ({_first_line(exc)})"
        raise RunnerError("dependency", f"no ONNX Runtime{detail}: pip install onnxruntime") from None
    return onnxruntime


def _version(module: Any, package: str) -> str:
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata

        return metadata.version(package)
    except Exception:  # a missing version must not fail the measurement
        return "unknown"


def _load_failed(model: Path, exc: BaseException) -> RunnerError:
    return RunnerError("model", f"cannot load {model.name} ({_first_line(exc)}); re-export it or copy it again")


def _load_tflite(model: Path, threads: int) -> Session:
    module, runtime, version = _import_tflite()
    try:
        interpreter = module.Interpreter(model_path=str(model), num_threads=threads)
        interpreter.allocate_tensors()
        details = interpreter.get_input_details()
    except Exception as exc:  # the runtime raises plain ValueError/RuntimeError
        raise _load_failed(model, exc) from None
    specs = tuple(
        InputSpec(d["name"], tuple(int(n) if n >= 0 else None for n in d["shape_signature"]), np.dtype(d["dtype"]))
        for d in details
    )

    def bind(feed: dict[str, np.ndarray]) -> Callable[[], object]:
        resized = False
        for detail in details:
            array = feed[detail["name"]]
            if tuple(detail["shape"]) != array.shape:
                interpreter.resize_tensor_input(detail["index"], list(array.shape))
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for detail in details:
            interpreter.set_tensor(detail["index"], feed[detail["name"]])
        return interpreter.invoke  # inputs stay in the tensors between invokes

    return Session(runtime, version, specs, bind, lambda: None)


def _load_onnx(model: Path, threads: int, profile_dir: str | None) -> Session:
    ort = _import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "ort_profile")
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types
        raise _load_failed(model, exc) from None
    specs = tuple(_ort_spec(node) for node in session.get_inputs())
    ended: list[str | None] = []

    def end_profiling() -> str | None:
        if profile_dir is None or ended:
            return None
        ended.append(session.end_profiling())
        return ended[0]

    def bind(feed: dict[str, np.ndarray]) -> Callable[[], object]:
        return functools.partial(session.run, None, feed)

    return Session("onnxruntime", _version(ort, "onnxruntime"), specs, bind, end_profiling)


def _ort_spec(node: Any) -> InputSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape)
    name = node.type.removeprefix("tensor(").removesuffix(")")  # e.g. "tensor(float)"
    try:
        dtype = np.dtype({"float": "float32", "double": "float64"}.get(name, name))
    except TypeError:
        dtype = np.dtype(object)  # strings, bfloat16, float8...: only --input can feed these
    return InputSpec(node.name, shape, dtype)


def make_inputs(specs: tuple[InputSpec, ...], seed: int = SEED) -> dict[str, np.ndarray]:
    """Seeded random inputs of each input's shape (open dimensions set to 1) and dtype."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = tuple(1 if d is None else d for d in spec.shape)
        if spec.dtype == np.bool_:
            feed[spec.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif spec.dtype.kind in "iu":
            info = np.iinfo(spec.dtype)
            low, high = (int(info.min), int(info.max)) if spec.dtype.itemsize == 1 else SMALL_INT_RANGE
            feed[spec.name] = rng.integers(low, high, size=shape, dtype=spec.dtype, endpoint=True)
        elif spec.dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            message = f"input {spec.name} has a type the runner cannot make up ({spec.dtype}); pass --input FILE.npz"
            raise RunnerError("usage", message)
    return feed


def _feed(specs: tuple[InputSpec, ...], given: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    if given is None:
        return make_inputs(specs)
    missing = [s.name for s in specs if s.name not in given]
    if missing:
        have = ", ".join(sorted(given)) or "nothing"
        raise RunnerError("usage", f"the inputs lack {', '.join(missing)} (they have {have}); key arrays by input name")
    return {spec.name: _checked_input(spec, np.asarray(given[spec.name])) for spec in specs}


def _checked_input(spec: InputSpec, array: np.ndarray) -> np.ndarray:
    # no zip(strict=...): the runner must also run on a device's Python 3.9
    fits = len(array.shape) == len(spec.shape) and all(
        want is None or want == array.shape[i] for i, want in enumerate(spec.shape)
    )
    if not fits:
        want_shape = tuple("?" if d is None else d for d in spec.shape)
        message = f"input {spec.name} needs shape {want_shape}, the data has {array.shape}; pass arrays of that shape"
        raise RunnerError("usage", message)
    if spec.dtype.kind not in "biuf":
        return array
    if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
        message = f"input {spec.name} needs {spec.dtype}, the data is {array.dtype}; convert the array first"
        raise RunnerError("usage", message)
    return np.ascontiguousarray(array, dtype=spec.dtype)


def _first_run(run: Callable[[], object], model: Path) -> int:
    try:
        start = time.perf_counter_ns()
        run()
        return time.perf_counter_ns() - start
    except Exception as exc:  # runtimes raise plain RuntimeError on a failed op
        message = f"{model.name} failed to run ({_first_line(exc)}); check its ops and inputs"
        raise RunnerError("model", message) from None


def _timed_runs(
    run: Callable[[], object], *, runs: int, min_runs: int, budget_s: float, progress: Callable[[int, int], None] | None
) -> list[int]:
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    samples: list[int] = []
    while len(samples) < runs:
        start = clock()
        run()
        end = clock()
        samples.append(end - start)
        if progress is not None:
            progress(len(samples), runs)
        if end >= deadline and len(samples) >= min_runs:
            break
    if progress is not None and len(samples) < runs:
        progress(len(samples), len(samples))  # stopped by the budget: the bar ends full
    return samples


def _per_op_times(trace_path: str, *, skip_runs: int) -> list[dict[str, Any]]:
    """Mean time per executed node over the timed runs, from ORT's Chrome-trace JSON (durations in us).
    The first run and the warm-up runs come first in the trace and are skipped."""
    with open(trace_path, encoding="utf-8") as handle:
        events = json.load(handle)
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    timed = run_starts[skip_runs:]
    if not timed:
        return []
    totals: dict[tuple[str, Any], list[Any]] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or event.get("ts", -1) < timed[0]:
            continue
        args = event.get("args", {})
        key = (name[: -len("_kernel_time")], args.get("node_index"))
        entry = totals.setdefault(key, [key[0], str(args.get("op_name", "")), 0.0])
        entry[2] += float(event.get("dur", 0))
    return [{"name": n, "op_type": t, "mean_ms": us / len(timed) / 1000.0} for n, t, us in totals.values()]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _load_avg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str:
    fields: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    found = fields.get("model name") or fields.get("Model") or fields.get("Hardware")  # Model: a Pi's board name
    return found or platform.processor() or platform.machine()


def _temperature_c() -> float | None:
    readings = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        text = _read(path).strip()
        if text.lstrip("-").isdigit():
            readings.append(int(text) / 1000.0)
    return max(readings) if readings else None


def _throttled() -> str | None:
    """`vcgencmd get_throttled` on a Raspberry Pi: "0x0" when it never throttled."""
    binary = shutil.which("vcgencmd")
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "get_throttled"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip().partition("=")[2] or done.stdout.strip()
    return value or None


def read_conditions(session: Session, threads: int, load_avg: list[float] | None) -> dict[str, Any]:
    """The fields of edge_sdk.measurement.Conditions; temperature and throttling are read after the
    timed runs, when the model has had the chance to heat the chip."""
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": session.runtime,
        "runtime_version": session.runtime_version,
        "threads": threads,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip() or None,
        "load_avg": load_avg,
        "temperature_c": _temperature_c(),
        "throttled": _throttled(),
    }


def load_input_file(path: str) -> dict[str, np.ndarray]:
    """Arrays keyed by input name from a .npz archive; never unpickles."""
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            raise ValueError("a single array, not a .npz archive")
        with data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise RunnerError("usage", f"input file {path} not found; check the --input path") from None
    except Exception as exc:  # zipfile, numpy and OS errors all mean "unreadable"
        reason = "not a .npz of plain arrays; the runner never unpickles" if "pickle" in str(exc) else _first_line(exc)
        fix = "write it with numpy.savez(FILE, input_name=array)"
        raise RunnerError("usage", f"cannot read input file {path} ({reason}); {fix}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit; the caller reads JSON
        raise RunnerError("usage", f"{message}; see python3 runner.py --help")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="runner.py", description="Time one .tflite or .onnx model; prints one JSON document.")
    add = parser.add_argument
    add("model", help="the .tflite or .onnx file")
    add("--threads", type=int, metavar="N", help="CPU threads (default: all usable cores)")
    add("--runs", type=int, metavar="N", default=DEFAULT_RUNS, help=f"timed runs at most (default {DEFAULT_RUNS})")
    add(
        "--budget-s", type=float, metavar="S", default=DEFAULT_BUDGET_S, help="stop timing after S seconds (default 10)"
    )
    add("--warmup", type=int, metavar="N", default=DEFAULT_WARMUP, help="untimed runs after the first (default 5)")
    add("--min-runs", type=int, metavar="N", default=DEFAULT_MIN_RUNS, help="timed runs at least (default 5)")
    add("--input", metavar="FILE.npz", help="arrays keyed by input name (default: seeded random data)")
    add("--per-op", action="store_true", help="per-node times from ONNX Runtime's profiler (.onnx only)")
    return parser.parse_args(argv)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # Native runtimes may write to fd 1; keep stdout for the one JSON document.
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse_args(argv)
        inputs = load_input_file(args.input) if args.input else None
        with _stdout_to_stderr():
            doc: dict[str, Any] = measure(
                args.model,
                threads=args.threads,
                runs=args.runs,
                budget_s=args.budget_s,
                warmup=args.warmup,
                min_runs=args.min_runs,
                inputs=inputs,
                per_op=args.per_op,
            )
        code = 0
    except RunnerError as exc:
        doc, code = exc.doc(), exc.exit_code
    except Exception as exc:  # the caller parses stdout; a traceback would not parse
        doc, code = {"error": f"runner failed: {type(exc).__name__}: {_first_line(exc)}", "kind": "internal"}, 1
    print(json.dumps(doc, allow_nan=False))
    return code


if __name__ == "__main__":
    sys.exit(main())
