"""What learning on the fly costs per request once the model has converged (no holds): the
learner's `compute` (grade in the same kernel pass, request trace, the policy) against `serve`'s
potential (`MTPPotential`) on the same model, per request, at 108 and 2048 atoms, one thread.

    NUMBA_NUM_THREADS=1 python benchmarks/bench_learner.py [--rounds 7] [--calls 20]

The model is the level-16 MTP of bench_efs.py (MLIP's fitted Li.mtp, max_dist 5.0 Å, Cu as type
0); the learner starts from it with 8 rattled EMT-labelled cells as its training data (its active
set) and thresholds no request reaches, so it only grades. The two alternate for `--rounds` rounds
of `--calls` requests on the same rattled structures (this machine is noisy); the median per
request of each is kept. Target (issue 15): learner / serve <= 1.15.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from bench_efs import CUTOFF, POTENTIALS

from mtp_driver.calculator import MTPCalculator, MTPPotential
from mtp_driver.io.mtp_file import read_mtp
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.settings import LearnSettings

SIZES = {108: (3, 3, 3), 2048: (8, 8, 8)}  # conventional fcc cells


def rattled(repeat, seed: int):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.positions += np.random.default_rng(seed).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def labelled(atoms):
    atoms = atoms.copy()
    atoms.calc = EMT()
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    return atoms


def per_request(potential, structures) -> float:
    started = time.perf_counter()
    for atoms in structures:
        potential.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    return (time.perf_counter() - started) / len(structures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20, help="requests per round")
    args = parser.parse_args()
    mtp = read_mtp(POTENTIALS[16]).copy(max_dist=CUTOFF)
    print("| atoms | serve ms/request | learner ms/request | learner / serve |")
    print("|---:|---:|---:|---:|")
    for natoms, repeat in SIZES.items():
        training = [labelled(rattled((2, 2, 2), seed)) for seed in range(8)]
        structures = [rattled(repeat, 100 + k) for k in range(args.calls)]
        with tempfile.TemporaryDirectory() as run_dir:
            settings = LearnSettings(species=("Cu",), threshold_save=1e9, threshold_break=1e9)
            learner = Learner(mtp, run_dir, settings, training=training)
            serve = MTPPotential(MTPCalculator(mtp, species=["Cu"]), "bench")
            for potential in (serve, learner):  # compile and warm up
                per_request(potential, structures[:2])
            times = {"serve": [], "learner": []}
            for _ in range(args.rounds):
                times["serve"].append(per_request(serve, structures))
                times["learner"].append(per_request(learner, structures))
            learner.close(final_refit=False)
        serve_ms, learner_ms = (1e3 * statistics.median(times[name]) for name in ("serve", "learner"))
        print(f"| {natoms} | {serve_ms:.2f} | {learner_ms:.2f} | {learner_ms / serve_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
