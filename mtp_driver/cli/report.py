"""`mtp-driver report`."""

from __future__ import annotations

from .options import add_species, calculator_and_species


def add(commands) -> None:
    p = commands.add_parser("report", help="error table and parity plots of a potential on a labelled set")
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("database", metavar="DB", help=".cfg, mlearn .json[.xz], or any ASE-readable file")
    add_species(p)
    p.add_argument("--plot", metavar="PARITY.png", help="parity plots: energy per atom, forces, stress")
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.calculator import predict
    from mtp_driver.fit.dataset import read_training_structures
    from mtp_driver.metrics import error_table, format_error_table

    calculator, species = calculator_and_species(args)
    references = read_training_structures(args.database, species)
    predictions = predict(calculator, references)
    print(f"{args.database}: {len(references)} configurations")
    print(format_error_table(error_table(references, predictions)))
    if args.plot:
        from mtp_driver.fit.report import write_parity_plot

        write_parity_plot(references, predictions, args.plot, title=f"{args.potential} on {args.database}")
        print(f"{args.plot}: parity plots")
    return 0
