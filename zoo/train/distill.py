"""Recovery by distillation: an anti-aliased student learns from its own frozen original (the teacher).

The student starts as ``zoo.antialias(teacher)`` (the teacher's weights with blur inserted) and is trained to match
the teacher's softened outputs on unlabeled images (Hinton et al., 2015, "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531): ``KL(softmax(teacher / T) || softmax(student / T)) * T**2``, optionally plus
``alpha`` times the cross-entropy on labels.

``zoo finetune distill.enabled=true`` (``zoo.train.distill_run``) runs them end to end.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.config import ConfigError
from zoo.registry import get_entry

if TYPE_CHECKING:
    from zoo.train.config import FinetuneConfig

__all__ = [
    "DistillConfig",
    "distill_epoch",
    "distill_loss",
    "freeze_teacher",
    "make_student",
    "teacher_source",
    "validate_distill",
]


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


def teacher_source(cfg: FinetuneConfig) -> tuple[str, Path | None]:
    """``(zoo name of the teacher, its finetune model folder or None)``; ``ConfigError`` when unusable."""
    d = cfg.distill
    spec = d.teacher or cfg.model.name
    folder = Path(spec) if d.teacher and ("/" in spec or Path(spec).is_dir()) else None
    if folder is not None:
        config = folder / "config.json"
        if not config.is_file():
            raise ConfigError(
                f"distill.teacher={spec}: no {config} (expected a `zoo finetune` model folder, e.g. runs/NAME/resnet18)"
            )
        try:
            name = str(json.loads(config.read_text(encoding="utf-8"))["architecture"])
        except (ValueError, KeyError) as err:
            raise ConfigError(f"distill.teacher={spec}: {config} has no 'architecture' ({err})") from err
        if d.teacher_weights is not None:
            raise ConfigError("distill.teacher is a model folder (its weights); leave distill.teacher_weights unset")
    else:
        name = spec
    try:
        entry = get_entry(name)
    except KeyError as err:
        raise ConfigError(f"distill.teacher={name!r}: {err.args[0] if err.args else err}") from None
    if entry.antialiased:
        if d.teacher or folder is not None:
            raise ConfigError(
                f"distill.teacher={name!r} is anti-aliased already; the teacher is the original without blur "
                f"(e.g. {entry.arch})"
            )
        name = entry.arch  # model.name=resnet18_aa4 -> teacher resnet18
    return name, folder


def validate_distill(cfg: FinetuneConfig) -> None:
    """Every ``distill.*`` check that needs no weights: one-line ``ConfigError`` naming the key."""
    d = cfg.distill
    if not (d.temperature > 0 and math.isfinite(d.temperature)):
        raise ConfigError(f"distill.temperature must be a finite number > 0, got {d.temperature!r}")
    if not 0.0 <= d.alpha_labels <= 1.0:
        raise ConfigError(f"distill.alpha_labels must be in [0, 1] (0 = labels never used), got {d.alpha_labels!r}")
    if not 1 <= d.filter_size <= 7:
        raise ConfigError(f"distill.filter_size must be an integer in 1..7, got {d.filter_size!r}")
    if d.teacher_epochs < 1:
        raise ConfigError(f"distill.teacher_epochs must be an integer >= 1, got {d.teacher_epochs!r}")
    if d.student_lr is not None and not (d.student_lr > 0 and math.isfinite(d.student_lr)):
        raise ConfigError(f"distill.student_lr must be a number > 0 (or null = optim.lr), got {d.student_lr!r}")
    if d.images is not None:
        if not Path(d.images).is_dir():
            raise ConfigError(f"distill.images={d.images}: folder not found (a folder of images, scanned recursively)")
        if d.alpha_labels > 0:
            raise ConfigError("distill.alpha_labels > 0 needs labels, but distill.images is a folder without labels")
    if cfg.model.twin:
        raise ConfigError("model.twin does not apply with distill.enabled=true (the student is the teacher's twin)")
    if not cfg.eval.consistency:
        raise ConfigError("distill.enabled=true reports shift consistency: keep eval.consistency=true")
    if cfg.train.seeds != 1:
        raise ConfigError(f"distill.enabled=true trains one seed; set train.seeds=1 (got {cfg.train.seeds})")
    teacher_source(cfg)
