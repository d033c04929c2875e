"""The layer helpers of ``zoo.models._helpers`` and the shared ``init_weights``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.layers import BlurPool2d
from zoo.models._contract import init_weights
from zoo.models._helpers import blur_or_identity, check_input, checkpoint_seq, conv_out, make_linear


def test_conv_out_matches_a_real_convolution() -> None:
    for size, k, s, p in [(32, 3, 1, 1), (224, 7, 2, 3), (13, 3, 2, 0), (5, 2, 1, 0), (227, 11, 4, 2)]:
        out = nn.Conv2d(1, 1, k, s, p)(torch.zeros(1, 1, size, size)).shape[-1]
        assert conv_out(size, k, s, p) == out, (size, k, s, p)


def test_check_input_names_what_is_wrong() -> None:
    check_input(torch.zeros(1, 3, 8, 8), 3, 8, "net")  # valid: no error
    with pytest.raises(ValueError, match=r"net expects a 4-D batch \(N, C, H, W\), got a tensor of shape \(3, 8\)"):
        check_input(torch.zeros(3, 8), 3, 1, "net")
    with pytest.raises(ValueError, match=r"built for 3 input channels but got 1 \(input shape \(1, 1, 8, 8\)\)"):
        check_input(torch.zeros(1, 1, 8, 8), 3, 1, "net")
    with pytest.raises(ValueError, match="input of 8x7 pixels is too small for net: the minimum is 8x8"):
        check_input(torch.zeros(1, 3, 8, 7), 3, 8, "net")


def test_checkpoint_seq_equals_plain_run_with_inplace_activations() -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1), nn.ReLU(True))
    x = torch.randn(2, 2, 8, 8, requires_grad=True)
    want = seq(x)
    want.sum().backward()
    grads = [p.grad.clone() for p in seq.parameters()]
    seq.zero_grad()
    got = checkpoint_seq(seq, x)
    got.sum().backward()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for g, p in zip(grads, seq.parameters()):
        torch.testing.assert_close(p.grad, g)


def test_blur_or_identity_and_make_linear() -> None:
    assert isinstance(blur_or_identity(8, None, 2, "reflect"), nn.Identity)
    assert isinstance(blur_or_identity(8, 4, 1, "reflect"), nn.Identity)
    blur = blur_or_identity(8, 3, 2, "zero")
    assert isinstance(blur, BlurPool2d) and blur.filter_size == 3 and blur.pad_mode == "zero"
    assert isinstance(make_linear(5, 0), nn.Identity)
    fc = make_linear(5, 3)
    assert isinstance(fc, nn.Linear) and (fc.in_features, fc.out_features) == (5, 3)


def test_init_weights_modes() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.Linear(64, 2000))
    with torch.no_grad():
        net[1].weight.fill_(3.0)
    default_fc = net[2].weight.clone()
    init_weights(net, linear="keep")
    assert torch.equal(net[2].weight, default_fc) and torch.equal(net[1].weight, torch.ones(64))
    assert net[0].bias.abs().max() == 0
    fan_out_std = (2.0 / (64 * 9)) ** 0.5  # Kaiming, fan_out, ReLU gain
    assert abs(net[0].weight.std().item() - fan_out_std) < 0.1 * fan_out_std
    init_weights(net, conv_mode="fan_in", linear="zero_bias")
    assert abs(net[0].weight.std().item() - (2.0 / 27) ** 0.5) < 0.1 * (2.0 / 27) ** 0.5
    assert torch.equal(net[2].weight, default_fc) and net[2].bias.abs().max() == 0
    init_weights(net)
    assert abs(net[2].weight.std().item() - 0.01) < 0.001
    with pytest.raises(ValueError, match="unknown linear init 'xavier'; valid: normal, zero_bias, keep"):
        init_weights(net, linear="xavier")
