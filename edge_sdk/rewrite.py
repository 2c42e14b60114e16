"""Float rewrites that let more of a graph run in integer kernels, without changing what it computes
beyond float rounding.

- Div by a constant becomes Mul by its reciprocal: integer kernels (XNNPACK's int8 set, many NPUs)
  multiply but do not divide, and exporters write hard-swish as x * relu6(x + 3) / 6.
- Hard-swish written out (x * relu6(x + 3) / 6, or x * HardSigmoid(x) with alpha 1/6) becomes one
  HardSwish node (opset 14). A quantizer puts a Q/DQ pair on every tensor it sees: written out,
  hard-swish gets three inner ones that add rounding noise and integer kernels that are slower
  than the one float op. Measured on PP-OCR's classifier (benchmarks/quantize_bench.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_sdk.model import Model
from edge_sdk.qdq import graph_constants


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


HARD_SWISH_OPSET = 14
_Match = tuple[onnx.NodeProto, tuple[onnx.NodeProto, ...], str]  # last node, inner nodes, x


def fuse_hard_swish(model: Model) -> tuple[Model, int]:
    """A copy of `model` with every written-out hard-swish replaced by a HardSwish node; the opset
    goes up to 14 when one is found. A pattern whose inner tensors have other users stays."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    if not _HardSwishes(proto.graph).find():
        return model, 0
    opset = next((o for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset.version < HARD_SWISH_OPSET:
        proto = onnx.version_converter.convert_version(proto, HARD_SWISH_OPSET)
    graph = proto.graph
    found = _HardSwishes(graph).find()
    drop = {id(n) for _, inner, _ in found for n in inner}
    fused = {id(last): helper.make_node("HardSwish", [x], [last.output[0]], name=last.name) for last, _, x in found}
    nodes = [fused.get(id(n), n) for n in graph.node if id(n) not in drop]
    used = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]  # the 3, 6 and 1/6 go
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(proto)
    note = f"hard-swish written out -> HardSwish: {len(found)}"
    return dataclasses.replace(model, proto=proto, passes=(*model.passes, note)), len(found)


class _HardSwishes:
    """Finds x * relu6(x + 3) / 6 (Div by 6 or Mul by 1/6, operands in any order; Clip bounds as
    inputs or, before opset 11, attributes) and x * HardSigmoid(x) with alpha 1/6 and beta 1/2."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.constants = graph_constants(graph)
        self.producer = {o: n for n in graph.node for o in n.output}
        self.users: dict[str, int] = {o.name: 1 for o in graph.output}  # a graph output has a user outside
        for node in graph.node:
            for name in node.input:
                self.users[name] = self.users.get(name, 0) + 1

    def find(self) -> list[_Match]:
        return [m for m in map(self._match, self.graph.node) if m is not None]

    def _match(self, last: onnx.NodeProto) -> _Match | None:
        if len(last.input) != 2 or last.op_type not in ("Mul", "Div"):
            return None
        a, b = last.input
        if last.op_type == "Div":
            products = [a] if self._is(b, 6.0) else []
        else:
            for x, y in ((a, b), (b, a)):
                sigmoid = self._sole(y, "HardSigmoid")
                if sigmoid is not None and sigmoid.input[0] == x and self._hard_swish_sigmoid(sigmoid):
                    return last, (sigmoid,), x
            products = [x for x, y in ((a, b), (b, a)) if self._is(y, 1 / 6)]
        for product in products:
            found = self._x_relu6(product)
            if found is not None:
                return last, found[0], found[1]
        return None

    def _x_relu6(self, product: str) -> tuple[tuple[onnx.NodeProto, ...], str] | None:
        """(the Add, Clip and Mul nodes, x) when `product` is x * relu6(x + 3) used only once."""
        mul = self._sole(product, "Mul")
        if mul is None or len(mul.input) != 2:
            return None
        for x, y in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            clip = self._sole(y, "Clip")
            if clip is None or not self._relu6(clip):
                continue
            add = self._sole(clip.input[0], "Add")
            if add is not None and len(add.input) == 2 and x in add.input:
                three = add.input[1] if add.input[0] == x else add.input[0]
                if self._is(three, 3.0):
                    return (add, clip, mul), x
        return None

    def _sole(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The node of `op_type` producing `name`, if nothing else uses `name`."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type and self.users.get(name) == 1 else None

    def _is(self, name: str, value: float) -> bool:
        array = self.constants.get(name)
        return array is not None and array.size == 1 and bool(np.isclose(float(array.reshape(-1)[0]), value, atol=1e-6))

    def _relu6(self, clip: onnx.NodeProto) -> bool:
        attrs = {a.name: helper.get_attribute_value(a) for a in clip.attribute}
        if attrs:  # opset < 11
            return bool(np.isclose(attrs.get("min", -np.inf), 0.0) and np.isclose(attrs.get("max", np.inf), 6.0))
        return len(clip.input) == 3 and self._is(clip.input[1], 0.0) and self._is(clip.input[2], 6.0)

    def _hard_swish_sigmoid(self, node: onnx.NodeProto) -> bool:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return bool(np.isclose(attrs.get("alpha", 0.2), 1 / 6, atol=1e-6) and np.isclose(attrs.get("beta", 0.5), 0.5))
