"""``zoo eval``: shift-invariance metrics of zoo models on a data source; JSON + CSV + PNG output."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import torch

from zoo.cli._command import add_command
from zoo.config import PRETRAINED_POLICIES, deprecated, parse_override, pretrained_policy

__all__ = ["register"]


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _weights(text: str | None, models: list[str]) -> dict[str, str]:
    if not text:
        return {}
    if "=" not in text:
        if len(models) != 1:
            raise ValueError("--weights PATH needs exactly one --models name; for several use NAME=PATH,NAME=PATH")
        return {models[0]: text}
    pairs = {}
    for item in _csv_list(text):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--weights item {item!r} must be NAME=PATH")
        pairs[name] = path
    return pairs


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}
    if args.set:
        deprecated("--set KEY=VALUE", "KEY=VALUE (as in zoo finetune)")
    for item in [*args.overrides, *(args.set or [])]:
        if "=" not in item:
            raise ValueError(f"override {item!r} must be KEY=VALUE, e.g. features.shifts=4")
        key, value = parse_override(item)
        node = over
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    for key in ("data", "limit", "seed", "batch_size", "num_workers"):
        value = getattr(args, key)
        if value is not None:
            over[key] = value
    if args.metrics:
        over["metrics"] = _csv_list(args.metrics)
    return over


def _generator(spec: str) -> Any:
    from zoo.eval.runner import EvalModel

    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"--generator {spec!r} must be MODULE:ATTRIBUTE (an nn.Module or a factory returning one)")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except ImportError as err:
        raise ValueError(
            f"--generator {spec!r}: cannot import module {module_name!r} ({err}); give MODULE:ATTRIBUTE of an "
            "importable module (on sys.path or PYTHONPATH)"
        ) from err
    except AttributeError as err:
        raise ValueError(f"--generator {spec!r}: module {module_name!r} has no attribute {attr!r}") from err
    module = obj if hasattr(obj, "forward") else obj() if callable(obj) else obj
    if not hasattr(module, "forward"):
        raise ValueError(f"--generator {spec!r} is not an nn.Module nor a factory returning one")
    return EvalModel(attr, module, f"from {spec}", "generator")


def _cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate zoo models' shift invariance. Without --data it runs on the photographs shipped in scikit-image. Under
    `torchrun --nproc_per_node=N` the images are split between processes.
    """
    from zoo.distributed import is_main, setup
    from zoo.eval.runner import load_eval_config, load_models, run_eval

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is an existing file; give a directory (it is created if missing)")
    if args.task == "segmentation":
        from zoo.eval import segmentation_task

        return segmentation_task.cli(args, _weights(args.weights, _csv_list(args.models or "")))
    group = setup(args.device or "cpu", option="--device")
    try:
        config = load_eval_config(args.config, _overrides(args))
        names = _csv_list(args.models or "")
        if not names and not args.generator:
            raise ValueError("give --models A,B,... (see `zoo list`) or --generator MODULE:ATTR")
        log = print if is_main() else (lambda _msg: None)
        policy = pretrained_policy(args.pretrained, "--pretrained")
        models = load_models(names, policy, _weights(args.weights, names), log=log, init_seed=config["seed"])
        models += [_generator(spec) for spec in args.generator or []]
        run_eval(models, config, out_dir=args.out, progress=not args.no_progress, device=args.device, log=log)
    finally:
        group.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from zoo.eval.runner import METRICS  # every metric registered (the runner imports the shipped ones)

    p = add_command(
        subparsers,
        "eval",
        _cmd_eval,
        "measure shift invariance and robustness (consistency, feature distance, corruptions, flip, ...)",
    )
    p.add_argument(
        "--task",
        choices=("classification", "segmentation"),
        default="classification",
        help="classification (default): the metrics below; segmentation: mIoU and dense shift consistency of "
        "unet_* models on --data digits or a folder of images/ + masks/ (settings as KEY=VALUE: count, size, "
        "num_classes, shifts, max_shift, rounds)",
    )
    p.add_argument("--models", help="comma-separated zoo model names, e.g. resnet18,resnet18_aa4")
    p.add_argument("--data", help="embedded (default), an ImageFolder/image dir, a glob, a .txt list, hf:NAME[:SPLIT]")
    p.add_argument(
        "--metrics",
        help=f"comma-separated: {','.join(sorted(METRICS))} (default: the config's)",
    )
    p.add_argument("--out", default="eval_out", help="output directory for results.json, CSV and PNG (eval_out)")
    p.add_argument("--config", help="YAML overriding zoo/eval/defaults.yaml, e.g. configs/eval/imagenet.yaml")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, as in zoo finetune: e.g. features.shifts=4 consistency.protocols=[crop]",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="deprecated spelling of a KEY=VALUE override")
    p.add_argument("--limit", type=int, help="at most this many images per metric")
    p.add_argument("--seed", type=int, help="seed of the image order and of all per-image offsets")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--workers", dest="num_workers", type=int, help="data-loader worker processes")
    p.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the model's, i.e. cpu)")
    p.add_argument(
        "--pretrained",
        choices=(*PRETRAINED_POLICIES, "true", "false"),
        default="auto",
        metavar="{" + ",".join(PRETRAINED_POLICIES) + "}",
        help="auto: pretrained weights when obtainable, else random init with a notice; "
        "required: fail without them; none: random init (true/false: deprecated spellings of required/none)",
    )
    p.add_argument(
        "--weights",
        help="checkpoint (.safetensors, save_model_dir folder, hf-hub:org/repo) for the "
        "one model, or NAME=PATH,NAME=PATH",
    )
    p.add_argument(
        "--generator",
        action="append",
        metavar="MODULE:ATTR",
        help="an image-to-image nn.Module (or factory) for the generation metric (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
