"""Export: ONNX opset 17 run with onnxruntime (logits within 1e-4 of eager), ``torch.compile``
(no graph break in the blur layers, matches eager within 1e-5) and the opset down-conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from onnx import TensorProto, helper
from support.scramble import scramble
from timm_testlib import rand_input, small_size

from zoo.export import compile_report, downgrade_opset_18_to_17, onnx_max_abs_diff, to_onnx
from zoo.layers import BlurConv2d, BlurPool2d, MaxBlurPool2d

ONNX_MODELS = [
    "resnet18_aa4",
    *(pytest.param(n, marks=pytest.mark.slow)
      for n in ("vgg11_bn_aa4", "densenet121_aa4", "mobilenet_v2_aa4", "mobilenet_v3_small_aa4", "alexnet_aa4")),
]  # fmt: skip

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_opset17_matches_eager(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = scramble(timm.create_model(name)).eval()
    size = small_size(model)
    path = to_onnx(model, tmp_path / f"{name}.onnx", input_size=(3, size, size))
    proto = onnx.load(str(path))
    assert [(o.domain, o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [("", 17)]
    assert not list(tmp_path.glob(".*.tmp"))
    x = rand_input(size, batch=3)  # another batch size than the export example: the batch axis is dynamic
    with torch.no_grad():
        assert model(x).std() > 0.01  # logits of a real spread (100x the tolerance), not ~0
    assert onnx_max_abs_diff(model, path, x) < 1e-4


@pytest.mark.slow
def test_onnx_features_only_outputs(tmp_path: Path) -> None:
    model = timm.create_model("resnet18_aa4", features_only=True, out_indices=(3, 4)).eval()
    path = to_onnx(model, tmp_path / "feats.onnx", input_size=(3, 64, 64), opset=18)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output_0", "output_1"]
    assert onnx_max_abs_diff(model, path, rand_input(64)) < 1e-4


def test_to_onnx_rejects_bad_arguments(tmp_path: Path) -> None:
    model = timm.create_model("resnet18_aa4")
    with pytest.raises(ValueError, match="input_size"):
        to_onnx(model, tmp_path / "m.onnx", input_size=(64, 64))
    with pytest.raises(ValueError, match="opset"):
        to_onnx(model, tmp_path / "m.onnx", input_size=(3, 64, 64), opset=13)
    with pytest.raises(ValueError, match="batch_size"):
        to_onnx(model, tmp_path / "m.onnx", input_size=(3, 64, 64), batch_size=1)


def _opset18_model(pad_axes: bool = False) -> onnx.ModelProto:
    """Pad(reflect) -> ReduceMean(axes=[2, 3] as an input), the two opset-18 changes our models hit."""
    inits = [
        helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 2, 0, 0, 2, 1]),
        helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
    ]
    pad_inputs = ["x", "pads", "", "pad_axes"] if pad_axes else ["x", "pads"]
    if pad_axes:
        inits.append(helper.make_tensor("pad_axes", TensorProto.INT64, [1], [2]))
    nodes = [
        helper.make_node("Pad", pad_inputs, ["p"], mode="reflect"),
        helper.make_node("ReduceMean", ["p", "axes"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_downgrade_is_exact_and_refuses_what_it_cannot_convert() -> None:
    proto = _opset18_model()
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    downgrade_opset_18_to_17(proto)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17 and [i.name for i in proto.graph.initializer] == ["pads"]
    reduce = proto.graph.node[1]
    assert list(reduce.input) == ["p"] and helper.get_attribute_value(reduce.attribute[-1]) == [2, 3]
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    padded = torch.nn.functional.pad(torch.from_numpy(x), (2, 1, 1, 2), mode="reflect").mean((2, 3))
    np.testing.assert_allclose(got, padded.numpy(), rtol=1e-6)
    with pytest.raises(NotImplementedError, match="axes"):
        downgrade_opset_18_to_17(_opset18_model(pad_axes=True))
    with pytest.raises(ValueError, match="opset 18"):
        downgrade_opset_18_to_17(proto)  # already 17


@pytest.mark.parametrize("layer", [BlurPool2d(8), MaxBlurPool2d(8), BlurConv2d(8, 16), BlurPool2d(8, pad_mode="zero")])
def test_blur_layers_compile_without_graph_breaks(layer: torch.nn.Module) -> None:
    report = compile_report(layer, torch.randn(2, 8, 16, 16))
    assert report == {"graphs": 1, "graph_breaks": 0, "reasons": []}


def test_torch_compile_resnet18_matches_eager() -> None:
    torch.manual_seed(0)
    model = scramble(timm.create_model("resnet18_aa4")).eval()
    x = rand_input(64)
    assert compile_report(model, x)["graph_breaks"] == 0
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch.no_grad():
        want = model(x)
        got = compiled(x)
    assert want.std() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
