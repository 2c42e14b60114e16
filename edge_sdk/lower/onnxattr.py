"""Reading ONNX node attributes with defaults."""

from __future__ import annotations

from typing import Any

import onnx


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    value = attr(node, name)
    return list(default) if value is None else [int(v) for v in value]
