"""zoo.transforms(model) and zoo.label_names(model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import zoo


def test_eval_transform_of_imagenet_weights():
    model = zoo.create("mobilenet_v2_aa4")
    tf = zoo.transforms(model)
    # the ImageNet mean colour normalises to ~0; 300x400 -> short side 256 -> 224 center crop
    mean_rgb = np.array([0.485, 0.456, 0.406]) * 255
    image = Image.fromarray(np.broadcast_to(mean_rgb.round().astype(np.uint8), (300, 400, 3)).copy())
    out = tf(image)
    assert out.shape == (3, 224, 224)
    assert out.abs().max() < 0.01
    white = tf(Image.new("RGB", (256, 256), (255, 255, 255)))
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(white[:, 0, 0], expected, atol=1e-6)


def test_transform_follows_cfg_and_channels():
    cfg = {
        "input_size": (1, 96, 96),
        "crop_pct": 0.75,
        "interpolation": "bicubic",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
    }
    out = zoo.transforms(cfg)(Image.new("RGB", (200, 150), (255, 255, 255)))
    assert out.shape == (1, 96, 96)
    assert torch.allclose(out, torch.full_like(out, 2.0))
    with pytest.raises(ValueError, match="unknown interpolation 'lanczos9'"):
        zoo.transforms({**cfg, "interpolation": "lanczos9"})


def test_label_names():
    names = zoo.label_names(zoo.create("mobilenet_v2_aa4"))
    assert len(names) == 1000 and names[0] == "tench" and names[207] == "golden retriever"
    assert zoo.label_names({"num_classes": 2, "label_names": ["cat", "dog"]}) == ["cat", "dog"]
    with pytest.raises(ValueError, match="no label names known"):
        zoo.label_names(zoo.create("mobilenet_v2_aa4", num_classes=10))
