"""`mtp-driver hull`."""

from __future__ import annotations

import json
import sys

from .options import add_settings_options, add_species, settings_from_args


def add(commands) -> None:
    from mtp_driver.screen.settings import RelaxSettings

    p = commands.add_parser(
        "hull", help="formation energies and the convex hull of relaxed structures (`relax` output)",
        description="Formation energies per atom against the lowest pure structure of each element, the convex hull "
        "(ASE's PhaseDiagram) and each structure's energy above it, of the converged structures of RELAXED. With "
        "--verify RUN_DIR every structure within WINDOW x the model's energy error of the hull is relaxed again "
        "with that learning run's reference (from the model's geometry; the relaxation options below, as given to "
        "`relax`) and the hull is rebuilt with the reference energies, until every structure in the window is "
        "verified.")
    p.add_argument("relaxed", metavar="RELAXED", help="relaxed structures with energies (`relax` output, any format)")
    add_species(p, required=True)
    p.add_argument("--table", metavar="HULL.csv", help="one row per structure: composition, formation energy, "
                   "energy above the hull, on hull, verified (default: RELAXED's name + .hull.csv)")
    p.add_argument("--plot", metavar="HULL.png", help="formation energy vs composition, the hull drawn (binaries)")
    verify = p.add_argument_group("verification with the reference (--verify)")
    verify.add_argument("--verify", metavar="RUN_DIR", help="the learning run whose reference verifies the hull")
    verify.add_argument("--window", type=float, default=3.0,
                        help="verify structures within this many times the model's energy error of the hull "
                        "(default: %(default)s)")
    verify.add_argument("--error", type=float, metavar="MEV_PER_ATOM",
                        help="the model's energy error (default: the validation RMSE of RUN_DIR's final fit)")
    verify.add_argument("--output", metavar="VERIFIED", help="RELAXED with the verified structures replaced")
    add_settings_options(verify, RelaxSettings)
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from mtp_driver.io.species import parse_species
    from mtp_driver.io.structures import read_structures, write_structures
    from mtp_driver.screen.hull import build_hull, plot_hull, write_table
    from mtp_driver.screen.settings import RelaxSettings
    from mtp_driver.screen.verify import run_energy_error, run_reference, verification_summary, verify_hull

    species = parse_species(args.species)
    structures = read_structures(args.relaxed, species=species)
    if not structures:
        raise ValueError(f"{args.relaxed}: no structures")
    hull = build_hull(structures, species)
    summary = dict(structures=len(structures), excluded=len(hull.excluded), on_hull=len(hull.on_hull()))
    if args.verify:
        error = 1e-3 * args.error if args.error is not None else run_energy_error(args.verify)
        window = args.window * error
        print(f"verifying every structure within {1e3 * window:.3g} meV/atom of the hull with the reference of "
              f"{args.verify} ...", file=sys.stderr)
        verification = verify_hull(structures, species, window, run_reference(args.verify),
                                   settings_from_args(args, RelaxSettings))
        summary.update(verification_summary(verification, hull), window_mev=1e3 * window)
        hull = verification.hull
        if args.output:
            write_structures(args.output, verification.structures, species=species)
    table = args.table or str(Path(args.relaxed).with_suffix("")) + ".hull.csv"
    write_table(hull, table)
    if args.plot:
        plot_hull(hull, args.plot, title=Path(args.relaxed).name)
    for point in sorted(hull.on_hull(), key=lambda p: tuple(p.fractions.values())):
        print(f"on the hull: structure {point.index} {point.formula}, formation energy "
              f"{1e3 * point.formation_energy:.2f} meV/atom" + (" (verified)" if point.verified else ""))
    print(f"{table}: " + json.dumps(summary))
    return 0
