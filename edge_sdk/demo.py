"""The built-in demo: a small MNIST model run through every stage that exists, for every target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edge_sdk.calibration import load_calibration
from edge_sdk.engines import EngineName
from edge_sdk.evaluate import top1_accuracy
from edge_sdk.inspection import Inspection, inspect
from edge_sdk.model import Model, load_model
from edge_sdk.plan import plan
from edge_sdk.profile import TargetProfile
from edge_sdk.quantize import quantize
from edge_sdk.recipe import Recipe, load_recipe, load_split
from edge_sdk.serialize import to_jsonable
from edge_sdk.targets import list_targets

DEMO_MODEL = Path(__file__).resolve().parent / "assets" / "demo_mnist.onnx"


@dataclass(frozen=True)
class DemoQuantization:
    target: str
    precision: str
    engine: str
    accuracy: float | None  # top-1 on the evaluation split, quantized as the target's rules say
    sqnr_db: float
    shared_with: str | None  # another target with the same plan, quantized once for both


@dataclass(frozen=True)
class DemoResult:
    model_path: str
    recipe_path: str
    eval_samples: int
    float_accuracy: float
    stated_accuracy: float | None
    inspection: Inspection
    quantized: tuple[DemoQuantization, ...]

    def to_dict(self) -> dict:
        return to_jsonable(self)


def run_demo(*, targets_dirs: Sequence[str | Path] = ()) -> DemoResult:
    """Load the demo model, measure its float accuracy on the evaluation split with ONNX Runtime,
    inspect it for every target profile, and quantize it with each target's rules."""
    recipe = load_recipe("demo")
    model = load_model(DEMO_MODEL)
    split = load_split(recipe, "evaluation")
    accuracy = top1_accuracy(model, split, recipe.model_input)
    targets = list_targets(targets_dirs)
    inspection = inspect(model, targets)
    quantized = _quantize_all(model, targets, recipe)
    return DemoResult(
        model_path=str(DEMO_MODEL),
        recipe_path=str(recipe.path),
        eval_samples=len(split.inputs),
        float_accuracy=accuracy,
        stated_accuracy=recipe.float_accuracy,
        inspection=inspection,
        quantized=quantized,
    )


def _quantize_all(model: Model, targets: list[TargetProfile], recipe: Recipe) -> tuple[DemoQuantization, ...]:
    """Each target's default precision with its own rules, through ONNX Runtime (the fast engine);
    targets whose plans are identical share one quantization."""
    calibration = load_calibration(recipe, model)
    evaluation = load_calibration(recipe, model, split="evaluation")
    done: dict[tuple, DemoQuantization] = {}
    results = []
    for target in targets:
        the_plan = plan(model, target)
        key = (the_plan.precision, the_plan.weights, the_plan.activations, the_plan.float_nodes, the_plan.qnn)
        if key in done:
            first = done[key]
            results.append(replace(first, target=target.id, shared_with=first.target))
            continue
        result = quantize(
            model, target, calibration, evaluation=evaluation, engine=EngineName.ONNXRUNTIME, speed_threads=()
        )
        out = result.fidelity.outputs[0]
        done[key] = DemoQuantization(
            target.id,
            the_plan.precision.value,
            result.engine.value,
            out.accuracy_quant,
            result.fidelity.worst_sqnr_db,
            None,
        )
        results.append(done[key])
    return tuple(results)
