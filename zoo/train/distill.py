"""Recovery by distillation: an anti-aliased student learns from its own frozen original (the teacher).

The student starts as ``zoo.antialias(teacher)`` (the teacher's weights with blur inserted) and is trained to match
the teacher's softened outputs on unlabeled images (Hinton et al., 2015, "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531): ``KL(softmax(teacher / T) || softmax(student / T)) * T**2``, optionally plus
``alpha`` times the cross-entropy on labels.

Not yet wired into ``zoo finetune`` (see the module's report); the pieces here are tested on their own.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.config import ConfigError

__all__ = ["DistillConfig", "distill_epoch", "distill_loss", "freeze_teacher", "make_student"]


@dataclass
class DistillConfig:
    teacher: str = "resnet18"  # zoo model name of the original (no blur)
    temperature: float = 4.0  # softening temperature T (> 0)
    alpha: float = 0.0  # weight of the label cross-entropy (0 = unlabeled images only)
    filter_size: int = 4  # blur filter of the student (1..7)

    def validate(self) -> DistillConfig:
        """Raise ``ConfigError`` (one line) naming the bad key and the valid range."""
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ConfigError(f"distill.temperature must be a number > 0, got {self.temperature!r}")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"distill.alpha must be in [0, 1] (0 = no labels), got {self.alpha!r}")
        if not (isinstance(self.filter_size, int) and 1 <= self.filter_size <= 7):
            raise ConfigError(f"distill.filter_size must be an integer in 1..7, got {self.filter_size!r}")
        return self


def distill_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    labels: Tensor | None = None,
    alpha: float = 0.0,
) -> Tensor:
    """Mean over the batch of ``KL(p_teacher/T || p_student/T) * T**2`` (+ ``alpha`` x cross-entropy on labels)."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t
    if alpha and labels is not None:
        return kl + alpha * F.cross_entropy(student_logits.float(), labels)
    return kl


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients, in place; returns the teacher."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def make_student(teacher: nn.Module, cfg: DistillConfig) -> nn.Module:
    """The anti-aliased copy of ``teacher`` with its weights (the teacher is left untouched).

    A zoo baseline twin becomes its hand-built ``{cfg.teacher}_aa{K}`` with the teacher's state dict loaded strictly
    (the oracle-verified model ``zoo.antialias`` is tested against); any other CNN goes through ``zoo.antialias``.
    """
    import zoo
    from zoo.models._contract import ZooModel

    if not isinstance(teacher, ZooModel):
        student = zoo.antialias(teacher, filter_size=cfg.filter_size, inplace=False)
        for p in student.parameters():  # a copy of a frozen teacher is frozen too: the student trains
            p.requires_grad_(True)
        return student
    num_classes = getattr(teacher, "num_classes", None)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        student = zoo.create(f"{cfg.teacher}_aa{cfg.filter_size}", **kwargs)
    except KeyError as exc:
        raise ValueError(
            f"distill.teacher={cfg.teacher!r}: no anti-aliased twin {cfg.teacher}_aa{cfg.filter_size} in the zoo"
        ) from exc
    student.load_state_dict(copy.deepcopy(teacher.state_dict()), strict=True)
    return student


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: Tensor) -> Tensor:
    """Teacher outputs without gradients (the teacher must be frozen with ``freeze_teacher``)."""
    return teacher(images)


def distill_epoch(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    cfg: DistillConfig,
) -> float:
    """One pass over ``batches`` (images, or (images, labels) pairs); returns the mean distillation loss.

    Labels are used only when ``cfg.alpha > 0``; the teacher is frozen first.
    """
    freeze_teacher(teacher)
    student.train()
    total, n = 0.0, 0
    for batch in batches:
        images, labels = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
        loss = distill_loss(student(images), teacher_logits(teacher, images), cfg.temperature, labels, cfg.alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(images)
        n += len(images)
    return total / max(n, 1)
