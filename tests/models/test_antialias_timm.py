"""zoo.antialias on timm CNNs: timm's weights load strictly, every subsampling is blurred once, shapes and timm's
interface are unchanged, a 1-px shift moves the logits less, and script / trace / fx / compile match eager."""

from __future__ import annotations

import io
import warnings

import onnxruntime as ort
import pytest
import timm
import torch
import torch.fx
from torch import nn

import zoo
from tests.support.strided import stride_pair, strided_left
from zoo.layers import BlurPool2d, MaxBlurPool2d

DEFAULT = "resnet18d"  # ResNet-D: deep stem, average-pool shortcuts, BasicBlock aa slots, timm's stem max-pool
SLOW = [
    "resnet18",
    "resnet50",
    "resnet50d",
    "resnetv2_50",
    "resnetv2_50d",  # DownsampleAvg: the average pool outside a Sequential
    "efficientnet_b0",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
    "convnext_atto",
    "convnext_nano",
    "regnetx_002",
    "regnety_002",
    "densenet121",
]
NAMES = [DEFAULT, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)]
# ConvNeXt keeps its stride-4 patchify stem: at 64 px its 2x2 final map is mostly border, so it uses 128 px.
SHIFT_SIZE = {"convnext_atto": 128, "convnext_nano": 128}
_BLURS = (BlurPool2d, MaxBlurPool2d, timm.layers.BlurPool2d)


def _build(name: str, **kw: object) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kw).eval()
    for m in model.modules():  # timm's 1e-6 ConvNeXt layer scale makes every block an identity
        if isinstance(getattr(m, "gamma", None), nn.Parameter):
            m.gamma.data.fill_(0.5)
    return model


def _input(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _blur_sites(model: nn.Module) -> list[str]:
    """Blur layers (a MaxBlurPool2d counts once, not with its inner BlurPool2d)."""
    inner = {id(m.blur) for m in model.modules() if isinstance(m, MaxBlurPool2d)}
    return [p for p, m in model.named_modules() if isinstance(m, _BLURS) and id(m) not in inner]


@pytest.mark.parametrize("name", NAMES)
def test_weights_load_strictly_shapes_and_interface_hold(name: str) -> None:
    base = _build(name)
    aa = zoo.antialias(base).eval()
    assert aa is not base and aa.state_dict().keys() == base.state_dict().keys()
    aa.load_state_dict(base.state_dict(), strict=True)
    assert aa.pretrained_cfg == base.pretrained_cfg and aa.default_cfg == base.default_cfg
    assert aa.feature_info == base.feature_info and aa.num_features == base.num_features
    x = _input()
    with torch.no_grad():
        feats, want = base.forward_features(x), base(x)
        got = aa.forward_features(x)
        assert got.shape == feats.shape and aa(x).shape == want.shape
        assert aa.forward_head(got, pre_logits=True).shape == base.forward_head(feats, pre_logits=True).shape
        aa.reset_classifier(5)
        assert aa(x).shape == (2, 5)
        assert torch.equal(base(x), want)  # the original is untouched (deep copy)


@pytest.mark.parametrize("name", NAMES)
def test_every_subsampling_blurred_once(name: str) -> None:
    base = _build(name)
    stem = base.pretrained_cfg["first_conv"]
    assert isinstance(base.get_submodule(stem), nn.Conv2d)
    sites = strided_left(base, stem)
    assert sites and not _blur_sites(base)
    aa = zoo.antialias(base)
    assert strided_left(aa, stem) == [] and len(_blur_sites(aa)) == len(sites)
    assert aa.get_submodule(stem).stride == base.get_submodule(stem).stride  # stem kept strided by default
    full = zoo.antialias(base, aa_stem=True)
    assert len(_blur_sites(full)) == len(sites) + 1
    s = stride_pair(base.get_submodule(stem))
    assert stride_pair(full.get_submodule(stem)) == ((1, 1) if max(s) <= 2 else (s[0] // 2, s[1] // 2))
    assert strided_left(full, None if max(s) <= 2 else stem) == []
    again = zoo.antialias(aa)  # already anti-aliased: nothing is blurred twice
    assert _blur_sites(again) == _blur_sites(aa)


def _shift_change(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        y, ys = model(x), model(x.roll(1, dims=-1))
    return ((ys - y).abs().mean() / y.abs().mean()).item()


@pytest.mark.parametrize("name", NAMES)
def test_shift_moves_logits_less(name: str) -> None:
    base = _build(name)
    aa = zoo.antialias(base).eval()
    x = _input(4, SHIFT_SIZE.get(name, 64))
    before, after = _shift_change(base, x), _shift_change(aa, x)
    print(f"| {name} | {x.shape[-1]} | {before:.4f} | {after:.4f} | {after / before:.3f} |")
    assert after < before


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.parametrize("name", NAMES)
def test_script_trace_fx_match_eager(name: str) -> None:
    base = _build(name)
    aa = zoo.antialias(base).eval()
    x = _input()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = aa(x)
        assert _close(torch.jit.trace(aa, (x,))(x), want)
        assert _close(torch.jit.script(aa)(x), want)
        torch.fx.symbolic_trace(base)  # timm's model traces, so the rewritten one must too
        assert _close(torch.fx.symbolic_trace(aa)(x), want)


@pytest.mark.slow
@pytest.mark.parametrize("name", [DEFAULT, *SLOW])
def test_compile_and_both_onnx_exporters_match_eager(name: str) -> None:
    aa = zoo.antialias(_build(name)).eval()
    x = _input()
    with torch.no_grad():
        want = aa(x)
        assert _close(torch.compile(aa)(x), want)
    for dynamo in (False, True):
        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(aa, (x,), buf, opset_version=18, dynamo=dynamo, input_names=["input"])
        sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
        assert _close(got, want), (name, dynamo)


def test_blur_after_a_stateful_module_refuses_script_loudly() -> None:
    """The subclass-forward fallback of the blur-after rule (a norm whose activation holds weights: PReLU)."""
    base = timm.create_model("resnetv2_50", pretrained=False, act_layer=nn.PReLU).eval()
    aa = zoo.antialias(base).eval()
    assert type(aa.stages[1].blocks[0].norm3).__name__.startswith("Blurred")
    aa.load_state_dict(base.state_dict(), strict=True)
    x = _input()
    with torch.no_grad():
        assert _close(torch.fx.symbolic_trace(aa)(x), aa(x)) and strided_left(aa, "stem.conv") == []
    with pytest.raises(TypeError, match=r"torch\.jit\.script is not supported.*torch\.jit\.trace"):
        torch.jit.script(aa)


def test_timm_aa_layer_is_not_blurred_twice() -> None:
    base = _build("resnet18", aa_layer=timm.layers.BlurPool2d)
    own = {p: m for p, m in base.named_modules() if isinstance(m, timm.layers.BlurPool2d)}
    assert len(own) == 4  # timm's: stem pool + layer2-4 first blocks; its 1x1 shortcuts stay strided
    aa = zoo.antialias(base).eval()
    aa.load_state_dict(base.state_dict(), strict=True)
    assert {p for p, m in aa.named_modules() if isinstance(m, timm.layers.BlurPool2d)} == set(own)
    added = [p for p, m in aa.named_modules() if isinstance(m, (BlurPool2d, MaxBlurPool2d))]
    assert added == [f"layer{i}.0.downsample.0.blur" for i in (2, 3, 4)]  # only the unblurred shortcuts
    assert isinstance(aa.layer2[0].aa, timm.layers.BlurPool2d) and aa.maxpool[0].stride == 1
    assert strided_left(aa, "conv1") == []
    with torch.no_grad():
        assert aa(_input()).shape == (2, 1000)


def test_vit_raises_and_rewrites_nothing() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    with pytest.raises(ValueError, match=r"cannot place blur for strided modules patch_embed\.proj of .*VisionTr"):
        zoo.antialias(vit, inplace=True)
    assert vit.patch_embed.proj.stride == (16, 16)


def test_unplaceable_module_in_a_timm_model_raises_and_rewrites_nothing() -> None:
    class Down(nn.Module):  # strided 3x3 conv with no known block, Sequential or rule around it
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(64, 128, 3, stride=2, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    model = _build(DEFAULT)
    model.layer2[0].downsample = Down()
    with pytest.raises(ValueError, match=r"strided modules layer2\.0\.downsample\.conv of timm\.models\.resnet\.Res"):
        zoo.antialias(model, inplace=True)
    assert model.layer2[0].conv1.stride == (2, 2) and model.maxpool.stride == 2 and not _blur_sites(model)


def test_resnet18_matches_the_hand_built_official_placement() -> None:
    """timm's resnet18 is torchvision's: its rewrite gives the oracle-verified ``resnet18_aa4`` logits."""
    base = _build("resnet18")
    ref = zoo.create("resnet18_aa4").eval()
    ref.load_state_dict(base.state_dict(), strict=True)
    x = _input()
    with torch.no_grad():
        assert _close(zoo.antialias(base).eval()(x), ref(x))


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", pytest.param("efficientnet_b0", marks=pytest.mark.slow)])
def test_slot_blocks_match_timm_own_aa_layer(name: str) -> None:
    """timm builds these with ``aa_layer`` in the same slots (stem kept, no strided shortcut): same logits."""
    base = _build(name)
    ref = _build(name, aa_layer=BlurPool2d)
    ref.load_state_dict(base.state_dict(), strict=True)
    x = _input()
    with torch.no_grad():
        assert _close(zoo.antialias(base).eval()(x), ref(x))
