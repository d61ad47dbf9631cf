"""BFGS relaxation in ASE, the forces coming from our driver through ASE's SocketIOCalculator.

    python ase_relax.py --potential POT.mtp --species Cu [--structure FILE] [--fmax 0.01]
"""

from __future__ import annotations

from pathlib import Path

import ase.io
from ase.optimize import BFGS

from mtp_driver.ipi import socket_calculator
from mtp_driver.ipi.options import script_parser, spec_from_args

STRUCTURES = Path(__file__).resolve().parent / "structures"


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--structure", default=str(STRUCTURES / "cu107_vacancy_rattled.extxyz"))
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å (default: %(default)s)")
    parser.add_argument("--output", default="relaxed.extxyz")
    args = parser.parse_args()

    atoms = ase.io.read(args.structure)
    with socket_calculator(spec_from_args(args)) as calc:
        atoms.calc = calc
        converged = BFGS(atoms, logfile="-").run(fmax=args.fmax, steps=args.steps)
        energy = atoms.get_potential_energy()
    atoms.calc = None
    ase.io.write(args.output, atoms)
    print(f"energy {energy:.6f} eV, converged: {converged}; wrote {args.output}")


if __name__ == "__main__":
    main()
