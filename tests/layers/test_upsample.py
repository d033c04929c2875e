"""BlurUpsample2d: an independent loop reference, mean preservation, circular shift commutation, gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.layers.upsample import BlurUpsample2d, blur_upsample

NP_MODES = {"reflect": "reflect", "replicate": "edge", "zero": "constant", "circular": "wrap"}


def loop_reference(x: np.ndarray, scale: int, k: int, mode: str) -> np.ndarray:
    """Per output pixel: y[m] = s * sum_t f[t] z[m + t - lo], z = zero insertion of x extended by ``mode``."""
    row = np.array([math.comb(k - 1, i) for i in range(k)], dtype=np.float64) / 2 ** (k - 1)
    lo = (k - 1) // 2
    h, w = x.shape[-2:]
    big = 3 * k + 3
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(big, big), (big, big)], mode=NP_MODES[mode])
    out = np.zeros((*x.shape[:-2], scale * h, scale * w))
    for m in range(scale * h):
        for n in range(scale * w):
            acc = 0.0
            for t in range(k):
                for u in range(k):
                    i, j = m + t - lo, n + u - lo
                    if i % scale or j % scale:
                        continue  # an inserted zero
                    acc = acc + row[t] * row[u] * xp[..., i // scale + big, j // scale + big]
            out[..., m, n] = scale * scale * acc
    return out


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zero", "circular"])
@pytest.mark.parametrize(("scale", "k"), [(2, 4), (2, 3), (2, 1), (3, 5), (3, 2), (1, 3)])
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_equals_loop_reference(mode: str, scale: int, k: int, impl: str) -> None:
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(scale * 10 + k))
    got = BlurUpsample2d(3, scale, k, mode, impl=impl).double()(x)
    assert got.shape == (2, 3, 5 * scale, 4 * scale)
    np.testing.assert_allclose(got.numpy(), loop_reference(x.numpy(), scale, k, mode), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("k", [2, 4, 5])
def test_constant_map_stays_constant_at_scale_two(mode: str, k: int) -> None:
    out = blur_upsample(torch.full((1, 2, 6, 5), 3.25, dtype=torch.float64), 2, k, mode)
    torch.testing.assert_close(out, torch.full_like(out, 3.25), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("scale", "k"), [(2, 4), (3, 3), (3, 5), (4, 4)])
def test_mean_of_a_circular_map_is_preserved(scale: int, k: int) -> None:
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    out = blur_upsample(x, scale, k, "circular")
    torch.testing.assert_close(out.mean((-2, -1)), x.mean((-2, -1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("scale", "k"), [(2, 4), (2, 3), (3, 5)])
@pytest.mark.parametrize("d", [(1, 0), (0, -3), (2, 5), (-1, 1)])
def test_commutes_with_circular_shifts(scale: int, k: int, d: tuple[int, int]) -> None:
    up = BlurUpsample2d(scale=scale, filter_size=k, pad_mode="circular").double()
    x = torch.randn(2, 2, 6, 8, dtype=torch.float64)
    left = up(torch.roll(x, d, dims=(-2, -1)))
    right = torch.roll(up(x), (scale * d[0], scale * d[1]), dims=(-2, -1))
    torch.testing.assert_close(left, right, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("mode", ["reflect", "zero", "circular"])
def test_gradcheck(impl: str, mode: str) -> None:
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: blur_upsample(t, 2, 4, mode, impl), (x,))


def test_scripted_equals_eager_and_no_state() -> None:
    up = BlurUpsample2d(4, 2, 4)
    x = torch.randn(1, 4, 5, 6)
    torch.testing.assert_close(torch.jit.script(up)(x), up(x), rtol=0, atol=0)
    assert up.state_dict() == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 0}, "scale must be"),
        ({"filter_size": 0}, "filter_size"),
        ({"pad_mode": "x"}, "pad_mode"),
        ({"impl": "gpu"}, "impl"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BlurUpsample2d(**kwargs)
