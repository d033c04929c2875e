"""Every blur mode on CUDA in float32, float16 and bfloat16 (forward and backward), and a whole model
under bf16 autocast. Marked ``cuda``: ``make test`` deselects them; a bare run
without CUDA skips them unless ``ZOO_REQUIRE_CUDA=1`` (``scripts/gpu_check.sh``
sets it, so there a missing GPU fails instead of skipping)."""

from __future__ import annotations

import os

import pytest
import torch

import zoo
from zoo.layers import BLUR_MODES, PAD_MODES, BlurConv2d, BlurPool2d, MaxBlurPool2d

# `cuda`: deselected by `make test`/`make test-all` (CPU machines); a bare pytest run without a GPU skips them.
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available() and not os.environ.get("ZOO_REQUIRE_CUDA"), reason="needs a CUDA device"
    ),
]

TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}  # relative to max |reference|
DTYPES = list(TOL)
# compiled: one pad mode and two layers (each shape/dtype/layout compiles a kernel: keeps the run short)
CASES = [(m, p) for m in ("fast", "reference") for p in PAD_MODES] + [("compiled", "reflect")]


def _layers(impl: str, pad_mode: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    layers = {
        "blur": BlurPool2d(8, 4, 2, pad_mode, impl=impl),
        "maxblur": MaxBlurPool2d(8, 2, 2, 0, 4, pad_mode, impl=impl),
        "blur_k5_s21": BlurPool2d(8, 5, (2, 1), pad_mode, impl=impl),
        "maxblur_k3": MaxBlurPool2d(8, 3, 2, 1, 3, pad_mode, impl=impl),
        "blurconv": BlurConv2d(8, 6, 1, 2, filter_size=4, pad_mode=pad_mode, impl=impl),
    }
    return dict(list(layers.items())[:2]) if impl == "compiled" else layers


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert got.shape == want.shape, what
    err = (got.detach().double().cpu() - want).abs().max().item()
    assert err <= TOL[dtype] * max(1.0, want.abs().max().item()), (what, err)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("impl", "pad_mode"), CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_blur_modes_on_cuda(impl: str, pad_mode: str, dtype: torch.dtype, channels_last: bool) -> None:
    x64 = torch.randn(2, 8, 23, 18, dtype=torch.float64)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    refs = _layers("reference", pad_mode)
    for name, layer in _layers(impl, pad_mode).items():  # the same seed: equal BlurConv2d weights
        layer.load_state_dict(refs[name].state_dict())
        ref = refs[name].double()
        xr = x64.clone().requires_grad_()
        want = ref(xr)
        grad = torch.randn_like(want)
        want.backward(grad)
        layer = layer.to(device="cuda", dtype=dtype)
        xc = x64.to(device="cuda", dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
        got = layer(xc)
        assert got.is_cuda and got.dtype == dtype, name
        _close(got, want.detach(), dtype, f"{name} forward")
        got.backward(grad.to(device="cuda", dtype=dtype))
        _close(xc.grad, xr.grad, dtype, f"{name} input gradient")
        if isinstance(layer, BlurConv2d):
            _close(layer.weight.grad, ref.weight.grad, dtype, f"{name} weight gradient")


@pytest.mark.parametrize("mode", BLUR_MODES)
def test_resnet_on_cuda_fp32_and_bf16_autocast(mode: str) -> None:
    torch.manual_seed(0)
    model = zoo.create("resnet18_aa4").eval()
    x = torch.randn(4, 3, 96, 96)
    with torch.no_grad(), zoo.layers.blur_mode("reference"):
        want = model(x).double()
    model = model.cuda()
    with zoo.layers.blur_mode(mode):
        with torch.no_grad():
            fp32 = model(x.cuda())
            with torch.autocast("cuda", dtype=torch.bfloat16):
                bf16 = model(x.cuda())
        scale = want.abs().max().item()
        assert (fp32.double().cpu() - want).abs().max().item() <= 1e-3 * scale
        assert (bf16.double().cpu() - want).abs().max().item() <= 5e-2 * scale
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x.cuda()), torch.zeros(4, dtype=torch.long, device="cuda"))
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
