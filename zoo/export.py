"""Deployment helpers: ONNX export (opset 17, checked with onnxruntime) and a ``torch.compile``
graph-break report.

>>> import zoo, zoo.export
>>> model = zoo.create("resnet18_aa4")
>>> path = zoo.export.to_onnx(model, "resnet18_aa4.onnx", input_size=(3, 224, 224))  # doctest: +SKIP
>>> zoo.export.onnx_max_abs_diff(model, path, torch.randn(2, 3, 224, 224))           # doctest: +SKIP

ONNX export uses torch's ``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``),
which emits opset 18. Opset 17 (what older runtimes accept) is reached by a small, exact
down-conversion: the only opset-18 changes these models hit are ``Pad`` (new optional ``axes``
input, never used here) and the ``Reduce*`` ops (``axes`` moved from an attribute to an input).
Any other opset-18 operator raises ``NotImplementedError`` naming it; nothing is guessed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.io import atomic_path

__all__ = ["compile_report", "downgrade_opset_18_to_17", "onnx_max_abs_diff", "to_onnx"]

_REDUCE_OPS = frozenset(
    {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
     "ReduceProd", "ReduceSumSquare"}
)  # fmt: skip
_EXPORT_OPSET = 18  # what torch's exporter emits natively


def _check_input_size(input_size: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ValueError(f"input_size must be (channels, height, width) of positive ints, got {input_size!r}")
    return tuple(input_size)  # type: ignore[return-value]


def to_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: tuple[int, int, int] = (3, 224, 224),
    *,
    opset: int = 17,
    batch_size: int = 2,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (put in eval mode) to an ONNX file at ``path`` (written atomically).

    Args:
        input_size: ``(C, H, W)`` of the example input; H and W are fixed in the graph.
        opset: 17 (default, down-converted) or >= 18.
        batch_size: example batch (>= 2, so that a dynamic batch axis is not specialised to 1).
        dynamic_batch: make the batch axis of the input and outputs dynamic.
    Returns the path. Input name ``input``; outputs ``output`` (or ``output_0``, ... for a list).
    """
    import onnx

    size = _check_input_size(input_size)
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    if dynamic_batch and batch_size < 2:
        raise ValueError("a dynamic batch axis needs an example batch_size >= 2")
    model = model.eval()
    example = torch.randn(batch_size, *size)
    with torch.no_grad():
        outputs = model(example)
    n_out = len(outputs) if isinstance(outputs, (list, tuple)) else 1
    output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=max(opset, _EXPORT_OPSET),
            input_names=["input"],
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    proto = program.model_proto
    if opset == 17:
        downgrade_opset_18_to_17(proto)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


def _constant_values(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def downgrade_opset_18_to_17(proto: Any) -> None:
    """Rewrite an opset-18 ``onnx.ModelProto`` to opset 17 in place (see the module docstring)."""
    import onnx

    imports = [op for op in proto.opset_import if op.domain in ("", "ai.onnx")]
    if len(imports) != 1 or imports[0].version != _EXPORT_OPSET:
        raise ValueError(f"expected a model importing ONNX opset {_EXPORT_OPSET}, got {[o.version for o in imports]}")
    if len(proto.functions):
        raise NotImplementedError("models with ONNX local functions are not supported by the down-conversion")
    graph = proto.graph
    constants = _constant_values(graph)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            raise NotImplementedError(f"{node.op_type} with a subgraph: not supported by the down-conversion")
        if onnx.defs.get_schema(node.op_type, _EXPORT_OPSET, "").since_version < _EXPORT_OPSET:
            continue  # same operator version in 17 and 18
        if node.op_type == "Pad":
            if len(node.input) > 3 and node.input[3]:
                raise NotImplementedError(f"Pad node {node.name} uses the opset-18 'axes' input")
        elif node.op_type in _REDUCE_OPS:
            _reduce_axes_to_attribute(node, constants)
        else:
            raise NotImplementedError(f"operator {node.op_type} changed in opset 18; no down-conversion to 17")
    imports[0].version = 17
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used or init.name in {i.name for i in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _reduce_axes_to_attribute(node: Any, constants: dict[str, Any]) -> None:
    import onnx

    attrs = {a.name: a for a in node.attribute}
    if "noop_with_empty_axes" in attrs:
        if onnx.helper.get_attribute_value(attrs["noop_with_empty_axes"]):
            raise NotImplementedError(f"{node.op_type} node {node.name} uses noop_with_empty_axes=1")
        node.attribute.remove(attrs["noop_with_empty_axes"])
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in constants:
            raise NotImplementedError(f"{node.op_type} node {node.name} has computed (non-constant) axes")
        axes = [int(a) for a in constants[node.input[1]].reshape(-1)]
        del node.input[1:]
        node.attribute.append(onnx.helper.make_attribute("axes", axes))


def onnx_max_abs_diff(model: nn.Module, path: str | os.PathLike, inputs: Tensor) -> float:
    """Largest absolute difference between ``model(inputs)`` (eager, eval mode) and onnxruntime's outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    with torch.no_grad():
        want = model.eval()(inputs)
    want = list(want) if isinstance(want, (list, tuple)) else [want]
    if len(want) != len(got):
        raise ValueError(f"{path} has {len(got)} outputs, the model {len(want)}")
    return max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))


def compile_report(module: nn.Module, *inputs: Tensor) -> dict[str, Any]:
    """``torch._dynamo.explain`` summary: ``graphs``, ``graph_breaks`` and the break ``reasons``."""
    import torch._dynamo

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(module)(*inputs)
    reasons = [str(getattr(b, "reason", b)) for b in explanation.break_reasons]
    return {"graphs": explanation.graph_count, "graph_breaks": explanation.graph_break_count, "reasons": reasons}
