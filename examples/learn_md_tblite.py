#!/usr/bin/env python
"""On-the-fly learning with a quantum-mechanical reference: GFN1-xTB from tblite (issue 7, example 5).

Langevin MD of an ethanol molecule (C, H, O: a three-species MTP) in ASE, with forces from the
learner (in-process, `PotentialCalculator`), which starts from an untrained level-8 MTP and calls
tblite's GFN1-xTB (a semi-empirical tight-binding method, `pip install tblite`) whenever the MTP
extrapolates. At the end the final MTP runs 50 more steps alone and is compared with GFN1-xTB there.

    python examples/learn_md_tblite.py [--steps 1000] [--temperature 500] [--run-dir tb-run]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from mtp_driver.calculator import MTPCalculator
from mtp_driver.ipi import PotentialCalculator
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.reference import Reference, ReferenceFailure
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp

GFN1 = Reference(calculator="tblite.ase:TBLite", kwargs={"method": "GFN1-xTB", "verbosity": 0})
SPECIES = ["C", "H", "O"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=500.0)
    parser.add_argument("--run-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="tb-run-")))
    args = parser.parse_args()
    atoms = molecule("CH3CH2OH")
    learner = Learner(untrained_mtp(8, len(SPECIES), 0.9, 4.0, species=SPECIES), args.run_dir / "learning",
                      LearnSettings(species=tuple(SPECIES), reference=GFN1, threshold_save=1.5, threshold_break=3.0,
                                    refit_iterations=100))
    atoms.calc = PotentialCalculator(learner)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
    dynamics = Langevin(atoms, 0.5 * units.fs, temperature_K=args.temperature, friction=0.02, fixcm=False,
                        rng=np.random.default_rng(1))
    started = time.perf_counter()
    dynamics.run(args.steps)
    learner.close()  # the final refit of all parameters
    wall = time.perf_counter() - started
    # fresh snapshots: 50 more steps with the final MTP alone
    calculator = MTPCalculator(learner.mtp, species=SPECIES)
    atoms.calc = calculator
    snapshots = []
    dynamics.attach(lambda: snapshots.append(atoms.copy()), interval=10)
    dynamics.run(50)
    errors, references = [], []
    for snapshot in snapshots[-5:]:
        try:
            reference = GFN1.compute(snapshot).get_forces()
        except ReferenceFailure as exc:  # the reference's own SCF failures are no measure of the MTP
            print(f"skipped a snapshot: {exc}")
            continue
        snapshot.calc = calculator
        errors.append(snapshot.get_forces() - reference)
        references.append(reference)
    force_rmse = float(np.sqrt(np.mean(np.square(errors))))
    summary = learner.summary()
    result = dict(steps=args.steps, reference_calls=summary["reference_calls"], force_rmse=force_rmse,
                  force_scale=float(np.sqrt(np.mean(np.square(references)))),
                  snapshots=len(errors), quarantined=summary["quarantined"], wall_s=wall)
    print(f"ethanol, {args.temperature:.0f} K, {args.steps} steps of 0.5 fs: {summary['reference_calls']} "
          f"GFN1-xTB calls, {wall:.0f} s; final MTP force RMSE vs GFN1-xTB on {len(errors)} fresh snapshots "
          f"(50 more steps with the final MTP alone) {force_rmse:.3f} eV/Å (forces themselves: RMS "
          f"{result['force_scale']:.3f} eV/Å)")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
