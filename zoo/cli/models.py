"""``zoo list`` and ``zoo info``."""

from __future__ import annotations

import argparse
import fnmatch

from zoo.builder import create
from zoo.cli._command import add_command
from zoo.registry import get_entry, list_models
from zoo.weights.manifest import load_manifest


def _metrics(metrics: dict | None) -> str:
    if not metrics:
        return "-"
    consistency = metrics["imagenet_consistency"]
    return f"{metrics['imagenet_top1']:.2f} / " + ("-" if consistency is None else f"{consistency:.2f}")


def _cmd_list(args: argparse.Namespace) -> int:
    if not args.pretrained:
        for name in list_models(args.pattern):
            print(name)
        return 0
    manifest = load_manifest()
    rows = [
        (tag, e.license + ("" if e.commercial_use else " (non-commercial)"), _metrics(e.metrics))
        for tag, e in sorted(manifest.weights.items())
        if not args.pattern or fnmatch.fnmatch(e.model, args.pattern) or fnmatch.fnmatch(tag, args.pattern)
    ]
    width = max([len(r[0]) for r in rows] + [len("weights")])
    lic_width = max([len(r[1]) for r in rows] + [len("license")])
    print(f"{'weights':<{width}}  {'license':<{lic_width}}  published top-1 / consistency (%)")
    for tag, lic, met in rows:
        print(f"{tag:<{width}}  {lic:<{lic_width}}  {met}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    entry = get_entry(args.name)
    model = create(args.name)
    params = sum(p.numel() for p in model.parameters())
    print(f"name:          {entry.name}")
    print(f"architecture:  {entry.arch} ({entry.family} family, {type(model).__name__})")
    blur = f"yes, filter size {entry.filter_size}" if entry.antialiased else "no (torchvision baseline)"
    print(f"anti-aliased:  {blur}")
    print(f"parameters:    {params:,}")
    print(f"features:      {model.num_features} (head hidden {model.head_hidden_size})")
    print(f"min input:     {model.min_input_size}x{model.min_input_size}")
    manifest = load_manifest()
    tags = manifest.tags_for(entry.name)
    if not tags:
        print("weights:       none published (`zoo list --pretrained` lists the models with weights)")
        return 0
    print("weights:")
    default = manifest.default_tag(entry.name)
    for tag in tags:
        w = manifest.weights[tag]
        lic = w.license_info
        print(f"  {tag}{'  (default: pretrained=True)' if tag == default else ''}")
        restriction = "" if lic["commercial_use"] else " - NON-COMMERCIAL use only"
        print(f"    license:   {lic['name']}{restriction} ({lic['url']})")
        print(f"    origin:    {w.data['origin']}")
        print(f"    recipe:    {w.data['recipe']}")
        if w.metrics:
            print(
                f"    published: ImageNet top-1 {w.metrics['imagenet_top1']:.2f}%, "
                f"consistency {_metrics(w.metrics).split(' / ')[1]}% ({w.metrics['source']})"
            )
        else:
            print("    published: no figures for these exact weights")
        pre = w.preprocess
        print(f"    eval:      {pre['input_size'][-1]} px crop, crop_pct {pre['crop_pct']}, {pre['interpolation']}")
        print(
            "    sources:   "
            + "; ".join(f"hf-hub:{s['repo_id']}" if s["type"] == "hf-hub" else s["url"] for s in w.sources())
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "list", _cmd_list, "list model names (or, with --pretrained, published weights)")
    p.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'resnet*_aa4'")
    p.add_argument(
        "--pretrained", action="store_true", help="list the published weights with their license and published metrics"
    )
    p = add_command(subparsers, "info", _cmd_info, "describe a model and its weights")
    p.add_argument("name")
