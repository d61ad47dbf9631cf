"""`mtp-driver` command line: one entry point, thin subcommands over the library API."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtp-driver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_init(commands)
    _add_calc_efs(commands)
    _add_calc_errors(commands)
    _add_serve(commands)
    return parser


def _species_list(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _add_demo(commands) -> None:
    p = commands.add_parser("demo", help="run the Quick start job (MD of fcc Cu with a shipped MTP)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeat", type=int, default=4, help="supercell of repeat^3 cubic fcc cells")
    p.set_defaults(run=_demo)


def _demo(args) -> int:
    from mtp_driver.demo import run_demo

    run_demo(repeat=args.repeat, steps=args.steps)
    return 0


def _add_init(commands) -> None:
    p = commands.add_parser("init", help="write an untrained potential of a given level",
                            description="Generate the MTP basis of LEVEL and write an untrained .mtp file.")
    p.add_argument("level", type=int, help="even level 2..28")
    p.add_argument("--species", required=True, help="chemical symbols of the types, e.g. Cu,Ag")
    p.add_argument("--min-dist", type=float, required=True, metavar="ANGSTROM")
    p.add_argument("--max-dist", type=float, required=True, metavar="ANGSTROM", help="cutoff radius")
    p.add_argument("--radial-basis-size", type=int, default=8)
    p.add_argument("-o", "--output", required=True, metavar="UNTRAINED.mtp")
    p.set_defaults(run=_init)


def _init(args) -> int:
    from mtp_driver.io.mtp_file import write_mtp
    from mtp_driver.mtp.basis import untrained_mtp

    species = _species_list(args.species)
    mtp = untrained_mtp(args.level, len(species), args.min_dist, args.max_dist, args.radial_basis_size,
                        species=species)
    write_mtp(mtp, args.output)
    print(f"{args.output}: level {mtp.level}, {len(species)} species, {mtp.alpha_scalar_moments} basis functions, "
          f"{mtp.parameter_count} parameters")
    return 0


def _add_calc_efs(commands) -> None:
    p = commands.add_parser("calc-efs", help="energies, forces and stresses of configurations (like mlp calc-efs)")
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("input", metavar="IN", help=".cfg or any ASE-readable file")
    p.add_argument("output", metavar="OUT", help=".cfg or any ASE-writable file")
    p.add_argument("--species", help="chemical symbols of the potential's types, e.g. Nb,Mo,Ta,W")
    p.set_defaults(run=_calc_efs)


def _calculator_and_species(args):
    from mtp_driver.calculator import MTPCalculator

    calculator = MTPCalculator(args.potential, species=_species_list(args.species))
    return calculator, calculator.species


def _calc_efs(args) -> int:
    from mtp_driver.calculator import predict
    from mtp_driver.io.structures import read_structures, write_structures

    calculator, species = _calculator_and_species(args)
    predictions = predict(calculator, read_structures(args.input, species=species))
    write_structures(args.output, predictions, species=species)
    print(f"{args.output}: {len(predictions)} configurations")
    return 0


def _add_calc_errors(commands) -> None:
    p = commands.add_parser("calc-errors", help="errors of a potential on a labelled database (like mlp calc-errors)")
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("database", metavar="DB", help=".cfg or any ASE-readable file with reference results")
    p.add_argument("--species", help="chemical symbols of the potential's types, e.g. Nb,Mo,Ta,W")
    p.set_defaults(run=_calc_errors)


def _calc_errors(args) -> int:
    from mtp_driver.calculator import predict
    from mtp_driver.io.structures import read_structures
    from mtp_driver.metrics import error_table, format_error_table

    calculator, species = _calculator_and_species(args)
    references = read_structures(args.database, species=species)
    print(f"{args.database}: {len(references)} configurations")
    print(format_error_table(error_table(references, predict(calculator, references))))
    return 0


def _add_serve(commands) -> None:
    from mtp_driver.ipi.options import add_endpoint_arguments, add_potential_arguments

    p = commands.add_parser(
        "serve",
        help="serve a potential to i-PI or ASE over the i-PI socket protocol",
        description="Connect to an i-PI (or ASE SocketIOCalculator) server and answer its force "
        "requests until it says EXIT or goes away. SIGTERM/SIGINT stop between requests.",
    )
    add_potential_arguments(p)
    p.add_argument(
        "--template", required=True, metavar="FILE",
        help="ASE-readable structure giving the species (and periodicity) of the atoms, in the "
        "server's order; '-' reads extxyz from stdin",
    )
    add_endpoint_arguments(p)
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="S", help="keep retrying this long (default: %(default)s)")
    p.add_argument("--min-distance", type=float, default=None, metavar="ANGSTROM", help="fail if two atoms come closer")
    p.set_defaults(run=_serve)


def _serve(args) -> int:
    import logging

    from mtp_driver.ipi import DriverError, make_driver, run
    from mtp_driver.ipi.options import endpoint_from_args, spec_from_args

    logging.basicConfig(level=logging.INFO, format="mtp-driver serve: %(message)s", stream=sys.stderr)
    try:
        endpoint = endpoint_from_args(args)
        driver = make_driver(spec_from_args(args), args.template, min_distance=args.min_distance)
    except (DriverError, ValueError) as exc:
        logging.getLogger("mtp_driver.ipi").error("error: %s", exc)
        return 2
    return run(driver, endpoint, connect_timeout=args.connect_timeout)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (OSError, ValueError) as exc:  # user errors (bad file, bad species): one line, no traceback
        print(f"mtp-driver {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
