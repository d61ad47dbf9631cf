"""Langevin molecular dynamics in ASE, the forces coming from our driver, which
SocketIOCalculator(launch_client=...) starts and stops by itself.

    python ase_md.py --potential POT.mtp --species Cu [--temperature 300] [--steps 1000]
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from mtp_driver.ipi import socket_calculator
from mtp_driver.ipi.options import script_parser, spec_from_args

STRUCTURES = Path(__file__).resolve().parent / "structures"


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--structure", default=str(STRUCTURES / "cu108.extxyz"))
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default: %(default)s)")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs (default: %(default)s)")
    parser.add_argument("--friction", type=float, default=0.01, help="1/fs (default: %(default)s)")
    parser.add_argument("--interval", type=int, default=10, help="steps between frames (default: %(default)s)")
    parser.add_argument("--trajectory", default="md.extxyz")
    parser.add_argument("--seed", type=int, default=31415)
    args = parser.parse_args()

    atoms = ase.io.read(args.structure)
    thermalize_momenta(atoms, args.temperature, rng=np.random.default_rng(args.seed))
    with socket_calculator(spec_from_args(args)) as calc, open(args.trajectory, "w") as frames:
        atoms.calc = calc
        md = Langevin(
            atoms, args.timestep * units.fs, temperature_K=args.temperature,
            friction=args.friction / units.fs, logfile="-", loginterval=args.interval,
            rng=np.random.default_rng(args.seed + 1),
        )
        md.attach(lambda: ase.io.write(frames, atoms, format="extxyz"), interval=args.interval)
        md.run(args.steps)


if __name__ == "__main__":
    main()
