"""`mtp-driver calc-efs`."""

from __future__ import annotations

from .options import add_species, calculator_and_species


def add(commands) -> None:
    p = commands.add_parser("calc-efs", help="energies, forces and stresses of configurations (like mlp calc-efs)")
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("input", metavar="IN", help=".cfg or any ASE-readable file")
    p.add_argument("output", metavar="OUT", help=".cfg or any ASE-writable file")
    add_species(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.calculator import predict
    from mtp_driver.io.structures import read_structures, write_structures

    calculator, species = calculator_and_species(args)
    predictions = predict(calculator, read_structures(args.input, species=species))
    write_structures(args.output, predictions, species=species)
    print(f"{args.output}: {len(predictions)} configurations")
    return 0
