"""``{arch}_aps`` / ``{arch}_aa{K}_aps`` models and APS U-Nets: exact shift invariance / equivariance, weights,
names and export paths."""

from __future__ import annotations

import io
import warnings

import onnxruntime as ort
import pytest
import torch

import zoo
import zoo.layers.aps as aps_layers
from zoo.models.aps import APS_FAMILIES, APS_TORCHVISION, aps_family
from zoo.registry import ARCHS, get_entry

SHIFTS = [(1, 0), (0, 1), (1, 1), (3, -5), (-7, 2), (17, 30)]
# VGG/AlexNet flatten an adaptive pool into an MLP: invariant when the last map is 1x1 (module docstring)
SIZE = {"vgg": 32, "densenet": 32}
ONE_PER_FAMILY = [
    "resnet18_aps",
    "vgg11_bn_aa4_aps",
    "alexnet_aa3_aps",
    "densenet121_aps",
    "mobilenet_v3_small_aa4_aps",
    "mnasnet0_5_aa4_aps",
    "efficientnet_b0_aps",
    "googlenet_aps",
    "squeezenet1_1_aps",
    "convnext_tiny_aps",
]
TORCHVISION = [
    "efficientnet_b0_aps",
    "efficientnet_v2_s_aa4_aps",
    "mnasnet0_5_aps",
    "googlenet_aa3_aps",
    "squeezenet1_1_aa4_aps",
    "squeezenet1_0_aps",
    "convnext_tiny_aa4_aps",
    "regnet_x_400mf_aa4_aps",
    "regnet_y_400mf_aps",
    "shufflenet_v2_x1_0_aps",
    "inception_v3_aa4_aps",
]
# torchvision blocks rewritten by ``share_phases`` / ``circular_pools``: one name per family in the default suite
SHARED = ["regnet_x_400mf_aps", "regnet_y_400mf_aa4_aps", "shufflenet_v2_x0_5_aa4_aps", "inception_v3_aps"]
# one APS U-Net per torchvision family (the hand-built ones take ONE_PER_FAMILY)
UNET_TORCHVISION = [
    "efficientnet_b0_aps",
    "mnasnet0_5_aa4_aps",
    "googlenet_aps",
    "squeezenet1_1_aps",
    "convnext_tiny_aps",
    "regnet_x_400mf_aps",
    "regnet_y_400mf_aa4_aps",
    "shufflenet_v2_x0_5_aa4_aps",
    "inception_v3_aps",
]


def _size(model: torch.nn.Module, name: str) -> int:
    return SIZE.get(get_entry(name).family, max(64, model.min_input_size))


def _relative_change(model: torch.nn.Module, x: torch.Tensor, shifts=SHIFTS, equivariant: bool = False) -> float:
    with torch.no_grad():
        y = model(x)
        worst = 0.0
        for d in shifts:
            ys = model(torch.roll(x, d, (2, 3)))
            ref = torch.roll(y, d, (2, 3)) if equivariant else y
            worst = max(worst, ((ys - ref).abs().max() / y.abs().max()).item())
    return worst


def _model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create(name, **kwargs).eval().double()


def _check_invariant(name: str) -> None:
    model = _model(name, num_classes=7)
    size = _size(model, name)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    assert _relative_change(model, x) < 1e-5, name


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_aps_model_is_exactly_shift_invariant(name: str) -> None:
    _check_invariant(name)


def test_one_default_test_per_family() -> None:
    assert set(APS_FAMILIES) <= {get_entry(n).family for n in ONE_PER_FAMILY}
    assert set(APS_TORCHVISION) <= {get_entry(n).variant.get("family") for n in ONE_PER_FAMILY + SHARED}


def test_a_fixed_phase_breaks_invariance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The known answer depends on the adaptive choice: phase 0 everywhere (a strided net) is not invariant."""
    model = _model("resnet18_aps", num_classes=7)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    monkeypatch.setattr(aps_layers, "aps_phase", lambda t, stride=2, p=2: torch.zeros(t.shape[0], dtype=torch.long))
    assert _relative_change(model, x) > 1e-3


def test_the_baseline_twin_is_not_invariant() -> None:
    model = _model("resnet18_aa4", num_classes=7, pad_mode="circular")
    assert _relative_change(model, torch.randn(2, 3, 64, 64, dtype=torch.float64)) > 1e-3


def test_weights_of_the_strided_twin_load_strictly() -> None:
    twin = zoo.create("resnet18_aa4", num_classes=5)
    aps = zoo.create("resnet18_aa4_aps", num_classes=5)
    assert list(twin.state_dict()) == list(aps.state_dict())
    aps.load_state_dict(twin.state_dict(), strict=True)
    for a, b in zip(twin.state_dict().values(), aps.state_dict().values()):
        assert torch.equal(a, b)
    dense = zoo.create("densenet121_aps", num_classes=5)
    dense.load_state_dict(zoo.create("densenet121", num_classes=5).state_dict(), strict=True)


def test_names_and_arguments() -> None:
    entry = get_entry("resnet50_aa3_aps")
    assert (entry.arch, entry.filter_size, entry.sampling) == ("resnet50", 3, "aps")
    assert get_entry("resnet50_aps").filter_size is None
    model = zoo.create("resnet18_aps")
    assert model.sampling == "aps" and model.pad_mode == "circular" and model.aa_stem
    assert model.conv1.padding_mode == "circular"
    assert zoo.create("convnext_tiny_aps").min_input_size == 96  # 3x3 last map for its 7x7 circular convs
    assert zoo.create("mobilenet_v3_small_aps").min_input_size == 64  # 5x5 circular convs on the 2x2 map of 32 px
    assert zoo.create("resnet18_aa4_aps").min_input_size == 32
    assert get_entry("regnet_y_400mf_aa4_aps").sampling == "aps"
    with pytest.raises(KeyError, match="unknown model"):
        get_entry("resnet18_aps_aps")
    assert zoo.create("resnet18_aa4", sampling="aps").name == "resnet18_aa4_aps"
    with pytest.raises(ValueError, match="sampling must be one of stride, aps"):
        zoo.create("resnet18", sampling="polyphase")
    with pytest.raises(ValueError, match="aa_stem=False is not available"):
        zoo.create("resnet18_aps", aa_stem=False)


def test_families_without_aps_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("zoo.registry.aps_family", lambda family, variant: None)  # a family registered without APS
    with pytest.raises(KeyError, match=r"APS sampling \(_aps\) is offered for the resnet, vgg"):
        get_entry("shufflenet_v2_x1_0_aps")


@pytest.mark.parametrize("name", SHARED)
def test_blocks_with_parallel_strided_branches_are_exactly_invariant(name: str) -> None:
    """float64 rounding only (the unshared ShuffleNet is off by ~1e-7 only, hence the tight bound)."""
    model = _model(name, num_classes=7)
    size = max(64, model.min_input_size)
    assert _relative_change(model, torch.randn(2, 3, size, size, dtype=torch.float64)) < 1e-12


@pytest.mark.parametrize("name", SHARED)
def test_branches_choosing_their_own_phase_break_invariance(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the block rewrites (every ``ApsDown2d`` picks its own phase; zero-padded functional pools) the
    same models are not invariant."""
    size = max(64, _model(name, num_classes=7).min_input_size)
    monkeypatch.setattr("zoo.models.aps._rewrite_blocks", lambda model: None)
    model = _model(name, num_classes=7)
    model.min_input_size = size  # unshared, the walk counts every branch's subsampling: 512 px for Inception
    assert _relative_change(model, torch.randn(2, 3, size, size, dtype=torch.float64)) > 1e-9


def test_shared_phase_blocks_keep_keys_and_export() -> None:
    warnings.simplefilter("ignore")
    twin = zoo.create("regnet_y_400mf_aa4", num_classes=5)
    model = zoo.create("regnet_y_400mf_aa4_aps", num_classes=5)
    assert list(twin.state_dict()) == list(model.state_dict())
    model.load_state_dict(twin.state_dict(), strict=True)
    model.eval()
    x, other = torch.randn(2, 3, 64, 64), torch.roll(torch.randn(2, 3, 64, 64), 3, 2)
    with torch.no_grad():
        ref = model(other)
        assert torch.allclose(torch.jit.trace(model, x)(other), ref, atol=1e-6)
        assert torch.allclose(torch.fx.symbolic_trace(model)(other), ref, atol=1e-6)
        assert torch.allclose(torch.jit.script(model)(other), ref, atol=1e-6)  # scripted from its fx graph


def test_script_trace_and_fx_equal_eager() -> None:
    warnings.simplefilter("ignore")
    model = zoo.create("resnet18_aa4_aps", num_classes=5).eval()
    x, other = torch.randn(2, 3, 64, 64), torch.roll(torch.randn(2, 3, 64, 64), 3, 2)
    with torch.no_grad():
        ref = model(other)
        assert torch.allclose(torch.jit.script(model)(other), ref, atol=1e-6)
        assert torch.allclose(torch.jit.trace(model, x)(other), ref, atol=1e-6)  # the phase is computed, not frozen
        assert torch.allclose(torch.fx.symbolic_trace(model)(other), ref, atol=1e-6)


def test_unet_aps_is_exactly_equivariant() -> None:
    model = _model("unet_resnet18_aa4_aps", num_classes=3)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    assert _relative_change(model, x, equivariant=True) < 1e-5
    assert model(x).shape == (2, 3, 64, 64)


def test_unet_with_fixed_unpool_phase_is_not_equivariant(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("unet_resnet18_aps", num_classes=3)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    real = aps_layers.aps_unpool
    monkeypatch.setattr(
        "zoo.models.unet.aps_unpool", lambda t, phase, stride=2: real(t, torch.zeros_like(phase), stride)
    )
    assert _relative_change(model, x, equivariant=True) > 1e-3


def test_unet_aps_refuses_graph_capture() -> None:
    model = zoo.create("unet_resnet18_aps", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(RuntimeError, match="eager mode only"):
        torch.jit.script(model)
    with pytest.raises(RuntimeError, match="eager mode only"):
        torch.jit.trace(model, x)
    with pytest.raises(RuntimeError, match="eager mode only"):
        torch.fx.symbolic_trace(model)


# ------------------------------------------------------------------ slow: every architecture, every export


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in ARCHS if get_entry(a).family in APS_FAMILIES])
def test_every_hand_built_architecture_is_exactly_invariant(arch: str) -> None:
    """The minimum input (float64 is slow for the deep grouped nets), three shifts, both sampling variants."""
    for name in (f"{arch}_aps", f"{arch}_aa4_aps"):
        model = _model(name, num_classes=7)
        size = model.min_input_size
        assert _relative_change(model, torch.randn(1, 3, size, size, dtype=torch.float64), SHIFTS[2:5]) < 1e-5, name


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_families_are_exactly_invariant(name: str) -> None:
    assert aps_family(get_entry(name).family, get_entry(name).variant) is not None
    _check_invariant(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*ONE_PER_FAMILY[:5], *UNET_TORCHVISION])
def test_unet_on_every_family_is_exactly_equivariant(name: str) -> None:
    model = _model(f"unet_{name}", num_classes=3)
    size = -(-max(64, model.min_input_size) // model.multiple) * model.multiple
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    assert _relative_change(model, x, SHIFTS[:4], equivariant=True) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18_aa4_aps", "mobilenet_v2_aa3_aps", "densenet121_aps"])
def test_compile_equals_eager(name: str) -> None:
    """float64: a low-pass on a small map leaves phase norms within float32 rounding of each other (docs/aps.md)."""
    model = _model(name, num_classes=5)
    other = torch.roll(torch.randn(2, 3, 64, 64, dtype=torch.float64), 1, 2)
    with torch.no_grad():
        assert torch.allclose(torch.compile(model)(other), model(other), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "resnet18_aps",
        "mobilenet_v2_aps",
        "densenet121_aa2_aps",
        "vgg11_aps",
        "shufflenet_v2_x0_5_aa4_aps",
        "regnet_x_400mf_aps",
    ],
)
def test_both_onnx_exporters_equal_eager(name: str) -> None:
    model = zoo.create(name, num_classes=5).eval()
    x, other = torch.randn(2, 3, 64, 64), torch.roll(torch.randn(2, 3, 64, 64), 1, 2)
    with torch.no_grad():
        ref = model(other)
    exporters = [True] if get_entry(name).family == "vgg" else [True, False]  # VGG: adaptive pool, see docs/aps.md
    for dynamo in exporters:
        buf = io.BytesIO()
        with torch.no_grad():
            torch.onnx.export(model, (x,), buf, dynamo=dynamo)
        sess = ort.InferenceSession(buf.getvalue())
        out = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: other.numpy()})[0])
        assert torch.allclose(out, ref, atol=1e-5), dynamo


@pytest.mark.slow
def test_unet_aps_compiled_equals_eager() -> None:
    model = zoo.create("unet_resnet18_aps", num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        compiled = torch.compile(model)
        for inp in (x, torch.roll(x, 1, 3)):
            assert torch.allclose(compiled(inp), model(inp), atol=1e-5)
