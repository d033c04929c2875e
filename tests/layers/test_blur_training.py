"""Training paths of the fast kernels: the blur's custom autograd function (transposed banded
product, no saved activation), the dense max's single-scatter backward, large filter sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.layers import BlurConv2d, BlurPool2d, MaxBlurPool2d, binomial_filter
from zoo.layers import blur as blur_mod


def _saved_during(fn, *args) -> tuple[torch.Tensor, list[torch.Tensor]]:  # type: ignore[no-untyped-def]
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn(*args)
    return out, saved


def _grad_fns(out: torch.Tensor) -> set[str]:
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or type(node).__name__ in seen:
            continue
        seen.add(type(node).__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    return seen


@pytest.mark.parametrize("channels_last", [False, True])
def test_blur_backward_saves_only_the_constant_bands(channels_last: bool) -> None:
    x = torch.randn(2, 3, 32, 30, requires_grad=True)
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x * 1
    out, saved = _saved_during(BlurPool2d(3, 4, impl="fast"), xin)
    assert "_BandedBlurBackward" in _grad_fns(out)
    assert sorted(tuple(t.shape) for t in saved) == [(30, 15), (32, 16)]  # the two bands, no activation


@pytest.mark.parametrize(("k", "pad_mode", "stride"), [(4, "reflect", (2, 2)), (3, "zero", (2, 1)),
                                                       (5, "circular", (3, 3)), (2, "replicate", (1, 2))])  # fmt: skip
@pytest.mark.parametrize("channels_last", [False, True])
def test_blur_gradients_match_reference(k: int, pad_mode: str, stride: tuple[int, int], channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    layer = BlurPool2d(3, k, stride, pad_mode, impl="fast")
    small = x[:1, :2, :7, :8].clone().requires_grad_()
    assert torch.autograd.gradcheck(layer, (small,))
    assert torch.autograd.gradgradcheck(layer, (small,))
    grads = []
    for impl in ("fast", "reference"):
        xi = x.detach().clone().requires_grad_()
        out = BlurPool2d(3, k, stride, pad_mode, impl=impl)(xi)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        (out * weight).sum().backward()
        grads.append(xi.grad)
    assert (grads[0] - grads[1]).abs().max().item() <= 1e-12


def test_channels_last_kept_through_forward_and_backward() -> None:
    x = torch.randn(2, 8, 20, 18).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = BlurPool2d(8, 4, impl="fast")(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.backward(torch.randn(out.shape).contiguous(memory_format=torch.channels_last))
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("kernel", "padding"), [(2, 0), (3, 1), (3, 0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dense_max_backward_saves_no_mask_and_equals_max_pool_on_ties(
    kernel: int, padding: int, channels_last: bool
) -> None:
    torch.manual_seed(1)
    x = torch.randint(0, 3, (2, 3, 9, 8)).double()  # many exact ties
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, saved = _saved_during(blur_mod.dense_max_pool, xa, kernel, padding, "fast")
    names = _grad_fns(out)
    assert "MaximumBackward0" not in names  # never one saved mask per tap
    if channels_last:  # the native channels-last kernel: input + argmax indices
        assert "MaxPool2DWithIndicesBackward0" in names and len(saved) == 2
    else:  # recomputed from the input alone
        assert "_DenseMaxBackward" in names and [t.shape for t in saved] == [x.shape]
    ref = F.max_pool2d(xb, kernel, stride=1, padding=padding)
    assert torch.equal(out, ref)
    weights = torch.rand_like(ref)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=0, atol=1e-12)  # a tie given to another input differs by O(1)


@pytest.mark.parametrize(("kernel", "padding"), [(2, 0), (3, 1), (2, 1)])
def test_dense_max_recomputing_backward_passes_gradcheck(kernel: int, padding: int) -> None:
    torch.manual_seed(4)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)  # continuous: no ties
    fn = lambda t: blur_mod.dense_max_pool(t, kernel, padding, "fast")  # noqa: E731
    assert "_DenseMaxBackward" in _grad_fns(fn(x))
    assert torch.autograd.gradcheck(fn, (x,))


def test_max_blur_training_step_matches_reference() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 4, 15, 12, dtype=torch.float64)
    grads = []
    for impl in ("fast", "reference"):
        xi = x.clone().requires_grad_()
        conv = BlurConv2d(4, 6, 1, 2, impl=impl).double()
        torch.manual_seed(3)
        torch.nn.init.normal_(conv.weight)
        out = conv(MaxBlurPool2d(4, 2, 2, 0, 4, impl=impl)(xi))
        out.square().sum().backward()
        grads.append((xi.grad, conv.weight.grad))
    for fast, ref in zip(*grads):
        assert (fast - ref).abs().max().item() <= 1e-10


@pytest.mark.parametrize("k", [513, 600, 1030])
def test_large_filter_sizes_stay_finite_and_normalised(k: int) -> None:
    filt = binomial_filter(k, torch.float64)
    assert torch.isfinite(filt).all() and math.isclose(filt.sum().item(), 1.0, rel_tol=1e-12)
    m = (k - 1) // 2
    log_center = math.lgamma(k) - math.lgamma(m + 1) - math.lgamma(k - m) - (k - 1) * math.log(2)
    assert math.isclose(filt[m, m].item(), math.exp(2 * log_center), rel_tol=1e-9)
    assert torch.isfinite(binomial_filter(k)).all()  # float32 too (the far tails underflow to 0)


def test_large_filter_layer_outputs() -> None:
    x = torch.randn(1, 2, 20, 24)
    for impl in ("fast", "reference"):
        ones = BlurPool2d(2, 513, impl=impl)(torch.ones(1, 2, 20, 24))
        assert torch.allclose(ones, torch.ones_like(ones), atol=1e-5), impl  # a normalised filter keeps a constant
    ref64 = BlurPool2d(2, 600, impl="reference")(x.double())  # 360k taps: compare in float64
    # both use the float32 filter buffer, whose rounded 2-D taps are separable only up to ~1e-8
    assert (BlurPool2d(2, 600, impl="fast")(x.double()) - ref64).abs().max().item() <= 1e-8
    fast = BlurPool2d(2, 600, impl="fast")(x)
    assert torch.isfinite(fast).all() and (fast - ref64).abs().max().item() <= 1e-6
