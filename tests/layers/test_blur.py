"""Properties of the blur layers (hypothesis) and their documented edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.layers import PAD_MODES, BlurConv2d, BlurPool2d, MaxBlurPool2d, binomial_filter, blur_padding

filter_sizes = st.integers(min_value=1, max_value=9)
fast = settings(max_examples=40, deadline=None)


@fast
@given(k=filter_sizes)
def test_filter_sums_to_one_and_is_symmetric(k: int) -> None:
    filt = binomial_filter(k, torch.float64)
    assert filt.shape == (k, k)
    assert math.isclose(filt.sum().item(), 1.0, rel_tol=1e-12)
    assert torch.equal(filt, filt.T)
    assert torch.equal(filt, filt.flip(0))
    assert (filt > 0).all()


def test_filter_rows_are_binomial() -> None:
    row = binomial_filter(5, torch.float64)[2] / binomial_filter(5, torch.float64)[2, 0]
    assert row.tolist() == [1.0, 4.0, 6.0, 4.0, 1.0]


@fast
@given(k=filter_sizes)
def test_official_padding(k: int) -> None:
    left, right, top, bottom = blur_padding(k)
    assert (left, top) == ((k - 1) // 2, (k - 1) // 2)
    assert (right, bottom) == (math.ceil((k - 1) / 2), math.ceil((k - 1) / 2))


@fast
@given(
    h=st.integers(1, 17),
    w=st.integers(1, 17),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    chans=st.integers(1, 4),
)
def test_filter_size_one_is_plain_subsampling(h: int, w: int, sh: int, sw: int, chans: int) -> None:
    x = torch.randn(2, chans, h, w)
    out = BlurPool2d(filter_size=1, stride=(sh, sw))(x)
    assert torch.equal(out, x[:, :, ::sh, ::sw])


@fast
@given(
    k=filter_sizes,
    stride=st.integers(1, 3),
    blocks=st.integers(3, 6),
    dh=st.integers(-4, 4),
    dw=st.integers(-4, 4),
    chans=st.integers(1, 3),
)
def test_circular_blur_commutes_with_shifts_by_stride_multiples(
    k: int, stride: int, blocks: int, dh: int, dw: int, chans: int
) -> None:
    size = stride * blocks  # divisible by the stride: circular shift-equivariance is exact
    if max(blur_padding(k)) > size:
        return  # the small-map fallback applies instead; covered below
    x = torch.randn(1, chans, size, size + stride, dtype=torch.float64)
    blur = BlurPool2d(filter_size=k, stride=stride, pad_mode="circular").double()
    shifted = blur(torch.roll(x, (stride * dh, stride * dw), dims=(2, 3)))
    assert torch.allclose(shifted, torch.roll(blur(x), (dh, dw), dims=(2, 3)), atol=1e-12)


@fast
@given(
    k=filter_sizes,
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    stride=st.integers(1, 3),
    mode=st.sampled_from(PAD_MODES),
)
def test_output_size_is_ceil_for_every_size_and_mode(k: int, h: int, w: int, stride: int, mode: str) -> None:
    out = BlurPool2d(filter_size=k, stride=stride, pad_mode=mode)(torch.randn(1, 2, h, w))
    assert out.shape == (1, 2, math.ceil(h / stride), math.ceil(w / stride))
    assert torch.isfinite(out).all()


def test_blur_of_constant_is_constant_for_every_mode_but_zero() -> None:
    x = torch.full((1, 3, 9, 9), 2.5)
    for mode in ("reflect", "replicate", "circular"):
        assert torch.allclose(BlurPool2d(filter_size=5, pad_mode=mode)(x), torch.full((1, 3, 5, 5), 2.5))
    zero = BlurPool2d(filter_size=5, pad_mode="zero")(x)
    assert zero[0, 0, 0, 0] < 2.5  # zero padding darkens the border
    assert torch.isclose(zero[0, 0, 2, 2], torch.tensor(2.5))


def test_small_maps_fall_back_to_replicate() -> None:
    """A 2x2 or 1x1 map cannot be reflect-padded by 2: the layer pads with replicate instead."""
    blur = BlurPool2d(filter_size=4, pad_mode="reflect")
    for size in (1, 2):
        x = torch.randn(1, 3, size, size)
        expected = F.conv2d(
            F.pad(x, blur_padding(4), mode="replicate"),
            binomial_filter(4)[None, None].expand(3, 1, 4, 4),
            stride=2,
            groups=3,
        )
        assert torch.allclose(blur(x), expected)
    one = torch.randn(1, 3, 1, 1)
    assert torch.allclose(blur(one), one)  # a replicated single pixel blurs to itself


def test_reflect_matches_explicit_padding_on_normal_maps() -> None:
    x = torch.randn(2, 4, 11, 8)
    ref = F.conv2d(
        F.pad(x, (1, 2, 1, 2), mode="reflect"), binomial_filter(4)[None, None].expand(4, 1, 4, 4), stride=2, groups=4
    )
    assert torch.allclose(BlurPool2d(filter_size=4)(x), ref, atol=1e-6)


def test_any_channel_count_and_no_state() -> None:
    blur = BlurPool2d(8, filter_size=3)
    for chans in (1, 8, 13):
        assert blur(torch.randn(1, chans, 6, 6)).shape == (1, chans, 3, 3)
    assert blur.state_dict() == {}
    assert MaxBlurPool2d(4).state_dict() == {}
    assert set(BlurConv2d(4, 8).state_dict()) == {"weight"}


def test_max_blur_pool_is_dense_max_then_blur() -> None:
    x = torch.randn(2, 3, 10, 10)
    layer = MaxBlurPool2d(3, kernel_size=3, padding=1, filter_size=4)
    expected = BlurPool2d(filter_size=4)(F.max_pool2d(x, 3, stride=1, padding=1))
    assert torch.equal(layer(x), expected)


def test_blur_conv_equals_strided_conv_of_blurred_input() -> None:
    torch.manual_seed(0)
    layer = BlurConv2d(4, 6, kernel_size=1, stride=2, filter_size=3).double()
    x = torch.randn(1, 4, 9, 9, dtype=torch.float64)
    conv_then_blur = BlurPool2d(filter_size=3)(F.conv2d(x, layer.weight))  # a 1x1 conv commutes with the blur
    assert torch.allclose(layer(x), conv_then_blur, atol=1e-12)


def test_stride_pair() -> None:
    assert BlurPool2d(filter_size=3, stride=(2, 1))(torch.randn(1, 1, 8, 8)).shape == (1, 1, 4, 8)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True])
def test_bad_filter_size(bad: object) -> None:
    with pytest.raises(ValueError, match="filter_size must be an integer >= 1"):
        BlurPool2d(filter_size=bad)  # type: ignore[arg-type]


def test_bad_pad_mode_and_stride() -> None:
    with pytest.raises(ValueError, match="unknown pad_mode 'mirror'; valid modes: reflect, replicate, zero, circular"):
        BlurPool2d(pad_mode="mirror")
    with pytest.raises(ValueError, match="stride"):
        BlurPool2d(stride=0)


def test_official_aliases_accepted() -> None:
    assert BlurPool2d(pad_mode="refl").pad_mode == "reflect"
    assert BlurPool2d(pad_mode="repl").pad_mode == "replicate"
