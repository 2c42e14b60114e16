"""The built-in demo: a small MNIST model run through every stage that exists, for every target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.evaluate import top1_accuracy
from edge_sdk.inspection import Inspection, inspect
from edge_sdk.model import load_model
from edge_sdk.recipe import load_recipe, load_split
from edge_sdk.serialize import to_jsonable
from edge_sdk.targets import list_targets

DEMO_MODEL = Path(__file__).resolve().parent / "assets" / "demo_mnist.onnx"


@dataclass(frozen=True)
class DemoResult:
    model_path: str
    recipe_path: str
    eval_samples: int
    float_accuracy: float
    stated_accuracy: float | None
    inspection: Inspection

    def to_dict(self) -> dict:
        return to_jsonable(self)


def run_demo(*, targets_dirs: Sequence[str | Path] = ()) -> DemoResult:
    """Load the demo model, measure its float accuracy on the evaluation split with ONNX Runtime,
    and inspect it for every target profile."""
    recipe = load_recipe("demo")
    model = load_model(DEMO_MODEL)
    split = load_split(recipe, "evaluation")
    accuracy = top1_accuracy(model, split, recipe.model_input)
    inspection = inspect(model, list_targets(targets_dirs))
    return DemoResult(
        model_path=str(DEMO_MODEL),
        recipe_path=str(recipe.path),
        eval_samples=len(split.inputs),
        float_accuracy=accuracy,
        stated_accuracy=recipe.float_accuracy,
        inspection=inspection,
    )
