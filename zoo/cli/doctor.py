"""``zoo doctor [MODEL]``: versions, caches, network settings and the state of each weight source."""

from __future__ import annotations

import argparse


def _cmd_doctor(args: argparse.Namespace) -> int:
    from zoo.weights.doctor import doctor_report

    for line in doctor_report(args.model):
        print(line, flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check versions, caches, offline mode and (for a model) each weight source",
        description="Report what the weights machinery sees; with MODEL, HEAD each source (short timeout), "
        "say whether it is cached and what to do next. Exit 0 when the report could be made.",
    )
    p.add_argument("model", nargs="?", help="model name (every tag) or one weight tag")
    p.set_defaults(func=_cmd_doctor)
