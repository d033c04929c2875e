"""Optimizers (SGD / AdamW, no weight decay on norms and biases) and the warmup + cosine schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zoo.train.config import OptimConfig

__all__ = ["WarmupCosine", "build_optimizer", "trainable_parameters"]


def trainable_parameters(model: nn.Module, mode: str) -> list[nn.Parameter]:
    """``mode="full"``: every parameter; ``"linear_probe"``: only the classifier (the rest is frozen)."""
    if mode == "linear_probe":
        head = model.get_classifier()
        if not any(True for _ in head.parameters()):
            raise ValueError("model.mode=linear_probe needs a classifier with parameters (num_classes > 0)")
        head_ids = {id(p) for p in head.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head_ids)
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; 1-D parameters (norm scales, biases) get no weight decay."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        g
        for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
        if g["params"]
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


class WarmupCosine:
    """Per-step learning rate: linear warmup from ``start_factor * lr`` to ``lr``, then cosine to ``min_lr``."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr: float, start_factor: float
    ) -> None:
        self.optimizer = optimizer
        self.total_steps = max(1, total_steps)
        self.warmup_steps = min(max(0, warmup_steps), self.total_steps)
        self.min_lr, self.start_factor = min_lr, start_factor
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = lr
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int, base: float) -> float:
        if step < self.warmup_steps:
            return base * (self.start_factor + (1 - self.start_factor) * step / self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (base - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(self.step_count, base)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
