"""zoo.antialias's torch.fx fallback: custom blocks with functional activations and pools, and what must raise."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers import BlurPool2d, MaxBlurPool2d
from zoo.models.antialias import antialias


class ConvBNReLU(nn.Module):  # functional ReLU: no Sequential, no known block
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class Residual(nn.Module):  # strided 3x3 with x.relu(), strided 1x1 projection, functional ReLU after the sum
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = nn.Conv2d(cin, cout, 1, 2, bias=False)
        self.proj_bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.proj_bn(self.proj(x)))


class NoAct(nn.Module):  # strided conv + norm, no activation
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 1)
        self.norm = nn.GroupNorm(4, c)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class Pool(nn.Module):  # functional max-pool
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.silu(self.conv(x)), 2)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, 8, 1)
        self.b1 = ConvBNReLU(8, 16, 2)
        self.b2 = Residual(16, 32)
        self.b3 = NoAct(32)
        self.b4 = Pool(32, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.b4(self.b3(self.b2(self.b1(self.stem(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Expected(Net):
    """``Net`` anti-aliased by hand: blur after each activation (after the norm in ``b3``), before the 1x1."""

    def __init__(self) -> None:
        super().__init__()
        for conv in (self.b1.conv, self.b2.conv1, self.b2.proj, self.b3.conv):
            conv.stride = (1, 1)
        self.blur1, self.blur2, self.blur_proj, self.blur3 = (BlurPool2d(None, 4, 2) for _ in range(4))
        self.pool4 = MaxBlurPool2d(None, 2, 2, 0, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blur1(self.b1(self.stem(x)))
        b = self.b2
        out = b.bn2(b.conv2(self.blur2(b.bn1(b.conv1(x)).relu())))
        x = torch.relu(out + b.proj_bn(b.proj(self.blur_proj(x))))
        x = self.blur3(self.b3(x))
        x = self.pool4(F.silu(self.b4.conv(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _randomized(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():  # non-trivial norm statistics so a misplaced blur shows in the logits
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _input(size: int = 48, n: int = 2) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


STRIDED = ["b1.conv", "b2.conv1", "b2.proj", "b3.conv"]


def test_custom_blocks_are_rewritten_as_by_hand() -> None:
    base = _randomized(Net(), 0)
    aa = antialias(base).eval()
    assert aa is not base and type(aa) is Net and base.b1.conv.stride == (2, 2)  # a copy, still a Net
    assert set(aa.state_dict()) == set(base.state_dict())
    aa.load_state_dict(base.state_dict(), strict=True)
    assert isinstance(aa.b1, torch.fx.GraphModule) and type(aa.stem) is ConvBNReLU  # only what needed it
    ref = Expected().eval()
    ref.load_state_dict(base.state_dict(), strict=True)
    x = _input()
    with torch.no_grad():
        want, got = ref(x), aa(x)
        assert base(x).shape == got.shape == (2, 10)
    assert torch.allclose(got, want, atol=1e-6, rtol=0), (got - want).abs().max()


class _BlurLeaves(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (BlurPool2d, MaxBlurPool2d)) or super().is_leaf_module(m, qualname)


def _stride1(m: nn.Module) -> bool:
    s = m.stride
    return all(int(v) == 1 for v in (s if isinstance(s, (tuple, list)) else (s,)))


def test_no_strided_op_left_and_each_is_followed_by_a_blur() -> None:
    aa = antialias(Net())
    graph = _BlurLeaves().trace(aa)
    mods = dict(aa.named_modules())
    calls = {n.target: n for n in graph.nodes if n.op == "call_module"}
    assert not [n for n in graph.nodes if n.op == "call_function" and n.target in (F.max_pool2d, F.avg_pool2d)]
    assert isinstance(mods["b4.aa"], MaxBlurPool2d) and calls["b4.aa"].args[0].target is F.silu
    for target in calls:
        if isinstance(mods[target], (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            assert _stride1(mods[target]), target
    blurs = [t for t in calls if isinstance(mods[t], BlurPool2d)]
    assert len(blurs) == len(STRIDED)
    for path in STRIDED:
        if mods[path].kernel_size == (1, 1):  # the 1x1 rule: blur, then the conv (traced through: conv2d at s=1)
            assert isinstance(mods[f"{path}.blur"], BlurPool2d) and calls[f"{path}.blur"].users, path
            continue
        node = calls[path]
        for _ in range(3):  # conv -> [norm] -> [activation] -> blur, along single users
            (node,) = node.users
            if node.op == "call_module" and isinstance(mods[node.target], BlurPool2d):
                break
        else:
            raise AssertionError(f"no blur after {path}")


def test_shift_moves_logits_less() -> None:
    ratios = []
    for seed in (0, 1, 2):
        base = _randomized(Net(), seed)
        aa = antialias(base).eval()
        x = _input(64, 4)
        with torch.no_grad():
            moved = [(m(torch.roll(x, 1, 3)) - m(x)).abs().mean() / m(x).abs().mean() for m in (base, aa)]
        ratios.append((moved[1] / moved[0]).item())
    print(f"shift change ratio antialias/base per seed: {[round(r, 3) for r in ratios]}")
    assert max(ratios) < 1.0, ratios


def test_script_trace_fx_compile_match_eager() -> None:
    aa = _randomized(antialias(Net()), 0)
    x = _input(32)
    with torch.no_grad():
        want = aa(x)
        for out in (torch.jit.script(aa)(x), torch.jit.trace(aa, x)(x), torch.fx.symbolic_trace(aa)(x)):
            assert torch.allclose(out, want, atol=1e-6, rtol=1e-5)
        assert torch.allclose(torch.compile(aa)(x), want, atol=1e-5, rtol=1e-4)


def test_root_as_host_returns_a_graph_module() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 1, 1)
            self.down = nn.Conv2d(8, 8, 3, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            return F.gelu(self.down(F.relu(self.conv(x))))

    base = Flat().eval()
    aa = antialias(base)
    assert isinstance(aa, torch.fx.GraphModule) and aa.down.stride == (1, 1) and isinstance(aa.aa, BlurPool2d)
    aa.load_state_dict(base.state_dict(), strict=True)
    x = _input(32)
    with torch.no_grad():
        dense = F.conv2d(F.relu(base.conv(x)), base.down.weight, base.down.bias, padding=1)  # down at stride 1
        want = BlurPool2d(8, 4, 2)(F.gelu(dense))
        assert torch.allclose(aa(x), want, atol=1e-6)


class Slicing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)[:, :, ::2, ::2]


class Branchy(nn.Module):  # data-dependent control flow: fx cannot trace it
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, 2, 1)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.conv(x))
        return F.relu(y) if y.mean() > 0 else y


def _fingerprint(model: nn.Module) -> tuple:
    strides = tuple((p, getattr(m, "stride", None)) for p, m in model.named_modules())
    return strides, tuple(type(m) for m in model.modules()), tuple(model.state_dict())


@pytest.mark.parametrize(
    ("block", "match"),
    [
        (Slicing, r"functional subsampling in .*Net.*b2: getitem \(slicing with step 2\)"),
        (Branchy, r"strided modules b2\.conv of .*Net.*b2\.conv: no enclosing block could be traced.*b2 \("),
    ],
)
@pytest.mark.parametrize("inplace", [False, True])
def test_unplaceable_raises_and_rewrites_nothing(block: type[nn.Module], match: str, inplace: bool) -> None:
    model = Net()
    model.b2 = block()
    before = _fingerprint(model)
    with pytest.raises(ValueError, match=match) as info:
        antialias(model, inplace=inplace)
    assert "\n" not in str(info.value) and "supported:" in str(info.value)
    assert _fingerprint(model) == before  # nothing half-rewritten, b1 (placeable) included
    assert model.b1.conv.stride == (2, 2) and type(model.b1) is ConvBNReLU


def test_other_functional_ops_raise() -> None:
    class Ops(nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind
            self.w = nn.Parameter(torch.randn(8, 8, 3, 3))

        def forward(self, x: Tensor) -> Tensor:
            if self.kind == "conv":
                return F.conv2d(x, self.w, stride=2)
            return F.interpolate(x, scale_factor=0.5)

    for kind, what in (("conv", "strided F.conv2d"), ("interp", "F.interpolate down")):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), Ops(kind))
        with pytest.raises(ValueError, match=rf"functional subsampling in .*Sequential.*1: \w+ \({what}"):
            antialias(model)


def test_conv_with_nothing_after_it_raises() -> None:
    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(x) * 2

    model = nn.Sequential(nn.Conv2d(3, 8, 3), Bare())
    with pytest.raises(ValueError, match=r"strided modules 1\.conv of .*1\.conv: no norm or activation follows it"):
        antialias(copy.deepcopy(model), inplace=True)


def test_copies_keep_children_and_keys() -> None:
    class Unused(ConvBNReLU):  # a child the forward never calls still keeps its state-dict keys
        def __init__(self) -> None:
            super().__init__(8, 16, 2)
            self.spare = nn.Linear(2, 2)
            self.tag = "kept"

    model = Net()
    model.b1 = Unused()
    aa = antialias(model)
    for out in (aa, copy.deepcopy(aa), antialias(aa)):
        assert set(out.state_dict()) == set(model.state_dict()) and out.b1.tag == "kept"
        assert out.b1.conv.stride == (1, 1) and isinstance(out.b1.aa, BlurPool2d)
    blurs = [p for p, m in antialias(aa).named_modules() if isinstance(m, BlurPool2d)]
    assert blurs == [p for p, m in aa.named_modules() if isinstance(m, BlurPool2d)] and len(blurs) == 5  # not twice
