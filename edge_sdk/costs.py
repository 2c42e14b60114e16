"""Per-node cost of a static-shape ONNX graph: MACs, parameters, bytes read and written, and the
peak activation memory from tensor lifetimes in execution order.

Conventions (the same as fvcore, torch.utils.flop_counter and the EfficientNet papers):
MACs count the multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul; element-wise
ops, pooling and normalisation count 0 MACs (their cost is in the bytes they move). A parameter
is an element of a float constant input with at least one dimension (weights and biases; not
shapes, axes or scalar clip bounds); a constant shared by several nodes is counted once, at its
first consumer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from edge_sdk.model import Model


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    constant: bool

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def is_parameter(self) -> bool:
        return self.constant and self.dtype.kind == "f" and len(self.shape) > 0

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize


@dataclass(frozen=True)
class NodeCost:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    macs: int
    params: int
    bytes_read: int
    bytes_written: int


@dataclass(frozen=True)
class PeakMemory:
    bytes: int
    at_node: str


class Graph:
    """Tensors and nodes of a loaded model, in execution (topological) order."""

    def __init__(self, model: Model):
        graph = model.proto.graph
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.tensors: dict[str, Tensor] = {}
        self.constants: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        for init in graph.initializer:
            self.tensors[init.name] = Tensor(init.name, tuple(init.dims), _np_dtype(init.data_type), True)
        for node in self.nodes:  # Constant nodes survive only where onnxslim could not fold them
            if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
                t = node.attribute[0].t
                self.constants[node.output[0]] = t
        for value in [*graph.input, *graph.value_info, *graph.output]:
            if value.name in self.tensors:
                continue
            ttype = value.type.tensor_type
            shape = tuple(int(d.dim_value) for d in ttype.shape.dim)
            self.tensors[value.name] = Tensor(
                value.name, shape, _np_dtype(ttype.elem_type), value.name in self.constants
            )
        self.graph_inputs = [v.name for v in graph.input if v.name not in self.constants]
        self.graph_outputs = [v.name for v in graph.output]

    def tensor(self, name: str) -> Tensor | None:
        return self.tensors.get(name) if name else None

    def constant_array(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else onnx.numpy_helper.to_array(tensor)


def _np_dtype(elem_type: int) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError):
        return np.dtype(np.float32)


def node_costs(graph: Graph) -> list[NodeCost]:
    counted: set[str] = set()
    costs = []
    for node in graph.nodes:
        ins = [graph.tensor(n) for n in node.input]
        outs = [graph.tensor(n) for n in node.output]
        params = 0
        for t in ins:
            if t is not None and t.is_parameter and t.name not in counted:
                counted.add(t.name)
                params += t.elements
        costs.append(
            NodeCost(
                name=node.name or node.output[0],
                op_type=node.op_type,
                inputs=tuple(node.input),
                outputs=tuple(node.output),
                output_shapes=tuple(t.shape if t else () for t in outs),
                macs=_macs(node, ins, outs),
                params=params,
                bytes_read=sum(t.nbytes for t in ins if t is not None),
                bytes_written=sum(t.nbytes for t in outs if t is not None),
            )
        )
    return costs


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _macs(node: onnx.NodeProto, ins: list[Tensor | None], outs: list[Tensor | None]) -> int:
    if not outs or outs[0] is None or len(ins) < 2 or ins[0] is None or ins[1] is None:
        return 0
    out, x, w = outs[0], ins[0], ins[1]
    if node.op_type == "Conv":
        # every output element accumulates (C_in / groups) x kernel elements
        return out.elements * math.prod(w.shape[1:])
    if node.op_type == "ConvTranspose":
        # every input element scatters into C_out / groups x kernel elements
        return x.elements * math.prod(w.shape[1:])
    if node.op_type == "Gemm":
        k = x.shape[0] if _attr(node, "transA", 0) else x.shape[-1]
        return out.elements * k
    if node.op_type == "MatMul":
        return out.elements * x.shape[-1]
    return 0


def peak_activation_memory(graph: Graph, size_of: Callable[[Tensor], int] | None = None) -> PeakMemory:
    """Peak bytes of live activations when nodes run in graph order, freeing a tensor after its
    last consumer. A node's inputs and outputs are live together. Constants are not counted."""
    size = size_of or (lambda t: t.nbytes)
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.input:
            last_use[name] = i
    keep = set(graph.graph_outputs)
    live: dict[str, int] = {}
    for name in graph.graph_inputs:
        t = graph.tensor(name)
        live[name] = size(t) if t else 0
    peak, at = sum(live.values()), "(inputs)"
    for i, node in enumerate(graph.nodes):
        for name in node.output:
            t = graph.tensor(name)
            if t is not None and not t.constant:
                live[name] = size(t)
        current = sum(live.values())
        if current > peak:
            peak, at = current, node.name or node.output[0]
        for name in set(node.input) | set(node.output):
            if name in live and name not in keep and last_use.get(name, -1) <= i:
                del live[name]
    return PeakMemory(bytes=peak, at_node=at)
