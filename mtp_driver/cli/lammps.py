"""`mtp-driver lammps`."""

from __future__ import annotations

import sys

from .options import add_species


def add(commands) -> None:
    p = commands.add_parser(
        "lammps", help="run a LAMMPS input whose `fix ID all external pf/callback 1 1` stands where a pair_style "
        "would: the MTP answers it (under mpirun -n N: domain-decomposed over N ranks)")
    p.add_argument("input", metavar="IN.lmp", help="LAMMPS input (units metal; LAMMPS type t = potential type t-1)")
    p.add_argument("--potential", required=True, metavar="POT.mtp")
    add_species(p)
    p.add_argument("--active-set", metavar="A.npz",
                   help="grade every step (from calc-grade --save-active-set): thermo f_ID[1], and per atom "
                   "d_mtp_grade in nbh mode")
    p.add_argument("--fix", default="mtp", metavar="ID", help="ID of the fix external (default: %(default)s)")
    p.add_argument("--var", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="an index variable, as LAMMPS's -var (repeatable)")
    p.add_argument("--log", default="log.lammps", help="LAMMPS log file, 'none' for none (default: %(default)s)")
    p.add_argument("--margin", type=float, default=2.0,
                   help="Å beyond the cutoff in the ghost shell; atoms may move half of it between LAMMPS's "
                   "neighbour list builds: keep it >= the `neighbor` skin (default: %(default)s)")
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.calculator import MTPCalculator
    from mtp_driver.io.species import parse_species
    from mtp_driver.lammps.run import run_input

    calculator = MTPCalculator(args.potential, species=parse_species(args.species) or None,
                               active_set=args.active_set)
    try:
        run_input(args.input, calculator, args.fix, dict(args.var), args.log, args.margin)
    except (ImportError, RuntimeError) as exc:
        print(f"mtp-driver lammps: error: {exc}", file=sys.stderr)
        return 1
    return 0
