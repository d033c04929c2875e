#!/usr/bin/env python
"""Benchmark the zoo's anti-aliased models and blur layers against the official package, timm and
torchvision in one process (same as ``zoo bench``). Example: ``python scripts/benchmark.py --quick``."""

from __future__ import annotations

import argparse
import sys

from zoo.cli.bench import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
