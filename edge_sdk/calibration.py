"""Calibration data: one abstraction used by every quantization engine and the TFLite path.

`load_calibration` reads a recipe, a folder of images (with a named preprocessing), a .npz/.npy
file or a Python iterable of {input_name: array}, and checks it against the model before any
work starts. Arrays are read with allow_pickle=False: user data is never unpickled.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.errors import DataError, UsageError
from edge_sdk.model import Model, TensorSpec
from edge_sdk.recipe import (
    PREPROCESSINGS,
    Progress,
    Recipe,
    folder_recipe,
    load_recipe,
    load_split,
    read_npy,
    read_npz,
)

LABELS_KEY = "labels"
CALIBRATION_SPLIT = "calibration"  # the split a recipe's `samples` count applies to


@dataclass(frozen=True)
class CalibrationData:
    """Samples in the model's layout, one {input_name: array} per sample, each array with the
    model's full input shape (batch dim 1 included) and dtype."""

    samples: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray | None  # int64 (N,) when the source has labels
    source: str  # what the samples are, for logs and reports

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.samples)

    def to_nhwc(self) -> CalibrationData:
        """The same samples with every 4-D array moved from NCHW to NHWC (for TFLite)."""
        samples = tuple(
            {name: np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a for name, a in s.items()}
            for s in self.samples
        )
        return CalibrationData(samples=samples, labels=self.labels, source=f"{self.source}, NHWC")

    def take(self, n: int) -> CalibrationData:
        """The first n samples (and their labels)."""
        if n < 0:
            raise UsageError(f"take({n}): the sample count must be 0 or more")
        labels = self.labels[:n] if self.labels is not None else None
        return CalibrationData(samples=self.samples[:n], labels=labels, source=self.source)


def load_calibration(
    source: str | Path | Recipe | Iterable[Mapping[str, Any]],
    model: Model,
    *,
    split: str = CALIBRATION_SPLIT,
    preprocess: str | None = None,
    max_samples: int | None = None,
    progress: Progress | None = None,
) -> CalibrationData:
    """Read calibration data and check it against the model's inputs (hard errors only; call
    check_calibration for the warnings).

    `source` is a recipe (a .toml path, a shipped name such as "demo", or a Recipe), a folder of
    images (needs `preprocess`, one of PREPROCESSINGS; other sources ignore it), a .npz keyed by
    input name (with an optional "labels" array), a .npy (single-input models) or an iterable of
    {input_name: array} dicts. `max_samples` keeps the first N (default for a recipe's calibration
    split: its `samples` count); `progress(done, total)` is called as samples load (total is 0 when
    it is not known in advance)."""
    if max_samples is not None and max_samples <= 0:
        raise UsageError(f"max_samples must be a positive count, got {max_samples}")
    if preprocess is not None and preprocess not in PREPROCESSINGS:  # also where a source would ignore it
        raise DataError(f"unknown preprocessing '{preprocess}'; pass one of: {', '.join(PREPROCESSINGS)}")
    if isinstance(source, Recipe):
        data = _from_recipe(source, model, split, max_samples, progress)
    elif isinstance(source, str | Path):
        data = _from_path(Path(source), model, split, preprocess, max_samples, progress)
    elif isinstance(source, CalibrationData):
        samples = _collect(source.samples, model, max_samples, progress)
        labels = source.labels[: len(samples)] if source.labels is not None else None
        data = CalibrationData(samples=samples, labels=labels, source=source.source)
    elif isinstance(source, Mapping | np.ndarray) or not isinstance(source, Iterable):
        raise DataError(
            f"cannot read calibration data from a {type(source).__name__}; pass a recipe, a folder of images, "
            "a .npz/.npy file or an iterable of {input_name: array} dicts (e.g. a list of one dict per sample)"
        )
    else:
        samples = _collect(source, model, max_samples, progress)
        data = CalibrationData(samples=samples, labels=None, source=f"Python iterable ({len(samples)} samples)")
    _check_set(data, model, recommended=None)  # its warnings are for check_calibration's caller
    return data


def check_calibration(data: CalibrationData, model: Model, *, recommended: int | None = None) -> list[str]:
    """Check calibration data against the model: raises DataError for data the engines cannot use
    (names, shapes, dtypes, NaN or inf, no samples); returns warnings (an input constant across all
    samples, fewer samples than the engine's `recommended` count)."""
    specs = {spec.name: spec for spec in model.inputs}
    for index, sample in enumerate(data.samples):
        _conform(sample, index, specs)
    return _check_set(data, model, recommended=recommended)


def _check_set(data: CalibrationData, model: Model, *, recommended: int | None) -> list[str]:
    if not data.samples:
        raise DataError(f"{data.source}: no calibration samples; give at least one (a few hundred is best)")
    if data.labels is not None and len(data.labels) != len(data.samples):
        raise DataError(
            f"calibration data from {data.source} has {len(data.labels)} labels for {len(data.samples)} samples; "
            "give one label per sample"
        )
    warnings = [w for spec in model.inputs if (w := _constant_warning(data, spec.name))]
    if recommended is not None and len(data.samples) < recommended:
        warnings.append(
            f"only {len(data.samples)} calibration samples, fewer than the {recommended} the engine recommends; "
            "quantization ranges may be poor, so give more samples"
        )
    return warnings


def _constant_warning(data: CalibrationData, name: str) -> str | None:
    first = data.samples[0][name]
    if first.size and first.min() == first.max() and all(np.array_equal(s[name], first) for s in data.samples[1:]):
        return (
            f"calibration input '{name}' is constant (every value is {first.flat[0]} in all {len(data)} samples); "
            "its quantization range will be meaningless, so calibrate on real data"
        )
    if len(data) > 1 and all(np.array_equal(s[name], first) for s in data.samples[1:]):
        return f"calibration input '{name}' is the same in all {len(data)} samples; calibrate on varied real data"
    return None


def _from_path(
    path: Path,
    model: Model,
    split: str,
    preprocess: str | None,
    max_samples: int | None,
    progress: Progress | None,
) -> CalibrationData:
    if path.is_dir():
        return _from_recipe(_folder_recipe(path, model, preprocess), model, CALIBRATION_SPLIT, max_samples, progress)
    suffix = path.suffix.lower()
    if _names_recipe(path):
        return _from_recipe(load_recipe(path), model, split, max_samples, progress)
    if suffix == ".npz":
        return _from_npz(path, model, max_samples, progress)
    if suffix == ".npy":
        return _from_npy(path, model, max_samples, progress)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check the path")
    raise DataError(
        f"{path}: cannot read calibration data from a '{suffix}' file; pass a recipe (.toml), "
        "a folder of images, a .npz or a .npy file"
    )


def _from_recipe(
    recipe: Recipe, model: Model, split: str, max_samples: int | None, progress: Progress | None
) -> CalibrationData:
    specs = {spec.name: spec for spec in model.inputs}
    if recipe.model_input not in specs or len(specs) != 1:
        raise DataError(
            f"{recipe.path}: the recipe feeds input '{recipe.model_input}' but the model's inputs are: "
            f"{', '.join(specs)}; set model_input in the recipe (recipes feed single-input models)"
        )
    spec = specs[recipe.model_input]
    size = spatial_size(spec, recipe.layout)
    limit = max_samples or (recipe.samples if split == CALIBRATION_SPLIT else 0) or None
    data = load_split(recipe, split, size=size, max_samples=limit, progress=progress)
    inputs = _to_layout(data.inputs, recipe.layout, spec)
    where = f"{recipe.path} split '{split}'" if recipe.path.suffix == ".toml" else _describe_folder(recipe)
    per_sample = None if recipe.splits[split].is_dir() else progress  # load_split reported the images
    return _from_arrays({spec.name: inputs}, data.labels, model, f"{where} ({len(inputs)} samples)", per_sample)


def recipe_of(source: Any, model: Model, *, preprocess: str | None = None) -> Recipe | None:
    """The recipe behind a calibration source: a recipe file or shipped name, or a folder of images
    with its named preprocessing; None for arrays and iterables, which carry none."""
    if isinstance(source, Recipe):
        return source
    if not isinstance(source, str | Path):
        return None
    path = Path(source)
    if path.is_dir():
        return _folder_recipe(path, model, preprocess)
    return load_recipe(path) if _names_recipe(path) else None


def _names_recipe(path: Path) -> bool:
    """A .toml file, or a bare name such as "demo" (a shipped recipe) that is no file here."""
    return path.suffix.lower() == ".toml" or (not path.suffix and not path.exists())


def _folder_recipe(folder: Path, model: Model, preprocess: str | None) -> Recipe:
    names = ", ".join(PREPROCESSINGS)
    if preprocess is None:
        raise DataError(
            f"{folder} is a folder of images; pass --preprocess NAME (preprocess= in Python), NAME one of: {names}"
        )
    if preprocess not in PREPROCESSINGS:
        raise DataError(f"unknown preprocessing '{preprocess}'; pass one of: {names}")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        shown = ", ".join(f"{s.name} {_shape(s.shape)}" for s in model.inputs)
        raise DataError(
            f"a folder of images feeds a model with one 4-D image input, but this one has: {shown}; "
            "pass a .npz keyed by input name instead"
        )
    spec = model.inputs[0]
    layout = image_layout(spec)
    channels = spec.shape[1] if layout == "NCHW" else spec.shape[3]
    return folder_recipe(folder, preprocess, model_input=spec.name, layout=layout, channels=channels)


def _describe_folder(recipe: Recipe) -> str:
    return f"folder {recipe.path} (preprocess '{recipe.preprocess}')"


def _from_npz(path: Path, model: Model, max_samples: int | None, progress: Progress | None) -> CalibrationData:
    arrays = read_npz(path)
    labels = arrays.pop(LABELS_KEY, None)
    names = [spec.name for spec in model.inputs]
    missing = [n for n in names if n not in arrays]
    extra = [k for k in arrays if k not in names]
    if missing or extra:
        raise DataError(
            f"{path}: has arrays {', '.join(arrays) or 'none'} but the model's inputs are {', '.join(names)}; "
            f"save one array per input, named after it (plus an optional '{LABELS_KEY}')"
        )
    scalars = [name for name, a in arrays.items() if a.ndim == 0]
    if scalars:
        raise DataError(f"{path}: array '{scalars[0]}' is a scalar; save one row per sample (shape N x input shape)")
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"{path}: the arrays hold different sample counts ({counts}); give every input the same count")
    arrays = {name: a[:max_samples] for name, a in arrays.items()}
    labels = labels[:max_samples] if labels is not None else None
    count = len(next(iter(arrays.values())))
    return _from_arrays(arrays, labels, model, f"{path} ({count} samples)", progress)


def _from_npy(path: Path, model: Model, max_samples: int | None, progress: Progress | None) -> CalibrationData:
    if len(model.inputs) != 1:
        names = ", ".join(spec.name for spec in model.inputs)
        raise DataError(
            f"{path}: a .npy holds one array but the model has {len(model.inputs)} inputs ({names}); "
            "save a .npz with one array per input, named after it"
        )
    array = read_npy(path)[:max_samples]
    return _from_arrays({model.inputs[0].name: array}, None, model, f"{path} ({len(array)} samples)", progress)


def _from_arrays(
    arrays: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    model: Model,
    source: str,
    progress: Progress | None,
) -> CalibrationData:
    """Stacked arrays (samples along the first axis) to one sample per row."""
    count = len(next(iter(arrays.values())))
    rows = ({name: a[i] for name, a in arrays.items()} for i in range(count))
    samples = _collect(rows, model, None, progress, total=count)
    return CalibrationData(samples=samples, labels=_labels(labels, source), source=source)


def _collect(
    samples: Iterable[Any],
    model: Model,
    max_samples: int | None,
    progress: Progress | None,
    *,
    total: int | None = None,
) -> tuple[dict[str, np.ndarray], ...]:
    """The first max_samples samples, each checked and converted; progress is called per sample."""
    if total is None:
        known = len(samples) if isinstance(samples, Sized) else None
        total = (max_samples or 0) if known is None else min(known, max_samples or known)
    specs = {spec.name: spec for spec in model.inputs}
    conformed = []
    for index, sample in enumerate(itertools.islice(samples, max_samples)):
        conformed.append(_conform(sample, index, specs))
        if progress is not None:
            progress(index + 1, total)
    return tuple(conformed)


def _labels(labels: np.ndarray | None, source: str) -> np.ndarray | None:
    if labels is None:
        return None
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(
            f"labels of {source} are {labels.dtype} with shape {_shape(labels.shape)}; give int class ids, shape (N,)"
        )
    return labels.astype(np.int64)


def _conform(sample: Any, index: int, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """One sample checked against the model's inputs and converted to their shapes and dtypes."""
    if not isinstance(sample, Mapping):
        raise DataError(
            f"calibration sample {index} is a {type(sample).__name__}, not a dict; "
            "give one {input_name: array} dict per sample"
        )
    missing = [repr(n) for n in specs if n not in sample]
    extra = [repr(n) for n in sample if n not in specs]
    if missing or extra:
        parts = ([f"lacks input {', '.join(missing)}"] if missing else []) + (
            [f"has unknown input {', '.join(extra)}"] if extra else []
        )
        raise DataError(
            f"calibration sample {index} {' and '.join(parts)}; the model's inputs are: {', '.join(specs)}, "
            "name each array after one"
        )
    return {name: _conform_array(sample[name], index, spec) for name, spec in specs.items()}


def _conform_array(value: Any, index: int, spec: TensorSpec) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"calibration input '{spec.name}' in sample {index} is not an array ({exc}); pass numeric arrays"
        ) from None
    _check_dtype(array, index, spec)
    shape = tuple(spec.shape)
    if array.shape != shape and shape[:1] == (1,) and array.shape == shape[1:]:
        array = array[None]
    if array.shape != shape:
        raise DataError(_shape_message(array.shape, index, spec))
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(
            f"calibration input '{spec.name}' has NaN or inf values in sample {index}; "
            "clean the data (np.nan_to_num) or drop that sample"
        )
    return np.ascontiguousarray(array.astype(spec.dtype, copy=False))


def _check_dtype(array: np.ndarray, index: int, spec: TensorSpec) -> None:
    target = np.dtype(spec.dtype)
    accepted = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}.get(target.kind, "")
    if array.dtype.kind not in accepted:
        wanted = "numbers" if target.kind == "f" else "integers" if target.kind in "iu" else f"{target} values"
        raise DataError(
            f"calibration input '{spec.name}' has {array.dtype} data in sample {index} but the model "
            f"expects {target}; pass {wanted}"
        )
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise DataError(
                f"calibration input '{spec.name}' has values outside the {target} range in sample {index}; "
                "pass values the model's dtype can hold"
            )


def _shape_message(shape: tuple[int, ...], index: int, spec: TensorSpec) -> str:
    got, want = _shape(shape), _shape(spec.shape)
    full = shape if len(shape) == len(spec.shape) else (1, *shape)
    if len(full) == 4 and (full[0], full[3], full[1], full[2]) == tuple(spec.shape):
        fix = "the data looks NHWC and the model is NCHW: transpose it (0, 3, 1, 2)"
    elif len(full) == 4 and (full[0], full[2], full[3], full[1]) == tuple(spec.shape):
        fix = "the data looks NCHW and the model is NHWC: transpose it (0, 2, 3, 1)"
    else:
        fix = f"preprocess it to {want}"
    return f"calibration input '{spec.name}' has shape {got} but the model expects {want} (sample {index}); {fix}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def image_layout(spec: TensorSpec) -> str:
    """NCHW unless the shape only reads as NHWC (channels last, 1-4 of them)."""
    _, second, _, last = spec.shape
    return "NHWC" if last <= 4 < second else "NCHW"


def spatial_size(spec: TensorSpec, layout: str) -> tuple[int, int] | None:
    if len(spec.shape) != 4:
        return None
    return (spec.shape[2], spec.shape[3]) if layout == "NCHW" else (spec.shape[1], spec.shape[2])


def _to_layout(inputs: np.ndarray, layout: str, spec: TensorSpec) -> np.ndarray:
    """Recipe data in the other 4-D layout than the model's is transposed to the model's."""
    want = tuple(spec.shape[1:])
    if inputs.ndim != 4 or tuple(inputs.shape[1:]) == want:
        return inputs
    moved = inputs.transpose(0, 2, 3, 1) if layout == "NCHW" else inputs.transpose(0, 3, 1, 2)
    return moved if tuple(moved.shape[1:]) == want else inputs
