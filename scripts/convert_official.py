#!/usr/bin/env python
"""Official antialiased-cnns .pth -> zoo folder via the key-rename table; verifies the logits
against the oracle package when it is installed.

Same as `zoo convert official`; run with --help for the arguments.
"""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "official", *sys.argv[1:]]))
