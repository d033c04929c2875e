"""``zoo finetune --config configs/finetune/NAME.yaml [key=value ...]``."""

from __future__ import annotations

import argparse
import shlex
import sys

import yaml

from zoo.cli._command import add_command
from zoo.train.config import config_to_dict, load_finetune_config


def _resume_command(args: argparse.Namespace, root: str) -> str:
    """The command line that continues an interrupted run."""
    keep = [o for o in args.overrides if o.split("=", 1)[0].strip() not in ("train.resume", "resume")]
    words = ["zoo", "finetune", *(["--config", args.config] if args.config else []), *keep, f"train.resume={root}"]
    return shlex.join(words)


def _cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a zoo model on the embedded digits, an image folder or a Hugging Face dataset. Overrides are
    section.key=value (YAML values), e.g. train.epochs=3 optim.lr=0.01 data.augment.shift=4; a key that exists in
    one section only may drop the section (epochs=3). Under `torchrun --nproc_per_node=N` the same command trains
    with DDP.
    """
    from zoo.train.run import FinetuneInterrupted, finetune

    cfg = load_finetune_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    try:
        finetune(cfg)
    except FinetuneInterrupted as err:
        resume = _resume_command(args, str(err.root))
        print(f"zoo finetune: interrupted: {err.saved}; resume with: {resume}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("zoo finetune: interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "finetune", _cmd_finetune, "fine-tune a model (and its non-anti-aliased twin) on a small dataset"
    )
    p.add_argument("--config", default=None, help="YAML file (default: the built-in defaults = digits)")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
