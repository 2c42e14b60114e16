"""One error tree for the library. The message of each error is the one line a user sees:
it names the thing that is wrong and the next step. Only cli.py turns these into output."""

from __future__ import annotations


class EdgeSdkError(Exception):
    """Base of every error edge-sdk raises on purpose."""

    exit_code = 1


class UsageError(EdgeSdkError):
    """The command line or call was not well formed."""

    exit_code = 2


class ModelError(EdgeSdkError):
    """The model file is missing, unreadable, invalid or outside what edge-sdk accepts."""

    exit_code = 3


class DynamicShapeError(ModelError):
    """An input or intermediate tensor has a dimension that is not fixed."""


class TargetError(EdgeSdkError):
    """An unknown target id, or a target profile file that does not validate."""

    exit_code = 4


class DependencyError(EdgeSdkError):
    """An optional dependency is needed and not installed."""

    exit_code = 5


class DataError(EdgeSdkError):
    """Calibration or evaluation data is missing, unreadable or does not match the model."""

    exit_code = 6


class QuantizeError(EdgeSdkError):
    """Quantization cannot proceed: an unsupported precision, an already quantized model, an engine failure."""

    exit_code = 7


class ExportError(EdgeSdkError):
    """A model cannot be lowered to the requested format: an unsupported op or attribute value."""

    exit_code = 8


class DeviceError(EdgeSdkError):
    """A device cannot be reached or cannot run the model: network, authentication, host key, runtime."""

    exit_code = 9


class StoreError(EdgeSdkError):
    """The results store cannot be opened or written: locked, corrupt or not writable."""

    exit_code = 10
