"""How a CLI module adds a subcommand: one call that names it, its function and its one-line help."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable


def add_command(
    subparsers: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` that runs ``func(args) -> int``; ``func``'s docstring is its ``--help`` description."""
    parser = subparsers.add_parser(name, help=help, description=inspect.getdoc(func))
    parser.set_defaults(func=func)
    return parser
