"""The timm model interface on one model of each family (timm's own checks: tests/timm)."""

from __future__ import annotations

import pytest
import torch

import zoo

ONE_PER_FAMILY = ["resnet18_aa4", "vgg11_bn_aa4", "alexnet_aa4", "densenet121_aa4",
                  "mobilenet_v2_aa4", "mobilenet_v3_small_aa4"]  # fmt: skip


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_interface(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create(name, num_classes=7).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        logits = model.forward_head(feats)
        assert torch.equal(logits, model(x)) and logits.shape == (2, 7)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        final, levels = model.forward_intermediates(x)
        assert torch.equal(final, feats)
        assert [f.shape[1] for f in levels] == [i["num_chs"] for i in model.feature_info]
        reductions = [i["reduction"] for i in model.feature_info]
        if name.startswith("alexnet"):  # unpadded convs/pools shrink maps beyond the nominal stride
            assert reductions == [8, 16, 32] and levels[0].shape[-1] > levels[1].shape[-1] > levels[2].shape[-1]
        else:
            assert [96 // f.shape[-1] for f in levels] == reductions
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        assert model.get_classifier().out_features == 3
        model.reset_classifier(0)
        assert model(x).shape == (2, model.head_hidden_size)
        model.reset_classifier(0, "")
        assert model(x).dim() == 4
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state
    assert cfg["classifier"] == model.classifier_name


@pytest.mark.parametrize("name", ["resnet18_aa3", "densenet121_aa4", "mobilenet_v3_small_aa2", "vgg11_aa4"])
def test_in_chans_aa_stem_circular_and_grad_checkpointing(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create(name, in_chans=1, num_classes=4, pad_mode="circular", aa_stem=True)
    x = torch.randn(2, 1, 64, 64)
    model.train()
    torch.manual_seed(1)  # same dropout masks in both runs
    out = model(x)
    out.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    out2 = model(x)
    out2.sum().backward()
    assert torch.allclose(out, out2, atol=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[n], atol=1e-4), n


def test_aa_stem_blurs_the_stem() -> None:
    plain = zoo.create("resnet18_aa4")
    stem = zoo.create("resnet18_aa4", aa_stem=True)
    assert plain.conv1.stride == (2, 2) and stem.conv1.stride == (1, 1)
    assert type(stem.stem_aa).__name__ == "BlurPool2d"
    assert stem.feature_info[0]["module"] == "stem_aa"
    with pytest.raises(ValueError, match="resnet18 is the torchvision baseline"):
        zoo.create("resnet18", aa_stem=True)


def test_circular_network_is_exactly_shift_invariant_for_stride_multiples() -> None:
    """All blurred, circular padding: logits invariant to circular shifts by multiples of 32."""
    torch.manual_seed(0)
    model = zoo.create("mobilenet_v2_aa4", pad_mode="circular", aa_stem=True).eval()
    for m in model.modules():  # convs must pad circularly too for exact equivariance
        if isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0):
            m.padding_mode = "circular"
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    model.double()
    with torch.no_grad():
        assert torch.allclose(model(x), model(torch.roll(x, (32, -32), dims=(2, 3))), atol=1e-9)
