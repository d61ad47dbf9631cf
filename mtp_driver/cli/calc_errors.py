"""`mtp-driver calc-errors`."""

from __future__ import annotations

from .options import add_species, calculator_and_species


def add(commands) -> None:
    p = commands.add_parser("calc-errors", help="errors of a potential on a labelled database (like mlp calc-errors)")
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("database", metavar="DB", help=".cfg or any ASE-readable file with reference results")
    add_species(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.calculator import predict
    from mtp_driver.io.structures import read_structures
    from mtp_driver.metrics import error_table, format_error_table

    calculator, species = calculator_and_species(args)
    references = read_structures(args.database, species=species)
    print(f"{args.database}: {len(references)} configurations")
    print(format_error_table(error_table(references, predict(calculator, references))))
    return 0
