"""``zoo release``: publish manifest weights to the Hugging Face Hub (maintainers; see ``zoo.release``)."""

from __future__ import annotations

import argparse
import sys

from zoo.cli._command import add_command


def _cmd_release(args: argparse.Namespace) -> int:
    """For each tag: get the upstream file (--from DIR or the manifest's URLs), check its published hash, convert it,
    check it against the oracle (official) or torchvision, write model.safetensors + config.json + README.md, upload
    with HfApi.upload_folder to $ZOO_HUB_ORG/TAG and record the SHA-256 in the manifest ($ZOO_MANIFEST or the
    packaged one). Tags already published with the recorded SHA-256 are skipped; a failed tag does not stop the
    others. Token: $HF_TOKEN or --token.
    """
    from zoo.release import iter_release, select_tags

    tags = select_tags(args.tags)
    failed = 0
    for result in iter_release(tags, args.out, from_dir=args.from_dir, dry_run=args.dry_run, token=args.token):
        print(result.line(), file=sys.stderr if result.status == "failed" else sys.stdout, flush=True)
        failed += result.status == "failed"
    done = len(tags) - failed
    print(f"{done} of {len(tags)} tag(s) done" + (f", {failed} failed (rerun to retry them)" if failed else ""))
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "release", _cmd_release, "publish manifest weights to the hub, verified (maintainers)")
    p.add_argument("tags", nargs="+", help="tags, globs ('resnet50_aa4.*'), model names, or 'all'")
    p.add_argument("--out", default="release", help="working folder: one repo folder per tag (default ./release)")
    p.add_argument("--from", dest="from_dir", help="folder of already-downloaded upstream files, named as published")
    p.add_argument("--dry-run", action="store_true", help="write and verify the folders only: no upload, no record")
    p.add_argument("--token", help="hub token (default: $HF_TOKEN or the saved login)")
