"""Writes the starting structures of these protocols (Cu, relaxed with ASE's EMT).

    python make_structures.py                      # the shipped files in structures/
    python make_structures.py --band A.xyz B.xyz   # an i-PI NEB band between your relaxed endpoints

i-PI's NEB takes the whole band as its initial beads and needs it unwrapped: every atom moves
continuously from image to image. --band interpolates with the minimum-image convention, so an
atom that crosses the cell boundary keeps going instead of jumping back across the box.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.mep import NEB
from ase.optimize import BFGS

HERE = Path(__file__).resolve().parent / "structures"


def band(initial, final, images: int):
    path = [initial] + [initial.copy() for _ in range(images)] + [final]
    NEB(path, method="improvedtangent").interpolate(mic=True)
    return path


def relaxed(atoms):
    atoms = atoms.copy()
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=1e-3)
    atoms.calc = None
    return atoms


def shipped() -> None:
    HERE.mkdir(exist_ok=True)
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    ase.io.write(HERE / "cu108.extxyz", crystal)
    vacancy = crystal.copy()
    del vacancy[0]
    rattled = vacancy.copy()
    rattled.rattle(0.05, seed=1)
    ase.io.write(HERE / "cu107_vacancy_rattled.extxyz", rattled)
    # the nearest neighbour at (a/2, a/2, 0) hops into the vacancy at the origin
    hopper = int(np.argmin(np.linalg.norm(vacancy.positions - [1.805, 1.805, 0.0], axis=1)))
    hopped = vacancy.copy()
    hopped.positions[hopper] = [0.0, 0.0, 0.0]
    ase.io.write(HERE / "cu107_vacancy_hop_band.extxyz", band(relaxed(vacancy), relaxed(hopped), 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--band", nargs=2, metavar=("INITIAL", "FINAL"), help="relaxed endpoint structures")
    parser.add_argument("--images", type=int, default=5, help="intermediate images (default: %(default)s)")
    parser.add_argument("--output", default="band.extxyz", help="band file for --band (default: %(default)s)")
    args = parser.parse_args()
    if args.band:
        ase.io.write(args.output, band(ase.io.read(args.band[0]), ase.io.read(args.band[1]), args.images))
    else:
        shipped()


if __name__ == "__main__":
    main()
