"""Fine-tuning configuration: nested dataclasses, YAML files and ``section.key=value`` overrides.

Unknown keys are errors that name the closest valid keys; values are converted to the field's type
and checked against the allowed choices before anything runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from zoo.config import ConfigError, parse_override, pretrained_policy

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "DistillSection",
    "EvalConfig",
    "FinetuneConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "SegmentationConfig",
    "TrainConfig",
    "config_keys",
    "config_to_dict",
    "load_finetune_config",
]


@dataclass
class ModelConfig:
    name: str = "resnet18_aa4"  # zoo model name (``zoo list``)
    twin: bool = False  # also train the torchvision twin (same arch, no blur) with the same seed and recipe
    pretrained: Union[bool, str] = "auto"  # auto | required | none | weight tag | path | hf-hub:org/repo
    in_chans: int = 3
    drop_rate: float = 0.0
    mode: str = "full"  # full | linear_probe
    # twins must start alike: refuse when one loads pretrained weights and the other cannot, unless true
    allow_init_mismatch: bool = False


@dataclass
class AugmentConfig:
    hflip: bool = False
    shift: int = 0  # random translation of up to this many pixels (0 = no shift augmentation)
    random_resized_crop: bool = False
    rrc_scale_min: float = 0.5
    color_jitter: float = 0.0


@dataclass
class DataConfig:
    source: str = "digits"  # digits | imagefolder | hf
    path: Union[str, None] = None  # imagefolder root, or a `datasets.save_to_disk` folder for hf
    hf_name: Union[str, None] = None  # Hugging Face dataset name for source=hf
    hf_config: Union[str, None] = None
    train_split: str = "train"
    eval_split: str = "val"  # folder / split of the reported test set; missing -> held out from train
    image_key: str = "image"
    label_key: str = "label"
    image_size: int = 32
    eval_fraction: float = 0.25  # test share held out when there is no eval split (seeded, stratified)
    val_fraction: float = 0.2  # validation share of the training images (model selection), seeded, stratified
    split_seed: int = 0
    limit_train: Union[int, None] = None  # a seeded stratified sample of N training images (tiny runs)
    limit_eval: Union[int, None] = None  # the same for the validation and the test split (N each)
    batch_size: int = 64  # per process
    eval_batch_size: Union[int, None] = None
    num_workers: int = 0
    mean: Union[list, None] = None  # default: the model's pretrained_cfg mean/std
    std: Union[list, None] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.05  # for the global batch (batch_size x processes)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.1
    min_lr: float = 0.0
    grad_clip: Union[float, None] = None


@dataclass
class TrainConfig:
    epochs: int = 5
    seed: int = 0
    seeds: int = 1  # train each model with seeds seed, seed+1, ...: mean and 95% interval across seeds
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (CUDA: bf16 if supported else fp16; CPU: off) | off | fp16 | bf16
    threads: int = 0  # torch.set_num_threads (0 = leave torch's default)
    early_stop_patience: int = 0  # epochs without improvement before stopping (0 = never)
    monitor: str = "val_top1"  # val_top1 | val_loss | consistency, on the validation split
    resume: Union[str, None] = None  # run directory to continue


@dataclass
class EvalConfig:
    consistency: bool = True
    protocol: str = "circular"  # circular | crop
    max_shift: Union[int, None] = None  # default: the published 32 px at 224 px, scaled to image_size
    seed: int = 0


@dataclass
class OutputConfig:
    dir: str = "runs"
    name: Union[str, None] = None  # run folder name (default: the config file's name); never overwritten
    plots: bool = True
    progress: bool = True
    save_best: bool = True


@dataclass
class DistillSection:
    """``distill.enabled=true``: train ``zoo.antialias(teacher)`` to match the frozen teacher's logits (see
    ``zoo.train.distill_run``); the student is evaluated against the teacher (``original``) and the converted
    model before training (``converted``)."""

    enabled: bool = False
    teacher: Union[str, None] = None  # zoo baseline name (default model.name) or a finetune model folder
    teacher_weights: Union[str, None] = None  # pretrained tag / path / auto; None = train the teacher here first
    teacher_epochs: int = 4  # epochs of that teacher training (labels, the optim section's recipe)
    images: Union[str, None] = None  # folder of unlabeled images (scanned recursively); None = training split
    temperature: float = 4.0  # softening temperature T of the KL term (> 0)
    alpha_labels: float = 0.0  # weight of a label cross-entropy (0 = labels never used)
    filter_size: int = 4  # blur filter of the student (1..7)
    student_lr: Union[float, None] = None  # learning rate of the distillation (None = optim.lr)


@dataclass
class SegmentationConfig:
    """Settings read only with ``task: segmentation`` (``zoo.train.segmentation``)."""

    decoder_channels: int = 256  # widest U-Net decoder block
    num_classes: Union[int, None] = None  # default: 11 for the pasted digits, else the largest mask id + 1
    shifts: int = 5  # random circular shifts per test image for the dense consistency
    ignore_index: int = 255  # mask value that is not counted


@dataclass
class FinetuneConfig:
    task: str = "classification"  # classification | segmentation (unet_* models on images + masks)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    distill: DistillSection = field(default_factory=DistillSection)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)

    def validate(self) -> FinetuneConfig:
        """Check choices and ranges; raise ``ConfigError`` naming the key and the valid values."""
        _choice("task", self.task, ("classification", "segmentation"))
        for key in ("segmentation.decoder_channels", "segmentation.shifts", "segmentation.num_classes"):
            if _get(self, key) is not None:
                _positive(key, _get(self, key))
        _choice("model.mode", self.model.mode, ("full", "linear_probe"))
        pretrained_policy(self.model.pretrained, "model.pretrained", allow_source=True)  # checked; read by init_model
        _choice("data.source", self.data.source, ("digits", "imagefolder", "hf"))
        _choice("optim.name", self.optim.name, ("sgd", "adamw"))
        _choice("train.amp", self.train.amp, ("auto", "off", "fp16", "bf16"))
        _choice("train.monitor", self.train.monitor, ("val_top1", "val_loss", "consistency"))
        _choice("eval.protocol", self.eval.protocol, ("circular", "crop"))
        dev = self.train.device
        if not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {dev!r}")
        _positive("data.image_size", self.data.image_size, minimum=8)
        _positive("data.batch_size", self.data.batch_size)
        _positive("train.epochs", self.train.epochs)
        _positive("train.seeds", self.train.seeds)
        _positive("model.in_chans", self.model.in_chans)
        for key in ("data.limit_train", "data.limit_eval", "data.eval_batch_size", "eval.max_shift"):
            value = _get(self, key)
            if value is not None:
                _positive(key, value)
        for key in ("train.early_stop_patience", "data.num_workers", "train.threads", "data.augment.shift"):
            if _get(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {_get(self, key)}")
        self._check_numbers()
        if self.data.source == "imagefolder" and not self.data.path:
            raise ConfigError("data.source=imagefolder needs data.path=DIR (a folder of class sub-folders)")
        if self.data.source == "hf" and not (self.data.hf_name or self.data.path):
            raise ConfigError("data.source=hf needs data.hf_name=NAME (or data.path=DIR of `save_to_disk`)")
        if (self.data.mean is None) != (self.data.std is None):
            raise ConfigError("set both data.mean and data.std, or neither")
        if self.distill.enabled:
            from zoo.train.distill import validate_distill  # late: torch is imported only when distilling

            validate_distill(self)
        return self

    def _check_numbers(self) -> None:
        """Every number finite, and each in the range where it means something."""
        for key in config_keys(self):
            value = _get(self, key)
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"{key} must be a finite number, got {value!r}")
        o = self.optim
        _in_range("optim.lr", o.lr, 0.0, math.inf, low_open=True)
        _in_range("optim.momentum", o.momentum, 0.0, 1.0)
        _in_range("optim.weight_decay", o.weight_decay, 0.0, math.inf, high_open=False)
        _in_range("optim.label_smoothing", o.label_smoothing, 0.0, 1.0)
        _in_range("optim.warmup_epochs", o.warmup_epochs, 0.0, math.inf, high_open=False)
        _in_range("optim.warmup_start_factor", o.warmup_start_factor, 0.0, 1.0, low_open=True, high_open=False)
        _in_range("optim.min_lr", o.min_lr, 0.0, o.lr, high_open=False)
        if o.grad_clip is not None:
            _in_range("optim.grad_clip", o.grad_clip, 0.0, math.inf, low_open=True)
        if len(o.betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in o.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.999]; got {o.betas!r}")
        _in_range("model.drop_rate", self.model.drop_rate, 0.0, 1.0)
        _in_range("data.eval_fraction", self.data.eval_fraction, 0.0, 1.0, low_open=True)
        _in_range("data.val_fraction", self.data.val_fraction, 0.0, 1.0, low_open=True)
        a = self.data.augment
        _in_range("data.augment.rrc_scale_min", a.rrc_scale_min, 0.0, 1.0, low_open=True, high_open=False)
        _in_range("data.augment.color_jitter", a.color_jitter, 0.0, math.inf, high_open=False)
        for key in ("data.mean", "data.std"):
            value = _get(self, key)
            if value is not None and not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
            ):
                raise ConfigError(f"{key} must be a list of finite numbers (one per channel), got {value!r}")
        if self.data.std is not None and any(v <= 0 for v in self.data.std):
            raise ConfigError(f"data.std values must be > 0, got {self.data.std!r}")


def _in_range(key: str, value: float, low: float, high: float, low_open: bool = False, high_open: bool = True) -> None:
    """Raise ``ConfigError`` unless ``value`` lies in the interval (NaN never does)."""
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        if math.isinf(high):
            raise ConfigError(f"{key} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{key} must be in {interval}, got {value!r}")


def _choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)}; got {value!r}")


def _positive(key: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def config_keys(cfg: Any = None, prefix: str = "") -> list[str]:
    """Every settable dotted key, e.g. ``optim.lr`` and ``data.augment.shift``."""
    cfg = FinetuneConfig() if cfg is None else cfg
    keys: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += config_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration as plain nested dicts (for YAML / JSON)."""
    return dataclasses.asdict(cfg)


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _unknown(key: str) -> ConfigError:
    keys = config_keys()
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    leaves = difflib.get_close_matches(_leaf(key), sorted({_leaf(k) for k in keys}), n=3, cutoff=0.75)
    close = list(dict.fromkeys(close + [k for k in keys if _leaf(k) in leaves]))[:4]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} (`zoo finetune --print-config` shows every key)")


def _resolve_key(key: str) -> str:
    """A dotted key, or a bare leaf name that is unique across sections (``epochs`` -> ``train.epochs``)."""
    keys = config_keys()
    if key in keys:
        return key
    if "." not in key:
        owners = [k for k in keys if _leaf(k) == key]
        if len(owners) == 1:
            return owners[0]
        if len(owners) > 1:
            raise ConfigError(f"config key {key!r} is ambiguous: use one of {', '.join(owners)}")
    raise _unknown(key)


def _field_type(cfg: Any, name: str) -> Any:
    return typing.get_type_hints(type(cfg))[name]


def _convert(key: str, value: Any, annotation: Any) -> Any:
    """Coerce ``value`` (from YAML) to ``annotation``; ``ConfigError`` when impossible."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(key, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: invalid value {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if annotation is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{key} must be a list, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _set(cfg: FinetuneConfig, key: str, value: Any) -> None:
    dotted = _resolve_key(key)
    *parents, leaf = dotted.split(".")
    target: Any = cfg
    for part in parents:
        target = getattr(target, part)
    setattr(target, leaf, _convert(dotted, value, _field_type(target, leaf)))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def load_finetune_config(
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    **values: Any,
) -> FinetuneConfig:
    """Defaults, then the YAML file ``path``, then ``key=value`` ``overrides``, then ``values``.

    ``values`` use ``__`` for dots: ``load_finetune_config(train__epochs=1)``. The result is validated.
    """
    cfg = FinetuneConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"cannot parse {path}: {err}") from err
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path} must hold a mapping of sections (model, data, optim, ...)")
        for key, value in _flatten(data):
            try:
                _set(cfg, key, value)
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from err
        if cfg.output.name is None:
            cfg.output.name = path.stem
    for text in overrides:
        _set(cfg, *parse_override(text))
    for key, value in values.items():
        _set(cfg, key.replace("__", "."), value)
    return cfg.validate()
