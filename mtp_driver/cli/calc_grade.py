"""`mtp-driver calc-grade`."""

from __future__ import annotations

from .options import active_set_and_rows, add_active_set_arguments


def add(commands) -> None:
    p = commands.add_parser(
        "calc-grade", help="extrapolation grades of configurations (like mlp calc-grade)",
        description="Choose the MaxVol active set of TRAIN.cfg and write IN with Feature MV_grade per "
        "configuration (and the AtomData column nbh_grades in nbh mode) to OUT.")
    add_active_set_arguments(p)
    p.add_argument("input", metavar="IN", help=".cfg or any ASE-readable file")
    p.add_argument("output", metavar="OUT", help=".cfg or any ASE-writable file")
    p.add_argument("--save-active-set", metavar="ACTIVE.npz",
                   help="also save the active set, for MTPCalculator(pot, active_set=ACTIVE.npz)")
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.active import configuration_grades, save_active_set
    from mtp_driver.io.structures import write_structures

    active_set, images, rows, species = active_set_and_rows(args, args.input)
    if args.save_active_set:
        save_active_set(active_set, args.save_active_set)
    grades = configuration_grades(active_set, rows)
    for c, atoms in enumerate(images):
        atoms.info["MV_grade"] = float(grades.grades[c])
        if grades.atom_grades is not None:
            atoms.arrays["nbh_grades"] = grades.atom_grades[rows.atom_starts[c]:rows.atom_starts[c + 1]]
    write_structures(args.output, images, species=species)
    print(f"{args.output}: {len(images)} configurations, grades {grades.grades.min():.3g} to "
          f"{grades.grades.max():.3g} ({active_set.mode} mode, {active_set.size} active rows)")
    return 0
