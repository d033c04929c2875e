"""Helpers of the timm-bridge tests: model lists (one per family by default, all under ``slow``),
small input sizes, and weights that give logits of a healthy scale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.registry import get_entry
from zoo.timm_bridge import timm_model_names

TEST_ORG = "timmtestorg"  # the loopback hub org of the timm tests
TAG = "resnet18_aa4.in1k_ft"

FAMILY_REPS = [
    "resnet18_aa4",
    "vgg11_bn_aa4",
    "densenet121_aa4",
    "mobilenet_v2_aa4",
    "mobilenet_v3_small_aa4",
    "alexnet_aa4",
]
ALL_NAMES = timm_model_names()
# the slow sweeps cover the hand-built families; the torchvision_cnn family has its own (tests/models/test_tv_cnn.py)
SWEEP_NAMES = [n for n in ALL_NAMES if get_entry(n).family != "torchvision_cnn"]
AA4_NAMES = [n for n in SWEEP_NAMES if n.endswith("_aa4")]


def with_slow(default: list[str], slow: list[str]) -> list:
    """``default`` names as plain params, the rest of ``slow`` marked ``slow``."""
    return [*default, *(pytest.param(n, marks=pytest.mark.slow) for n in slow if n not in default)]


def small_size(model: nn.Module, target: int = 64) -> int:
    """A small square input the model accepts: ``target`` or its minimum rounded up to a multiple of 32."""
    need = max(target, getattr(model, "min_input_size", 1))
    return -(-need // 32) * 32


def rand_input(size: int, batch: int = 2, chans: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(seed))
