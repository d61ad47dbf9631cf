"""`mtp-driver candidates`."""

from __future__ import annotations

from .options import add_species


def add(commands) -> None:
    p = commands.add_parser(
        "candidates", help="candidate structures to screen: derivative superstructures (icet), random crystals (pyxtal)",
        description="Write candidate structures to OUT: every derivative superstructure of the parent lattices over "
        "the species up to a number of atoms (icet's enumerate_structures), and/or random symmetric crystals "
        "(pyxtal), at Vegard's volume, perturbed a little so that relaxations have work to do. Needs "
        "pip install 'mtp-driver[screen]'.")
    p.add_argument("output", metavar="OUT", help=".cfg or any ASE-writable file")
    add_species(p, required=True)
    p.add_argument("--lattice", nargs="+", default=[], metavar="LATTICE:MAX_ATOMS",
                   help="parent lattices and the largest cell of each, e.g. fcc:8 bcc:4 hcp:4")
    p.add_argument("--random", type=int, default=0, metavar="N", help="N random crystals (pyxtal)")
    p.add_argument("--counts", metavar="N1,N2,...", help="with --random: atoms of each species per cell")
    p.add_argument("--rattle", type=float, default=0.02, help="Å, the atoms' random displacements (default: %(default)s)")
    p.add_argument("--strain", type=float, default=0.02, help="largest strain component (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.io.species import parse_species
    from mtp_driver.io.structures import write_structures
    from mtp_driver.screen.candidates import derivative_structures, perturbed, random_crystals

    species = parse_species(args.species)
    structures = []
    for item in args.lattice:
        lattice, _, size = item.partition(":")
        if not size.isdigit():
            raise ValueError(f"--lattice {item!r}: expected LATTICE:MAX_ATOMS, e.g. fcc:8")
        structures += derivative_structures(lattice, species, int(size))
    if args.random:
        if not args.counts:
            raise ValueError("--random needs --counts, the atoms of each species per cell, e.g. --counts 2,2")
        counts = [int(count) for count in args.counts.split(",")]
        if len(counts) != len(species):
            raise ValueError(f"--counts {args.counts}: one count per species ({','.join(species)})")
        structures += random_crystals(species, counts, args.random, args.seed)
    if not structures:
        raise ValueError("nothing to write: give --lattice and/or --random")
    structures = perturbed(structures, args.rattle, args.strain, args.seed)
    write_structures(args.output, structures, species=species)
    print(f"{args.output}: {len(structures)} candidates")
    return 0
