"""`mtp-driver lammps`."""

from __future__ import annotations

import json
import sys

from .options import add_learner_options, add_species


def add(commands) -> None:
    p = commands.add_parser(
        "lammps", help="run a LAMMPS input whose `fix ID all external pf/callback 1 1` stands where a pair_style "
        "would: the MTP answers it (under mpirun -n N: domain-decomposed over N ranks), optionally learning on "
        "the fly (--learn RUN)")
    p.add_argument("input", metavar="IN.lmp", help="LAMMPS input (units metal; LAMMPS type t = potential type t-1)")
    p.add_argument("--potential", required=True, metavar="POT.mtp",
                   help="the MTP (with --learn: the starting one, untrained from `init` or trained)")
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
    learning = p.add_argument_group(
        "learning on the fly", "with --learn RUN: every step graded; a step above threshold_save goes to the learner "
        "(rank 0), which holds the run above threshold_break while the reference computes and the MTP is "
        "retrained; the same command resumes a killed run without repeating a reference call")
    learning.add_argument("--learn", metavar="RUN", help="the learner's run directory (journal, references, models)")
    add_learner_options(learning)
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.calculator import MTPCalculator
    from mtp_driver.io.species import parse_species
    from mtp_driver.lammps.run import run_input

    species = parse_species(args.species) or None
    if args.learn:
        from .options import learner_from_args

        if not species:
            print("mtp-driver lammps: error: --learn needs --species (the elements of LAMMPS types 1, 2, ...)",
                  file=sys.stderr)
            return 2
        args.run_dir = args.learn
        calculator, make_learner = None, lambda: learner_from_args(args)
    else:
        calculator = MTPCalculator(args.potential, species=species, active_set=args.active_set)
        make_learner = None
    try:
        fix = run_input(args.input, calculator, args.fix, dict(args.var), args.log, args.margin,
                        make_learner=make_learner, species=species)
    except (ImportError, RuntimeError) as exc:
        print(f"mtp-driver lammps: error: {exc}", file=sys.stderr)
        return 1
    if fix.learning is not None and fix.learning.summary is not None:
        print(json.dumps(fix.learning.summary))
    return 0
