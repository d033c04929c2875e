"""APS layers: the phase of largest norm, selection and unpooling as inverses, circular shifts, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.layers import ApsConv2d, ApsDown2d, ApsMaxPool2d, CircularConv2d, aps_phase, aps_select, aps_unpool


def test_phase_is_the_component_of_largest_norm() -> None:
    x = torch.zeros(3, 2, 4, 4)
    x[0, :, 1::2, 0::2] = 1.0  # phase (1, 0) -> 2
    x[1, :, 0::2, 1::2] = 1.0  # phase (0, 1) -> 1
    x[2, 0, 1, 1] = 5.0  # phase (1, 1) -> 3 by both norms
    x[2, 1, 0::2, 0::2] = 1.0  # L1 4 on phase 0 (< 5), L2 2 (< 5)
    assert aps_phase(x).tolist() == [2, 1, 3]
    assert torch.equal(aps_select(x, aps_phase(x))[0], torch.ones(2, 2, 2))


def test_l1_and_l2_can_disagree() -> None:
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, 0, 0] = 3.0  # phase 0: one large value (L1 3, L2 3)
    x[0, 0, 0, 1], x[0, 0, 0, 3] = 2.0, 2.0  # phase 1: two values (L1 4, L2 2.83)
    assert aps_phase(x, p=2).item() == 0
    assert aps_phase(x, p=1).item() == 1


@pytest.mark.parametrize("stride", [2, 3])
def test_unpool_inverts_select(stride: int) -> None:
    x = torch.randn(4, 3, 6 * stride // 2 * 2, 6 * stride // 2 * 2)
    phase = aps_phase(x, stride)
    y = aps_select(x, phase, stride)
    back = aps_unpool(y, phase, stride)
    assert torch.equal(aps_select(back, phase, stride), y)
    mask = aps_unpool(torch.ones_like(y), phase, stride)
    assert torch.equal(back, x * mask)  # the chosen phase is x, the others are zero
    assert mask.sum().item() == y.numel()


@pytest.mark.parametrize("filter_size", [1, 3, 4])
def test_down_is_invariant_after_global_pool_and_shifts_the_map(filter_size: int) -> None:
    torch.manual_seed(0)
    layer = ApsDown2d(3, filter_size)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    y = layer(x)
    for d in [(1, 0), (0, 1), (1, 1), (5, -3)]:
        ys = layer(torch.roll(x, d, (2, 3)))
        assert torch.allclose(ys.mean((2, 3)), y.mean((2, 3)), rtol=1e-12, atol=1e-12)
        for n in range(2):  # each sample's map is the same map, circularly shifted by an integer amount
            assert any(
                torch.allclose(ys[n], torch.roll(y[n], (a, b), (1, 2)), atol=1e-12) for a in range(8) for b in range(8)
            ), (d, n)


def test_a_fixed_phase_is_not_invariant() -> None:
    x = torch.randn(2, 3, 16, 16)
    fixed = x[:, :, ::2, ::2]
    shifted = torch.roll(x, 1, 3)[:, :, ::2, ::2]
    assert not torch.allclose(fixed.mean((2, 3)), shifted.mean((2, 3)), atol=1e-3)


def test_maxpool_and_conv_forms_keep_sizes_and_keys() -> None:
    x = torch.randn(1, 4, 12, 12)
    assert ApsMaxPool2d(4, 3, 1, filter_size=4)(x).shape == (1, 4, 6, 6)
    assert ApsMaxPool2d(4, 2, 0)(x).shape == (1, 4, 6, 6)
    conv = nn.Conv2d(4, 8, 11, stride=4, padding=2)
    aps = ApsConv2d(conv)
    assert aps.pads == [5, 5, 5, 5] and aps.stride == (1, 1)
    assert set(aps.state_dict()) == set(conv.state_dict())
    assert aps(x).shape == (1, 8, 3, 3)  # stride 4: one of 16 phases
    patchify = ApsConv2d(nn.Conv2d(4, 8, 4, stride=4))  # even kernel: 1 before, 2 after
    assert patchify.pads == [1, 2, 1, 2] and patchify(x).shape == (1, 8, 3, 3)


def test_circular_conv_keeps_the_size_and_commutes_with_shifts() -> None:
    conv = CircularConv2d(nn.Conv2d(2, 3, (2, 3), dilation=(1, 2)))
    x = torch.randn(1, 2, 9, 10, dtype=torch.float64)
    conv = conv.double()
    y = conv(x)
    assert y.shape == (1, 3, 9, 10)
    assert torch.allclose(conv(torch.roll(x, (2, -3), (2, 3))), torch.roll(y, (2, -3), (2, 3)))


def test_odd_sides_are_extended_circularly() -> None:
    x = torch.randn(1, 2, 7, 9)
    assert ApsDown2d(2)(x).shape == (1, 2, 4, 5)


def test_gradient_flows_through_the_chosen_component() -> None:
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    phase = aps_phase(x.detach())
    aps_select(x, phase).sum().backward()
    assert torch.equal(x.grad, aps_unpool(torch.ones(2, 3, 4, 4, dtype=torch.float64), phase))
    assert torch.autograd.gradcheck(
        lambda t: ApsDown2d(3, 3)(t), (torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True),)
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="APS norm must be 1"):
        ApsDown2d(3, p=3)
    with pytest.raises(ValueError, match="APS stride must be an integer"):
        ApsDown2d(3, stride=0)


def test_scriptable() -> None:
    layer = ApsDown2d(3, 4)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(torch.jit.script(layer)(x), layer(x))
