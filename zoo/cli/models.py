"""``zoo list`` and ``zoo info``."""

from __future__ import annotations

import argparse

from zoo.builder import create
from zoo.registry import get_entry, list_models


def _cmd_list(args: argparse.Namespace) -> int:
    for name in list_models(args.pattern):
        print(name)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    entry = get_entry(args.name)
    model = create(args.name)
    params = sum(p.numel() for p in model.parameters())
    print(f"name:          {entry.name}")
    print(f"architecture:  {entry.arch} ({entry.family} family, {type(model).__name__})")
    print(f"anti-aliased:  {'yes, filter size ' + str(entry.filter_size) if entry.antialiased else 'no (torchvision baseline)'}")
    print(f"parameters:    {params:,}")
    print(f"features:      {model.num_features} (head hidden {model.head_hidden_size})")
    print(f"min input:     {model.min_input_size}x{model.min_input_size}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list model names")
    p.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'resnet*_aa4'")
    p.set_defaults(func=_cmd_list)
    p = subparsers.add_parser("info", help="describe a model")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)
