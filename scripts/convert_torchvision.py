#!/usr/bin/env python
"""A torchvision checkpoint or weights enum -> zoo folder (model.safetensors + config.json), by key name.

Same as `zoo convert torchvision`; run with --help for the arguments.
"""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "torchvision", *sys.argv[1:]]))
