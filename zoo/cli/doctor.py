"""``zoo doctor [MODEL]``: versions, caches, network settings and the state of each weight source."""

from __future__ import annotations

import argparse

from zoo.cli._command import add_command


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Report what the weights machinery sees; with MODEL, HEAD each source (short timeout), say whether it is cached
    and what to do next. Exit 0 when the report could be made.
    """
    from zoo.weights.doctor import doctor_report

    for line in doctor_report(args.model):
        print(line, flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "doctor", _cmd_doctor, "check versions, caches, offline mode and (for a model) each weight source"
    )
    p.add_argument("model", nargs="?", help="model name (every tag) or one weight tag")
