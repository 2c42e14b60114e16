"""Float rewrites that let more of a graph run in integer kernels, without changing what it computes
beyond float rounding.

- Div by a constant becomes Mul by its reciprocal: integer kernels (XNNPACK's int8 set, many NPUs)
  multiply but do not divide, and exporters write hard-swish as x * relu6(x + 3) / 6.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

from edge_sdk.model import Model


def div_to_mul(model: Model) -> tuple[Model, int]:
    """A copy of `model` where every Div whose divisor is a float constant is a Mul by 1/divisor."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    constants = {t.name: t for t in proto.graph.initializer}
    users: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    changed = 0
    for node in proto.graph.node:
        divisor = constants.get(node.input[1]) if node.op_type == "Div" and len(node.input) == 2 else None
        if divisor is None or divisor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            continue
        value = numpy_helper.to_array(divisor)
        if not np.all(np.isfinite(value)) or np.any(value == 0):
            continue
        name = f"{node.input[1]}_reciprocal"
        if name not in constants:
            reciprocal = numpy_helper.from_array((1.0 / value).astype(value.dtype), name)
            proto.graph.initializer.append(reciprocal)
            constants[name] = reciprocal
        node.op_type, node.input[1] = "Mul", name
        changed += 1
    if not changed:
        return model, 0
    _drop_unused(proto)
    note = f"Div by a constant -> Mul by its reciprocal: {changed}"
    return dataclasses.replace(model, proto=proto, passes=(*model.passes, note)), changed


def _drop_unused(proto: onnx.ModelProto) -> None:
    used = {name for node in proto.graph.node for name in node.input}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
