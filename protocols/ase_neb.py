"""Climbing-image NEB in ASE with one SocketIOCalculator (so one driver process) per moving image.

    python ase_neb.py --potential POT.mtp --species Cu [--initial A.xyz --final B.xyz] [--images 5]

Without --initial/--final the endpoints of the shipped Cu vacancy-hop band are used; they are
relaxed with the chosen potential first.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import ase.io
from ase.mep import NEB
from ase.optimize import BFGS, FIRE

from mtp_driver.ipi import socket_calculator
from mtp_driver.ipi.options import script_parser, spec_from_args

BAND = Path(__file__).resolve().parent / "structures" / "cu107_vacancy_hop_band.extxyz"


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--initial", default=f"{BAND}@0")
    parser.add_argument("--final", default=f"{BAND}@-1")
    parser.add_argument("--images", type=int, default=5, help="moving images (default: %(default)s)")
    parser.add_argument("--spring", type=float, default=0.1, help="eV/Å^2 (default: %(default)s)")
    parser.add_argument("--fmax", type=float, default=0.02, help="eV/Å (default: %(default)s)")
    parser.add_argument("--output", default="neb.extxyz")
    args = parser.parse_args()
    spec = spec_from_args(args)

    with contextlib.ExitStack() as stack:
        ends = [_read(args.initial), _read(args.final)]
        for atoms in ends:
            atoms.calc = stack.enter_context(socket_calculator(spec))
            BFGS(atoms, logfile=None).run(fmax=args.fmax, steps=args.steps)
        band = [ends[0]] + [ends[0].copy() for _ in range(args.images)] + [ends[1]]
        for image in band[1:-1]:
            image.calc = stack.enter_context(socket_calculator(spec))
        neb = NEB(band, k=args.spring, climb=True, method="improvedtangent")
        neb.interpolate(mic=True)
        converged = FIRE(neb, logfile="-").run(fmax=args.fmax, steps=args.steps)
        energies = [image.get_potential_energy() for image in band]
    for image in band:
        image.calc = None
    ase.io.write(args.output, band)
    print(f"barrier {max(energies) - energies[0]:.4f} eV, converged: {converged}; wrote {args.output}")


def _read(spec: str):
    path, _, index = spec.rpartition("@") if "@" in spec else (spec, "", "-1")
    return ase.io.read(path, int(index))


if __name__ == "__main__":
    main()
