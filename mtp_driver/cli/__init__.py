"""`mtp-driver` command line: one entry point, thin subcommands over the library API (one module per command)."""

from __future__ import annotations

import argparse
import sys

from . import (calc_efs, calc_errors, calc_grade, candidates, demo, hull, init, lammps, learn, learn_report,
               learn_server, relax, report, select_add, serve, train)

COMMANDS = (demo, init, calc_efs, calc_errors, serve, learn, learn_server, learn_report, train, report, calc_grade,
            select_add, candidates, relax, hull, lammps)  # in the order of `mtp-driver --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtp-driver", description=__doc__.split(" (")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (OSError, ValueError) as exc:  # user errors (bad file, bad species): one line, no traceback
        print(f"mtp-driver {args.command}: error: {exc}", file=sys.stderr)
        return 2
