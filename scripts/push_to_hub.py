#!/usr/bin/env python
"""A manifest weight -> hub folder (model.safetensors, config.json, README.md); uploads unless --dry-run.

Same as `zoo push`; run with --help for the arguments.
"""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["push", *sys.argv[1:]]))
