"""Every fast blur path equals the straightforward reference (pad + depthwise conv2d, max_pool2d)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.layers import BlurConv2d, BlurPool2d, MaxBlurPool2d, binomial_filter, blur_padding, kernels
from zoo.layers import blur as blur_mod

TOL = 1e-6


PAD_MODES = ("reflect", "replicate", "zero", "circular")
SIZES = [(1, 1), (1, 5), (2, 2), (3, 2), (5, 7), (8, 8), (13, 9)]  # tiny maps hit the replicate fallback


def _naive(x: torch.Tensor, k: int, stride: tuple[int, int], pad_mode: str) -> torch.Tensor:
    """Independent oracle: explicit loops over the padded map (float64)."""
    lo, hi, _, _ = blur_padding(k)
    h, w = x.shape[-2:]
    mode = pad_mode
    if (mode == "reflect" and max(lo, hi) >= min(h, w)) or (mode == "circular" and max(lo, hi) > min(h, w)):
        mode = "replicate"
    xp = F.pad(x.double(), (lo, hi, lo, hi), mode="constant" if mode == "zero" else mode)
    filt = binomial_filter(k, torch.float64)
    ho, wo = (xp.shape[-2] - k) // stride[0] + 1, (xp.shape[-1] - k) // stride[1] + 1
    out = torch.zeros(*x.shape[:2], ho, wo, dtype=torch.float64)
    for i, j in itertools.product(range(k), range(k)):
        out += (
            filt[i, j]
            * xp[:, :, i : i + (ho - 1) * stride[0] + 1 : stride[0], j : j + (wo - 1) * stride[1] + 1 : stride[1]]
        )
    return out


def _ref(x: torch.Tensor, k: int, stride: tuple[int, int], pad_mode: str) -> torch.Tensor:
    return BlurPool2d(None, k, stride, pad_mode, impl="reference")(x)


@pytest.mark.parametrize("k", range(1, 8))
@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("stride", [(2, 2), (1, 1), (3, 3), (2, 1)])
def test_fast_and_slices_equal_reference(k: int, pad_mode: str, stride: tuple[int, int]) -> None:
    torch.manual_seed(k)
    layer = BlurPool2d(3, k, stride, pad_mode, impl="fast")
    filt = layer.filt
    pads = blur_padding(k)
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        ref = _ref(x, k, stride, pad_mode)
        assert torch.allclose(ref.double(), _naive(x, k, stride, pad_mode), atol=TOL, rtol=0)
        fast = layer(x)
        assert fast.shape == ref.shape
        assert (fast - ref).abs().max().item() <= TOL, (k, pad_mode, stride, h, w)
        if k > 1:
            mode = kernels.resolve_pad_mode(pad_mode, pads, h, w)
            slices = kernels.blur_slices(x, filt, stride, pads, mode)
            assert (slices - ref).abs().max().item() <= TOL, (k, pad_mode, stride, h, w)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("pad_mode", PAD_MODES)
def test_channels_last_fast_path(k: int, pad_mode: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 11, 14)
    xcl = x.contiguous(memory_format=torch.channels_last)
    out = BlurPool2d(5, k, 2, pad_mode, impl="fast")(xcl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert (out - _ref(x, k, (2, 2), pad_mode)).abs().max().item() <= TOL


def test_non_contiguous_input_uses_a_correct_path() -> None:
    x = torch.randn(2, 4, 12, 10).transpose(-1, -2)  # neither NCHW- nor NHWC-contiguous
    assert (BlurPool2d(4, 4, impl="fast")(x) - _ref(x, 4, (2, 2), "reflect")).abs().max().item() <= TOL


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_dtypes(dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 9, 9).to(dtype)
    fast = BlurPool2d(3, 4, impl="fast")(x)
    ref = _ref(x, 4, (2, 2), "reflect")
    assert fast.dtype == dtype
    if dtype == torch.float64:  # matmul path, exact up to float64 rounding
        assert (fast - ref).abs().max().item() <= 1e-12
    else:  # half precision: the reference ops are used
        assert torch.equal(fast, ref)


def test_any_channel_count_at_run_time() -> None:
    layer = BlurPool2d(8, 4, impl="fast")  # channels is informational
    for c in (1, 3, 8, 17):
        x = torch.randn(1, c, 10, 10)
        assert (layer(x) - _ref(x, 4, (2, 2), "reflect")).abs().max().item() <= TOL


@pytest.mark.parametrize(("k", "pad_mode"), [(4, "reflect"), (3, "zero"), (5, "circular"), (2, "replicate")])
@pytest.mark.parametrize("channels_last", [False, True])
def test_autograd_matches_reference(k: int, pad_mode: str, channels_last: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 12, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if k == 4:  # gradcheck is slow: once per layout suffices (the others compare with the reference)
        small = x[:1, :1, :6, :7].clone().requires_grad_()
        assert torch.autograd.gradcheck(BlurPool2d(1, k, 2, pad_mode, impl="fast"), (small,))
    grads = []
    for impl in ("fast", "reference"):
        xi = x.clone().requires_grad_()
        out = BlurPool2d(3, k, 2, pad_mode, impl=impl)(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append(xi.grad)
    assert (grads[0] - grads[1]).abs().max().item() <= 1e-12


def test_band_built_in_inference_mode_works_with_autograd_later() -> None:
    layer = BlurPool2d(3, 4, impl="fast")
    with torch.inference_mode():
        layer(torch.randn(1, 3, 23, 29))  # first call caches the bands
    x = torch.randn(1, 3, 23, 29, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(("kernel", "padding"), [(2, 0), (3, 1), (3, 0), (1, 0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dense_max_equals_max_pool(kernel: int, padding: int, channels_last: bool) -> None:
    torch.manual_seed(2)
    for h, w in [(2, 2), (3, 5), (9, 8)]:
        if h < kernel - 2 * padding or w < kernel - 2 * padding:
            continue
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        fast = blur_mod.dense_max_pool(xa, kernel, padding, "fast")
        ref = F.max_pool2d(xb, kernel, stride=1, padding=padding)
        assert torch.equal(fast, ref)
        weights = torch.rand_like(ref)  # continuous random inputs: no ties, so identical gradients
        (fast * weights).sum().backward()
        (ref * weights).sum().backward()
        assert torch.allclose(xa.grad, xb.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", ["fast", pytest.param("compiled", marks=pytest.mark.slow)])
def test_max_blur_and_blur_conv_match_reference(impl: str) -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 4, 15, 12)
    for kernel, padding in [(2, 0), (3, 1)]:
        ref = MaxBlurPool2d(4, kernel, 2, padding, 4, impl="reference")(x)
        out = MaxBlurPool2d(4, kernel, 2, padding, 4, impl=impl)(x)
        assert (out - ref).abs().max().item() <= TOL
    conv = BlurConv2d(4, 6, 1, 2, impl="reference")
    fast = BlurConv2d(4, 6, 1, 2, impl=impl)
    fast.load_state_dict(conv.state_dict())
    assert (fast(x) - conv(x)).abs().max().item() <= TOL


@pytest.mark.parametrize(
    "pad_mode", ["reflect", *(pytest.param(m, marks=pytest.mark.slow) for m in ("replicate", "zero", "circular"))]
)
def test_compiled_mode_equals_reference(pad_mode: str) -> None:
    torch.manual_seed(4)
    layer = BlurPool2d(3, 4, 2, pad_mode, impl="compiled")
    for shape in [(2, 3, 10, 13), (1, 3, 2, 2)]:  # the second one takes the replicate fallback
        x = torch.randn(shape)
        assert (layer(x) - _ref(x, 4, (2, 2), pad_mode)).abs().max().item() <= TOL


def test_global_mode_switch_and_errors() -> None:
    assert blur_mod.get_blur_mode() == "fast"
    layer = BlurPool2d(3, 4)
    assert layer.impl is None
    with blur_mod.blur_mode("reference"):
        assert blur_mod.get_blur_mode() == "reference"
        assert blur_mod._layer_mode(layer.impl) == "reference"
    assert blur_mod.get_blur_mode() == "fast"
    assert blur_mod._layer_mode("compiled") == "compiled"
    with pytest.raises(ValueError, match="unknown blur mode 'turbo'; valid modes: fast, reference, compiled"):
        blur_mod.set_blur_mode("turbo")
    with pytest.raises(ValueError, match="unknown blur mode"):
        BlurPool2d(3, 4, impl="turbo")
    assert blur_mod.get_blur_mode() == "fast"


def test_no_state_dict_entries_and_fx_leaf() -> None:
    layer = MaxBlurPool2d(4, 2, 2, 0, 4, impl="fast")
    assert layer.state_dict() == {}
    graph = torch.fx.symbolic_trace(layer).graph
    targets = {n.target for n in graph.nodes if n.op == "call_function"}
    assert blur_mod.blur_downsample in targets and blur_mod.dense_max_pool in targets


def test_torchscript_uses_fast_kernels_with_reference_outputs() -> None:
    x = torch.randn(2, 4, 11, 9)
    for impl in (None, "fast", "compiled", "reference"):
        scripted = torch.jit.script(MaxBlurPool2d(4, 2, 2, 0, 4, impl=impl))
        ref = MaxBlurPool2d(4, 2, 2, 0, 4, impl="reference")(x)
        assert (scripted(x) - ref).abs().max().item() <= TOL


def test_torch_compile_traces_blur_layers_without_graph_breaks() -> None:
    torch._dynamo.reset()
    x = torch.randn(2, 4, 12, 12)
    for layer in (BlurPool2d(4, 4), MaxBlurPool2d(4, 2, 2, 0, 4), BlurConv2d(4, 6, 1, 2)):
        compiled = torch.compile(layer, fullgraph=True, backend="eager")  # fullgraph raises on a graph break
        ref = layer(x)
        assert (compiled(x) - ref).abs().max().item() <= TOL


def test_whole_model_fast_equals_reference_relative() -> None:
    torch.manual_seed(0)
    model = zoo.create("resnet18_aa4").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast = model(x)
        with blur_mod.blur_mode("reference"):
            ref = model(x)
    assert not torch.equal(fast, torch.zeros_like(fast))
    assert (fast - ref).abs().max().item() <= 1e-6 * max(1.0, ref.abs().max().item())
