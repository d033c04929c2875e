#!/usr/bin/env python
"""Publish manifest weights to the Hugging Face Hub: ``python scripts/release_weights.py TAGS... [--from DIR]``.

A thin wrapper over ``zoo release`` (see ``zoo release --help``)."""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["release", *sys.argv[1:]]))
