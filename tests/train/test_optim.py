from __future__ import annotations

import math

import pytest
import torch

from zoo.train.config import OptimConfig
from zoo.train.optim import WarmupCosine, build_optimizer, trainable_parameters


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_warmup_then_cosine_known_values():
    opt = _opt(1.0)
    sched = WarmupCosine(opt, total_steps=10, warmup_steps=2, min_lr=0.0, start_factor=0.1)
    lrs = [sched.lr]
    for _ in range(10):
        sched.step()
        lrs.append(sched.lr)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[1] == pytest.approx(0.55)
    assert lrs[2] == pytest.approx(1.0)  # warmup done: peak
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))  # half way down the cosine
    assert lrs[10] == pytest.approx(0.0)


def test_schedule_state_roundtrip():
    a = WarmupCosine(_opt(), 20, 3, 0.01, 0.1)
    for _ in range(7):
        a.step()
    b = WarmupCosine(_opt(), 20, 3, 0.01, 0.1)
    b.load_state_dict(a.state_dict())
    assert b.lr == pytest.approx(a.lr)


def test_no_decay_on_biases_and_norms_and_linear_probe_freezes_trunk():
    import zoo

    model = zoo.create("resnet18_aa4", num_classes=3)
    params = trainable_parameters(model, "linear_probe")
    assert {id(p) for p in params} == {id(p) for p in model.get_classifier().parameters()}
    assert not model.conv1.weight.requires_grad
    opt = build_optimizer(params, OptimConfig(name="adamw", weight_decay=0.05))
    decays = {g["weight_decay"] for g in opt.param_groups}
    assert decays == {0.05, 0.0}
    assert isinstance(opt, torch.optim.AdamW)
