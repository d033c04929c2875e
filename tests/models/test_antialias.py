import pytest
import torch
import torchvision

import zoo
from zoo.models.antialias import antialias


@pytest.mark.parametrize(
    ("arch", "k", "pad"),
    [("resnet18", 3, "reflect"), ("resnet18", 4, "zero"), ("resnet50", 2, "reflect"), ("mobilenet_v2", 5, "reflect")],
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
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.AvgPool2d(2))
    with pytest.raises(ValueError, match="cannot place"):
        antialias(m)
