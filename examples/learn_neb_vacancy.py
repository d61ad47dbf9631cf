#!/usr/bin/env python
"""NEB of a vacancy hop in fcc Cu learned on the fly (issue 7, example 3).

The endpoints of the shipped 107-atom vacancy-hop band are relaxed and a climbing-image NEB is
converged with forces from one on-the-fly learner shared by all images (in-process, through
`PotentialCalculator`). It starts from an untrained level-10 MTP and calls EMT when the MTP
extrapolates; each NEB pass ends with a refit of all parameters. The final MTP then converges the
NEB on its own, and the same NEB with EMT itself gives the reference barrier.

    python examples/learn_neb_vacancy.py [--images 5] [--fmax 0.05] [--run-dir neb-run]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import ase.io
from ase.calculators.emt import EMT
from ase.mep import NEB
from ase.optimize import BFGS, FIRE

from mtp_driver.calculator import MTPCalculator
from mtp_driver.potential import PotentialCalculator
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp

BAND = Path(__file__).resolve().parents[1] / "protocols" / "structures" / "cu107_vacancy_hop_band.extxyz"


def barrier(calculator, images: int, fmax: float) -> tuple[float, bool, int]:
    """Relax the endpoints, then a climbing-image NEB; (barrier eV, converged, optimiser steps)."""
    ends = [ase.io.read(BAND, 0), ase.io.read(BAND, -1)]
    for atoms in ends:
        atoms.calc = calculator
        BFGS(atoms, logfile=None).run(fmax=fmax, steps=300)
    band = [ends[0]] + [ends[0].copy() for _ in range(images)] + [ends[1]]
    for image in band:
        image.calc = calculator
    neb = NEB(band, k=0.1, climb=True, method="improvedtangent", allow_shared_calculator=True)
    neb.interpolate(mic=True)
    optimizer = FIRE(neb, logfile=None)
    converged = optimizer.run(fmax=fmax, steps=500)
    energies = [image.get_potential_energy() for image in band]
    return max(energies) - energies[0], bool(converged), optimizer.nsteps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    parser.add_argument("--passes", type=int, default=2, help="learning NEB passes before the final one")
    parser.add_argument("--refit-iterations", type=int, default=200, help="L-BFGS iterations of each refit")
    parser.add_argument("--run-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="neb-run-")))
    args = parser.parse_args()
    # a saddle point is where errors matter most: hold already at grade 3
    learner = Learner(untrained_mtp(10, 1, 2.0, 5.0, species=["Cu"]), args.run_dir / "learning",
                      LearnSettings(species=("Cu",), threshold_save=1.5, threshold_break=3.0,
                                    refit_iterations=args.refit_iterations))
    passes = []
    for _ in range(args.passes):  # each pass ends with a refit of all parameters on everything learnt so far
        passes.append(barrier(PotentialCalculator(learner), args.images, args.fmax))
        learner.refit_now("end of NEB pass")
    learner.close(final_refit=False)
    learned, converged, steps = barrier(MTPCalculator(learner.mtp, species=["Cu"]), args.images, args.fmax)
    reference, reference_converged, _ = barrier(EMT(), args.images, args.fmax)
    result = dict(barrier_learned=learned, barrier_emt=reference, converged=converged and reference_converged,
                  barriers_during_learning=[b for b, _, _ in passes],
                  neb_steps=steps, reference_calls=learner.summary()["reference_calls"], requests=learner.step)
    print(f"vacancy hop in fcc Cu (107 atoms, {args.images} moving images): barrier learned on the fly "
          f"{learned:.3f} eV, EMT {reference:.3f} eV; {result['reference_calls']} EMT calls in "
          f"{learner.step} force calls")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
