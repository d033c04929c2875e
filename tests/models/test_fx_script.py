"""fx trace -> TorchScript -> forward equals eager (torchvision's feature extraction, then script).

Default run: one model per family (anti-aliased and a baseline); ``slow``: every registered name.
torchvision's own densenet scripts after fx too, so no family is excluded.
"""

from __future__ import annotations

import pytest
import torch
from support.scramble import scramble
from support.threads import one_thread  # noqa: F401 (autouse fixture)
from support.torchscript import fresh_torchscript  # noqa: F401 (autouse fixture)
from torchvision.models.feature_extraction import create_feature_extractor

import zoo
from zoo.registry import get_entry, list_models

FAMILY_REPS = ["resnet18_aa4", "vgg11_bn_aa3", "alexnet_aa4", "densenet121_aa4", "mobilenet_v2_aa2",
               "mobilenet_v3_small_aa5", "resnet18"]  # fmt: skip
CASES = [
    *FAMILY_REPS,
    *(
        pytest.param(n, marks=pytest.mark.slow)
        for n in list_models()
        if n not in FAMILY_REPS and get_entry(n).family != "torchvision_cnn"
    ),
]  # torchvision_cnn: test_tv_cnn.py


@pytest.mark.parametrize("name", CASES)
def test_fx_feature_extractor_scripts_and_matches_eager(name: str) -> None:
    torch.manual_seed(0)
    model = scramble(zoo.create(name, num_classes=5)).eval()
    level = model.feature_info[1]["module"]
    fx_model = create_feature_extractor(model, return_nodes={level: "mid", model.classifier_name: "logits"})
    scripted = torch.jit.script(fx_model)
    side = max(64, model.min_input_size)
    for size in (side, side + 32):  # a second size: nothing about the input shape is baked in
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            want = model(x)
            want_mid = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
            got = scripted(x)
        assert want.abs().max() > 1e-3
        torch.testing.assert_close(got["logits"], want, rtol=0, atol=0)
        torch.testing.assert_close(got["mid"], want_mid, rtol=0, atol=0)


def test_symbolic_trace_scripts() -> None:
    """Plain ``torch.fx.symbolic_trace`` of the whole model, then script (timm's fx + TorchScript check)."""
    model = scramble(zoo.create("resnet18_aa4", num_classes=3)).eval()
    scripted = torch.jit.script(torch.fx.symbolic_trace(model))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=0)
        with pytest.raises(Exception, match=r"built for 3 input channels but got 1 \(input shape \(1, 1, 64, 64\)\)"):
            scripted(torch.randn(1, 1, 64, 64))  # the input check survives fx and scripting


@pytest.mark.parametrize("name", ["resnet18_aa3", "squeezenet1_1_aa3", "unet_resnet18_aa3"])
def test_script_survives_a_stale_builtin_id_on_a_module_attribute(name: str) -> None:
    """torch keeps ids of freed op objects in TorchScript's builtin table; a conv's padding list allocated at
    such an address made ``torch.jit.script`` fail ("builtin cannot be used as a value") in one CI run. Plant
    that state on purpose: the zoo's scripting hook clears the stale entry and the model scripts."""
    from torch.jit._builtins import _get_builtin_table

    model = zoo.create(name).eval()
    conv = next(m for m in model.modules() if type(m) is torch.nn.Conv2d and m.padding != (0, 0))
    table, key = _get_builtin_table(), id(conv._reversed_padding_repeated_twice)
    table[key] = "aten::pad"  # what a freed op's id left behind
    try:
        scripted = torch.jit.script(model)
    finally:
        table.pop(key, None)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-6)
