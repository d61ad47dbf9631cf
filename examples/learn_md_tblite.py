#!/usr/bin/env python
"""On-the-fly learning with a quantum-mechanical reference: GFN1-xTB from tblite (issue 7, example 5).

Langevin MD of an ethanol molecule (C, H, O: a three-species MTP) in ASE, with forces from the
learner (in-process, `PotentialCalculator`), which calls tblite's GFN1-xTB (a semi-empirical
tight-binding method, `pip install tblite`) whenever the MTP extrapolates.

The run starts the way one would start with any new molecule: GFN1-xTB on a handful of randomly
displaced copies of the start structure, and a level-8 MTP fitted to them (`training=`). Held
requests are answered with the GFN1-xTB result (`answer_with="reference"`), which costs nothing
extra here. At the end the final MTP is compared with GFN1-xTB on snapshots of a separate
GFN1-xTB MD run (other random seeds), which the learner never saw.

    python examples/learn_md_tblite.py [--steps 5000] [--temperature 500] [--seed 0] [--run-dir tb-run]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

# one thread per process: with more, small QRs on 2 busy cores wait for each other (measured 25x slower), and
# after Numba's OpenMP kernels have run on 2 threads, tblite's own OpenMP calls are 200x slower (measured)
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import numpy as np  # after the thread settings: numpy reads them when it loads
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from mtp_driver.calculator import MTPCalculator
from mtp_driver.potential import PotentialCalculator
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.reference import Reference
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp

GFN1 = Reference(calculator="tblite.ase:TBLite", kwargs={"method": "GFN1-xTB", "verbosity": 0})
SPECIES = ["C", "H", "O"]
TIME_STEP = 0.5 * units.fs
FRICTION = 0.01 / units.fs  # 10 ps^-1, the value ASE's documentation suggests


def langevin(atoms, temperature: float, seed: int) -> Langevin:
    """Thermal velocities and a Langevin thermostat, both from seeded generators (runs are repeatable)."""
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(seed))
    return Langevin(atoms, TIME_STEP, temperature_K=temperature, friction=FRICTION, fixcm=False,
                    rng=np.random.default_rng(seed + 1))


def displaced_copies(atoms, count: int, seed: int) -> list:
    """`count` copies of `atoms` with random displacements of 0.02 to 0.1 Å (standard deviation)."""
    rng = np.random.default_rng(seed)
    copies = []
    for amplitude in np.linspace(0.02, 0.1, count):
        copy = atoms.copy()
        copy.positions += rng.normal(0.0, amplitude, copy.positions.shape)
        copies.append(copy)
    return copies


def reference_snapshots(atoms, temperature: float, steps: int, count: int, seed: int) -> list:
    """`count` labelled snapshots of GFN1-xTB's own Langevin MD (`steps` long, from `atoms`): the test set."""
    from tblite.ase import TBLite

    atoms = atoms.copy()
    atoms.calc = TBLite(**GFN1.kwargs)
    dynamics = langevin(atoms, temperature, seed)
    snapshots = []
    dynamics.attach(lambda: snapshots.append(atoms.copy()), interval=max(steps // count, 1))
    dynamics.run(steps)
    return [GFN1.compute(snapshot) for snapshot in snapshots[-count:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--temperature", type=float, default=500.0)
    parser.add_argument("--seed", type=int, default=0, help="of the displacements, velocities and thermostats")
    parser.add_argument("--start-structures", type=int, default=16, help="displaced copies computed before the MD")
    parser.add_argument("--test-snapshots", type=int, default=20)
    parser.add_argument("--refit-iterations", type=int, default=100)
    parser.add_argument("--run-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="tb-run-")))
    args = parser.parse_args()
    start = molecule("CH3CH2OH")
    started = time.perf_counter()
    starting_set = [GFN1.compute(copy) for copy in displaced_copies(start, args.start_structures, args.seed)]
    settings = LearnSettings(species=tuple(SPECIES), reference=GFN1, threshold_save=2.0, threshold_break=5.0,
                             answer_with="reference", refit_iterations=args.refit_iterations, seed=args.seed)
    learner = Learner(untrained_mtp(8, len(SPECIES), 0.9, 4.0, species=SPECIES), args.run_dir / "learning",
                      settings, training=starting_set)
    atoms = start.copy()
    atoms.calc = PotentialCalculator(learner)
    langevin(atoms, args.temperature, args.seed).run(args.steps)
    learner.close()  # the final refit of all parameters
    wall = time.perf_counter() - started
    summary = learner.summary()

    test_set = reference_snapshots(start, args.temperature, 10 * args.test_snapshots, args.test_snapshots,
                                   args.seed + 100)
    calculator = MTPCalculator(learner.mtp, species=SPECIES)
    errors = [calculator.get_forces(snapshot) - snapshot.get_forces() for snapshot in test_set]
    force_rmse = float(np.sqrt(np.mean(np.square(errors))))
    force_scale = float(np.sqrt(np.mean(np.square([snapshot.get_forces() for snapshot in test_set]))))
    result = dict(steps=args.steps, seed=args.seed, start_calls=len(starting_set),
                  reference_calls=summary["reference_calls"], retrainings=summary["retrainings"],
                  quarantined=summary["quarantined"], wall_s=wall, force_rmse=force_rmse, force_scale=force_scale,
                  snapshots=len(test_set))
    print(f"ethanol, {args.temperature:.0f} K, {args.steps} steps of 0.5 fs: {len(starting_set)} + "
          f"{summary['reference_calls']} GFN1-xTB calls (start + on the fly), {wall:.0f} s; final MTP force RMSE "
          f"vs GFN1-xTB on {len(test_set)} snapshots of a separate GFN1-xTB MD run {force_rmse:.3f} eV/Å "
          f"(forces themselves: RMS {force_scale:.3f} eV/Å)")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
