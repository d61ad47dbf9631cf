"""`mtp-driver init`."""

from __future__ import annotations

from mtp_driver.io.species import parse_species

from .options import add_species


def add(commands) -> None:
    p = commands.add_parser("init", help="write an untrained potential of a given level",
                            description="Generate the MTP basis of LEVEL and write an untrained .mtp file.")
    p.add_argument("level", type=int, help="even level 2..28")
    add_species(p, required=True)
    p.add_argument("--min-dist", type=float, required=True, metavar="ANGSTROM")
    p.add_argument("--max-dist", type=float, required=True, metavar="ANGSTROM", help="cutoff radius")
    p.add_argument("--radial-basis-size", type=int, default=8)
    p.add_argument("-o", "--output", required=True, metavar="UNTRAINED.mtp")
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.io.mtp_file import write_mtp
    from mtp_driver.mtp.basis import untrained_mtp

    species = parse_species(args.species)
    mtp = untrained_mtp(args.level, len(species), args.min_dist, args.max_dist, args.radial_basis_size,
                        species=species)
    write_mtp(mtp, args.output)
    print(f"{args.output}: level {mtp.level}, {len(species)} species, {mtp.alpha_scalar_moments} basis functions, "
          f"{mtp.parameter_count} parameters")
    return 0
