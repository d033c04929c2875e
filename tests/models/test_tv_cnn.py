"""The torchvision CNN families (zoo.models.torchvision_cnn): torchvision weights load strictly, every subsampling
is blurred, shapes are unchanged, a 1-px shift moves the logits less, and trace / fx / ONNX match eager."""

from __future__ import annotations

import io
import math
import warnings

import onnxruntime as ort
import pytest
import timm
import torch
import torch.fx
import torchvision
from torch import nn

import zoo
from tests.support.strided import strided_left
from zoo.models.torchvision_cnn import _ARCHS, VARIANTS
from zoo.registry import FILTER_SIZES, list_models

SMALLEST = [
    "convnext_tiny",
    "efficientnet_b0",
    "regnet_x_400mf",
    "mnasnet0_5",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "googlenet",
    "inception_v3",
]  # one per family; efficientnet_v2_s and regnet_y_400mf run in the slow suite
SLOW_FULL = ["efficientnet_v2_s", "regnet_y_400mf"]
HUGE = {"regnet_y_128gf", "regnet_y_32gf", "regnet_x_32gf", "regnet_y_16gf", "regnet_x_16gf", "efficientnet_b7",
        "efficientnet_b6", "efficientnet_v2_l", "efficientnet_v2_m", "convnext_large", "convnext_base"}  # fmt: skip
# ConvNeXt keeps its stride-4 stem: at 64 px its 2x2 final map is mostly border, so it uses 128 px.
SHIFT_SIZE = {"convnext_tiny": 128}


def _size(arch: str) -> int:
    return 80 if arch == "inception_v3" else 64


def _input(arch: str, n: int = 2, size: int | None = None) -> torch.Tensor:
    s = size or _size(arch)
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(1))


def _scramble_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so eval-mode outputs depend on the normalisation."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        elif hasattr(m, "layer_scale"):  # ConvNeXt's 1e-6 layer scale would make every block an identity
            m.layer_scale.data.fill_(0.5)
    return model.eval()


def _fan_in_init(model: nn.Module) -> nn.Module:
    """Variance-preserving conv/linear weights (He init), seeded.

    GoogLeNet's own init (truncated normal, std 0.01) shrinks the signal through its 22 layers until the
    logits are the classifier's bias whatever the input: a 1-px shift then moves them by float rounding
    (~1e-14 relative) and any ratio of two such changes is noise.
    """
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5)
    return model


FAN_IN_INIT = {"googlenet"}


def _pair(arch: str, scramble: bool = True) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    base = zoo.create(arch).eval()
    base = _scramble_bn(base) if scramble else base
    base = _fan_in_init(base) if arch in FAN_IN_INIT else base
    aa = zoo.create(f"{arch}_aa4").eval()
    aa.load_state_dict(base.state_dict(), strict=True)
    return base, aa


def _strided(model: nn.Module) -> list[str]:
    return strided_left(model, skip=getattr(model, "first_conv", None))


def test_every_arch_registered() -> None:
    assert len(_ARCHS) == 42 and set(VARIANTS) == set(_ARCHS)
    for arch in _ARCHS:
        assert list_models(f"{arch}_aa*") == [f"{arch}_aa{k}" for k in FILTER_SIZES]
        assert f"{arch}_aa4" in timm.list_models(module="timm_bridge") and arch in list_models()


@pytest.mark.parametrize("arch", [*SMALLEST, *(pytest.param(a, marks=pytest.mark.slow) for a in SLOW_FULL)])
def test_torchvision_weights_load_strictly_and_shapes_hold(arch: str) -> None:
    kw = dict(aux_logits=False, init_weights=True) if arch in ("googlenet", "inception_v3") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tv = getattr(torchvision.models, arch)(**kw).eval()
    base = zoo.create(arch).eval()
    aa = zoo.create(f"{arch}_aa3").eval()
    base.load_state_dict(tv.state_dict(), strict=True)
    aa.load_state_dict(tv.state_dict(), strict=True)
    x = _input(arch)
    with torch.no_grad():
        want = tv(x)
        assert torch.allclose(base(x), want, atol=1e-5)  # the baseline twin is torchvision's model
        assert aa(x).shape == want.shape
        assert aa.forward_features(x).shape[1] == base.forward_features(x).shape[1] == aa.num_features


@pytest.mark.parametrize("arch", [*SMALLEST, *(pytest.param(a, marks=pytest.mark.slow) for a in SLOW_FULL)])
def test_no_subsampling_left_unblurred(arch: str) -> None:
    assert _strided(zoo.create(arch))  # the check finds the baseline's
    assert _strided(zoo.create(f"{arch}_aa4")) == []
    stem = zoo.create(f"{arch}_aa4", aa_stem=True)
    assert stem.get_submodule(stem.first_conv).stride in ((1, 1), (2, 2)) and _strided(stem) == []


def _shift_change(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        y, ys = model(x), model(x.roll(1, dims=-1))
    return ((ys - y).abs().mean() / y.abs().mean()).item()


@pytest.mark.parametrize("arch", [*SMALLEST, *(pytest.param(a, marks=pytest.mark.slow) for a in SLOW_FULL)])
def test_shift_moves_logits_less(arch: str) -> None:
    # torchvision's init (scrambled BN statistics saturate EfficientNet), but ConvNeXt needs its layer scale raised
    base, aa = _pair(arch, scramble=arch == "convnext_tiny")
    x = _input(arch, 4, SHIFT_SIZE.get(arch))
    base_change = _shift_change(base, x)
    assert base_change > 1e-6  # a change far above float rounding, or the ratio measures noise
    ratio = _shift_change(aa, x) / base_change
    print(f"{arch}: shift ratio aa4/baseline = {ratio:.3f}")
    assert ratio < 0.9


EXPORT_DEFAULT = ["mnasnet0_5", "inception_v3"]  # the rest of the families export in the slow suite


@pytest.mark.parametrize(
    "arch",
    [
        *EXPORT_DEFAULT,
        *(pytest.param(a, marks=pytest.mark.slow) for a in SMALLEST + SLOW_FULL if a not in EXPORT_DEFAULT),
    ],
)
def test_trace_fx_onnx_match_eager(arch: str) -> None:
    _, model = _pair(arch)
    x = _input(arch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = model(x)
        assert torch.allclose(torch.fx.symbolic_trace(model)(x), want, atol=1e-5)
        traced = torch.jit.trace(model, (x,))
        assert torch.allclose(traced(x), want, atol=1e-5)
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, opset_version=17, dynamo=False, input_names=["input"])
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-4 * want.abs().max().item())


@pytest.mark.slow
@pytest.mark.parametrize("arch", SMALLEST + SLOW_FULL)
def test_compile_matches_eager(arch: str) -> None:
    _, model = _pair(arch)
    x = _input(arch)
    with torch.no_grad():
        want = model(x)
        assert torch.allclose(torch.compile(model)(x), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_0_aa4", "googlenet_aa2", "convnext_tiny_aa5",
                                  "inception_v3"])  # fmt: skip
def test_minimum_input_size(name: str) -> None:
    model = zoo.create(name).eval()
    arch = name.split("_aa")[0]
    low = _ARCHS[arch][2 if "_aa" in name else 1]
    assert model.min_input_size == low == model.pretrained_cfg["min_input_size"][1]
    with torch.no_grad():
        assert model(torch.randn(1, 3, low, low)).shape == (1, 1000)
        with pytest.raises(ValueError, match=f"minimum is {low}x{low}"):
            model(torch.randn(1, 3, low - 1, low - 1))


@pytest.mark.parametrize("name", ["mnasnet0_5_aa4", "squeezenet1_1_aa3", "convnext_tiny_aa2"])
def test_timm_interface(name: str) -> None:
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
        assert model(x).shape == (1, 7)
        model.reset_classifier(3)
        assert model(x).shape == (1, 3)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
    assert model.pretrained_cfg["classifier"] == model.classifier_name and model.get_submodule(model.first_conv)
    fo = timm.create_model(name, features_only=True)
    assert [f.shape[1] for f in fo(x)] == fo.feature_info.channels()


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in _ARCHS if a not in HUGE])
def test_every_arch_builds_and_runs(arch: str) -> None:
    base, aa = _pair(arch)
    x = _input(arch, 1)
    with torch.no_grad():
        assert aa(x).shape == base(x).shape == (1, 1000)
    assert _strided(aa) == []


@pytest.mark.parametrize("name", ["inception_v3_aa4", "squeezenet1_1_aa2", "convnext_tiny_aa4"])
def test_timm_registered_cfg_matches_the_built_model(name: str) -> None:
    registered = timm.models.get_pretrained_cfg(name).to_dict()
    own = zoo.create(name).default_pretrained_cfg(name)
    for key in ("pool_size", "first_conv", "classifier", "input_size", "num_classes"):
        assert tuple(registered[key]) == tuple(own[key]) if isinstance(own[key], tuple) else registered[key] == own[key]
    assert own["input_size"] == ((3, 299, 299) if name.startswith("inception") else (3, 224, 224))


def test_zoo_list_and_family() -> None:
    assert zoo.registry.get_entry("googlenet_aa4").family == "torchvision_cnn"
    assert "regnet_y_128gf_aa5" in zoo.list_models("regnet_y_*", antialiased=True)


def test_engine_rules_on_a_toy() -> None:
    """Anisotropic stride with no activation, a strided 1x1 conv and a ceil_mode pool, each placed by its rule."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Sequential(nn.Conv2d(8, 8, 3, stride=(1, 2), padding=1, groups=8), nn.BatchNorm2d(8)),
        nn.Sequential(nn.Conv2d(8, 16, 1, stride=2), nn.BatchNorm2d(16)),
        nn.MaxPool2d(3, 2, ceil_mode=True),
    ).eval()
    out = zoo.antialias(model, 3).eval()
    assert list(out[1]._modules) == ["0", "1", "1_aa"] and out[1][0].stride == (1, 1)
    assert out[1][2].stride == (1, 2) and out[2][0].stride == (1, 1)
    out.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 16, 16)
    # 8x4 map: MaxPool(3, 1) -> 6x2, blur(2) -> 3x1 (the ceil_mode original gives 4x2: see docs/antialias.md)
    assert model(x).shape == (1, 16, 4, 2) and out(x).shape == (1, 16, 3, 1) and _strided(out) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for a in _ARCHS if a not in HUGE for n in list_models(f"{a}*") if n.split("_aa")[0] == a]
)
def test_every_name_builds_and_runs(name: str) -> None:
    """Every registered name of the non-huge archs (the huge ones: test_huge_archs_load_torchvision_weights...)."""
    model = zoo.create(name, num_classes=5).eval()
    s = max(model.min_input_size, 32)
    with torch.no_grad():
        assert model(torch.randn(1, 3, s, s)).shape == (1, 5)


@pytest.mark.parametrize("name", [*(f"{a}_aa3" for a in SMALLEST), "shufflenet_v2_x0_5_aps", "inception_v3_aps"])
def test_script_matches_eager_and_keeps_the_input_check(name: str) -> None:
    model = zoo.create(name, num_classes=5)
    model.set_grad_checkpointing(True)  # not scripted; the eager model keeps it
    scripted = torch.jit.script(model)
    assert model.grad_checkpointing
    model.set_grad_checkpointing(False)
    model.eval(), scripted.eval()
    arch = name.rsplit("_aa", 1)[0].removesuffix("_aps")
    x = _input(arch, size=max(_size(arch), model.min_input_size))
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), rtol=1e-5, atol=1e-6)
    assert set(model.state_dict()) <= set(scripted.state_dict())  # + the blur filters, as for every family
    small = model.min_input_size - 1
    if small > 0:
        with pytest.raises(torch.jit.Error, match="too small"):
            scripted(torch.randn(1, 3, small, small))


@pytest.mark.parametrize("arch", SMALLEST)
def test_feature_levels_are_the_last_module_at_each_stride(arch: str) -> None:
    """The meta-device probe agrees with a real forward: channels, stride, and no later module at that stride."""
    model = zoo.create(f"{arch}_aa3").eval()
    size = model.pretrained_cfg["input_size"][-1]  # 224 px (inception_v3 299 px), where the probe runs
    outputs: dict[str, tuple[int, ...]] = {}
    trunk = model.trunk()
    for name, module in trunk:
        module.register_forward_hook(lambda _m, _i, out, n=name: outputs.__setitem__(n, tuple(out.shape)))
    with torch.no_grad():
        model.forward_features(torch.randn(1, 3, size, size))
    names = [n for n, _ in trunk]
    reductions = [i["reduction"] for i in model.feature_info]
    assert reductions == sorted(set(reductions)) and model.feature_info[-1]["module"] == names[-1]
    assert model.feature_info[-1]["num_chs"] == model.num_features
    for info in model.feature_info:
        _, chans, h, _ = outputs[info["module"]]
        assert chans == info["num_chs"] and 2 ** round(math.log2(size / h)) == info["reduction"]
        after = names[names.index(info["module"]) + 1 :]
        assert all(outputs[n][2] < h for n in after)  # the next modules have subsampled further
    expected = {"regnet_x_400mf": [2, 4, 8, 16, 32], "convnext_tiny": [4, 8, 16, 32], "squeezenet1_1": [2, 4, 8, 16]}
    if arch in expected:
        assert reductions == expected[arch]


@pytest.mark.parametrize(("name", "inner"), [("googlenet_aa3", None), ("efficientnet_b0_aa2", "features.2")])
def test_grad_checkpointing_gives_the_same_outputs_and_gradients(name: str, inner: str | None) -> None:
    """Same outputs and gradients (dropout in the head included); a checkpointed block runs again in backward."""
    torch.manual_seed(0)
    model = zoo.create(name, num_classes=4, drop_rate=0.3).train()
    calls = []
    if inner is not None:
        model.get_submodule(inner).register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 64, 64)
    runs = []
    for enabled in (False, True):
        model.set_grad_checkpointing(enabled)
        model.zero_grad()
        calls.clear()
        torch.manual_seed(1)  # the same dropout masks in both runs
        out = model(x)
        out.sum().backward()
        runs.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)))
    (out, grads, plain), (out2, grads2, recomputed) = runs
    if inner is not None:
        assert (plain, recomputed) == (1, 2)
    assert torch.allclose(out, out2, atol=1e-5)
    assert all(torch.allclose(grads[n], grads2[n], atol=1e-4) for n in grads)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(HUGE))
def test_huge_archs_load_torchvision_weights_strictly_and_leave_nothing_strided(arch: str) -> None:
    """The 11 archs too large for the per-name sweep: the original's state dict, the placement, the output shape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = getattr(torchvision.models, arch)().state_dict()
    aa = zoo.create(f"{arch}_aa4").eval()
    aa.load_state_dict(state, strict=True, assign=True)
    del state
    assert _strided(aa) == []
    with torch.no_grad():
        assert aa(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
