"""edge-sdk: take a trained model to an edge device.

Importing the package reads no files. The public API:
    load_target, list_targets  target registry (targets/*.toml)
    load_model                 ONNX file, ModelProto or torch.nn.Module -> Model
    inspect                    per-node costs, memory and per-target placement -> Inspection
"""

from edge_sdk.errors import (
    DataError,
    DependencyError,
    DynamicShapeError,
    EdgeSdkError,
    ModelError,
    QuantizeError,
    TargetError,
    UsageError,
)
from edge_sdk.inspection import Inspection, inspect
from edge_sdk.model import Model, load_model
from edge_sdk.profile import Kind, Precision, TargetProfile
from edge_sdk.targets import list_targets, load_target, load_targets

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "DependencyError",
    "DynamicShapeError",
    "EdgeSdkError",
    "Inspection",
    "Kind",
    "Model",
    "ModelError",
    "Precision",
    "QuantizeError",
    "TargetError",
    "TargetProfile",
    "UsageError",
    "__version__",
    "inspect",
    "list_targets",
    "load_model",
    "load_target",
    "load_targets",
]
