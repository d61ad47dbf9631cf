#!/usr/bin/env python
"""A relaxation through ASE's SocketIOCalculator with on-the-fly learning (issue 7, example 4).

ASE's BFGS relaxes a rattled fcc Cu cell with a vacancy. Its forces come over the i-PI socket from
`mtp-driver`'s learner, which starts from an untrained level-8 MTP and calls EMT (the reference)
whenever the MTP extrapolates. The same relaxation with EMT directly gives the energy to compare.

    python examples/learn_relaxation_socketio.py [--run-dir relax-run] [--fmax 0.05]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from mtp_driver.io.mtp_file import write_mtp
from mtp_driver.ipi import PotentialSpec, socket_calculator
from mtp_driver.learn.journal import Journal
from mtp_driver.mtp.basis import untrained_mtp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="relax-run-")))
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.repeat)
    del start[0]
    start.rattle(0.1, seed=3)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    potential = args.run_dir / "untrained.mtp"
    write_mtp(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), potential)
    kwargs = dict(potential=str(potential), run_dir=str(args.run_dir / "learning"), species="Cu", refit_iterations=0)
    atoms = start.copy()
    with socket_calculator(PotentialSpec(calculator="mtp_driver.learn.learner:learning_potential",
                                         calculator_kwargs=kwargs)) as calculator:
        atoms.calc = calculator
        BFGS(atoms, logfile=None).run(fmax=args.fmax, steps=500)
        learned = atoms.get_potential_energy()
    reference = start.copy()
    reference.calc = EMT()
    BFGS(reference, logfile=None).run(fmax=args.fmax, steps=500)
    atoms.calc = EMT()
    calls = sum(event["event"] == "reference" for event in Journal(args.run_dir / "learning").events())
    result = dict(atoms=len(start), reference_calls=calls, energy_learned=learned,
                  energy_emt=reference.get_potential_energy(), emt_fmax_at_learned_minimum=float(
                      (atoms.get_forces() ** 2).sum(axis=1).max() ** 0.5))
    print(f"{len(start)} Cu atoms with a vacancy, BFGS to fmax {args.fmax} eV/Å through SocketIOCalculator")
    print(f"learned on the fly: {calls} EMT calls; final energy {learned:.4f} eV "
          f"(EMT relaxation: {result['energy_emt']:.4f} eV); EMT's largest force at the learned minimum "
          f"{result['emt_fmax_at_learned_minimum']:.3f} eV/Å")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
