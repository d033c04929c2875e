"""``zoo download``, ``zoo convert`` and ``zoo push``: thin wrappers over ``zoo.weights``."""

from __future__ import annotations

import argparse
import json

from zoo.cli._command import add_command


def _tags(names: list[str]) -> list[str]:
    from zoo.weights.manifest import load_manifest

    manifest = load_manifest()
    tags: list[str] = []
    for name in names:
        if name == "all":
            tags += list(manifest.weights)
        elif name in manifest.weights:
            tags.append(name)
        elif "." in name:
            manifest.get(name)  # raises KeyError naming the model's tags
        else:
            tag = manifest.default_tag(name)
            if tag is None:
                raise KeyError(f"no pretrained weights for {name!r} (see `zoo list --pretrained`)")
            tags.append(tag)
    return list(dict.fromkeys(tags))


def _cmd_download(args: argparse.Namespace) -> int:
    """Fetch weights (hub, else upstream URL) into the caches; then set HF_HUB_OFFLINE=1 offline."""
    from zoo.weights.load import fetch_weights
    from zoo.weights.manifest import load_manifest

    manifest = load_manifest()
    for tag in _tags(args.names):
        path, source = fetch_weights(manifest.get(tag))
        print(f"{tag}: {path} (from {source})")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from zoo.convert import convert_official, convert_torchvision

    if args.source == "torchvision":
        if not args.model:
            raise ValueError("zoo convert torchvision needs --model NAME (e.g. resnet50 or resnet50_aa4)")
        out = convert_torchvision(args.checkpoint, args.model, args.out)
        print(f"wrote {out}")
    else:
        out, diff = convert_official(args.checkpoint, args.out, name=args.model, verify=not args.no_verify)
        check = "not verified" if diff is None else f"max |logits - oracle logits| = {diff:.3g}"
        print(f"wrote {out} ({check})")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from zoo.release import push_weights

    result = push_weights(
        args.tag,
        args.out,
        weights=args.weights,
        dry_run=args.dry_run,
        record=True if args.record else None,
        repo_id=args.repo_id,
    )
    print(json.dumps(result, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "download", _cmd_download, "pre-fetch weights into the cache (for offline machines)")
    p.add_argument("names", nargs="+", help="model names (default weights), tags like resnet50_aa4.in1k_ft, or 'all'")

    p = add_command(subparsers, "convert", _cmd_convert, "convert a torchvision or official checkpoint to a zoo folder")
    p.add_argument("source", choices=["torchvision", "official"], help="checkpoint format")
    p.add_argument(
        "checkpoint",
        help="a .pth/.safetensors file, or for torchvision a weights enum like ResNet50_Weights.IMAGENET1K_V1",
    )
    p.add_argument("--model", help="zoo model name (official: inferred from ARCH_lpfK in the file name)")
    p.add_argument("--out", required=True, help="output folder (model.safetensors + config.json)")
    p.add_argument("--no-verify", action="store_true", help="official: skip the logits check against the oracle")

    p = add_command(subparsers, "push", _cmd_push, "write a hub folder for a manifest weight and upload it")
    p.add_argument("tag", help="manifest tag, e.g. resnet50_aa4.in1k_ft")
    p.add_argument("--out", required=True, help="folder to write (model.safetensors, config.json, README.md)")
    p.add_argument("--weights", help="local checkpoint to publish (default: fetch from the manifest sources)")
    p.add_argument("--repo-id", help="override the hub repo (default: from the manifest and $ZOO_HUB_ORG)")
    p.add_argument("--dry-run", action="store_true", help="only write the folder; do not upload")
    p.add_argument("--record", action="store_true", help="record the SHA-256 in the manifest even on --dry-run")
