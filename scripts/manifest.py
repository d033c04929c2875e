"""Validate, rewrite in canonical form, or expand the weights manifest.

    python scripts/manifest.py --check           # schema, every entry expands, canonical formatting
    python scripts/manifest.py                   # rewrite the file in canonical form (atomically)
    python scripts/manifest.py --expand TAG      # print one entry as the loader sees it

The file holds shared values once (``defaults``, ``groups``); an entry in ``weights`` holds only
what differs (hash prefix, published figures, overrides). ``zoo.weights.manifest`` expands it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jsonschema

from zoo.io import atomic_write
from zoo.weights.manifest import SCHEMA_PATH, load_manifest, manifest_path


def canonical(data: dict) -> str:
    """The one formatting of the manifest (what ``record_hub_sha256`` writes too)."""
    return json.dumps(data, indent=1) + "\n"


def check(path: Path) -> list[str]:
    """Problems with the manifest at ``path`` (empty when it is valid and canonical)."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    problems = [
        f"schema: {e.json_path}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(data)
    ]
    if problems:
        return problems
    manifest = load_manifest(path)  # raises ValueError naming the entry that does not expand
    weight = {**schema["$defs"]["weight"], "$defs": schema["$defs"]}
    for tag, entry in manifest.weights.items():
        problems += [f"{tag}: {e.message}" for e in jsonschema.Draft202012Validator(weight).iter_errors(entry.data)]
    if text != canonical(data):
        problems.append(f"{path} is not in canonical form: run python scripts/manifest.py")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=None, help="default: $ZOO_MANIFEST or the packaged file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the file is invalid or not canonical")
    mode.add_argument("--expand", metavar="TAG", help="print the expanded entry of TAG")
    args = parser.parse_args(argv)
    path = args.manifest or manifest_path()
    try:
        if args.expand:
            print(json.dumps(load_manifest(path).get(args.expand).data, indent=1))
            return 0
        problems = check(path)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"manifest: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{path}: valid and canonical ({len(load_manifest(path).weights)} tags)")
        return 1 if problems else 0
    schema_problems = [p for p in problems if "canonical form" not in p]
    if schema_problems:
        print("\n".join(schema_problems), file=sys.stderr)
        return 1
    atomic_write(path, canonical(json.loads(path.read_text(encoding="utf-8"))))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
