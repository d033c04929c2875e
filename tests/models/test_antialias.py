import pytest
import torch
import torchvision

import zoo
from zoo.models.antialias import antialias


@pytest.mark.parametrize(
    ("arch", "k", "pad"),
    [
        ("resnet18", 3, "reflect"),
        ("resnet18", 4, "zero"),
        ("resnet50", 2, "reflect"),
        ("mobilenet_v2", 5, "reflect"),
        ("alexnet", 4, "reflect"),
        ("vgg11_bn", 3, "replicate"),
        ("densenet121", 2, "circular"),
    ],
)
def test_equals_hand_built(arch, k, pad):
    torch.manual_seed(0)
    ref = zoo.create(f"{arch}_aa{k}", pad_mode=pad).eval()
    tv = getattr(torchvision.models, arch)()
    tv.load_state_dict(ref.state_dict(), strict=True)
    aa = antialias(tv, k, pad).eval()
    aa.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = aa(x), ref(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_unsupported_raises():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.GELU(), torch.nn.Conv2d(8, 8, 3, 2))
    with pytest.raises(ValueError, match=r"cannot place.*\b2 \(Conv2d, stride \(2, 2\)\)"):
        antialias(m)


def test_keys_inplace_and_aa_stem():
    tv = torchvision.models.resnet18()
    aa = antialias(tv, aa_stem=True)
    assert tv.conv1.stride == (2, 2) and aa.conv1.stride == (1, 1)  # inplace=False deep-copies
    assert aa.state_dict().keys() == tv.state_dict().keys()
    aa.load_state_dict(tv.state_dict(), strict=True)
    ref = zoo.create("resnet18_aa4", aa_stem=True).eval()
    aa.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(aa.eval()(x), ref(x), rtol=1e-5, atol=1e-5)
