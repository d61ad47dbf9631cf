#!/usr/bin/env python
"""Screening Cu-Pd with learning on the fly (issue 16): relax every derivative structure with one learner, build
the hull, verify it with the reference, and compare with relaxing everything with the reference itself.

Candidates: every fcc derivative superstructure of Cu-Pd up to `--fcc` atoms per cell and bcc and hcp up to
`--bcc`/`--hcp` (icet's enumeration), at Vegard's volume, rattled (0.02 Å) and strained (2 %) a little. EMT is
the reference (it orders Cu-Pd by about 35 meV/atom).

1. The truth: every candidate relaxed with EMT (BFGS, cell too, fmax), counting EMT's force calls.
2. The screening: every candidate relaxed by `--walkers` walkers sharing one learner that starts from an
   untrained MTP (`mtp_driver.screen.relax_all`, what `mtp-driver relax --learn` runs), counting reference calls.
3. The hull of the screening against the truth's: the formation-energy error of the structures on the model's
   hull against EMT's energy of the same structures as they stand; then the hull verified with EMT (`mtp-driver
   hull --verify`: every structure within `--window` x the final model's validation error of the hull relaxed
   again with EMT) and the same comparison.

    python examples/alloy_hull.py [--fcc 8 --bcc 4 --hcp 4] [--level 10] [--walkers 2] [--run-dir RUN]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.calculators.emt import EMT

from mtp_driver.io.structures import write_structures
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.reference import Reference
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp
from mtp_driver.potential import ASECalculatorPotential
from mtp_driver.screen.candidates import derivative_structures, perturbed
from mtp_driver.screen.hull import Hull, build_hull
from mtp_driver.screen.relax import relax_all, status_counts
from mtp_driver.screen.settings import RelaxSettings
from mtp_driver.screen.verify import run_energy_error, verify_hull

SPECIES = ("Cu", "Pd")
MIN_DIST, CUTOFF = 2.0, 5.0  # Å


def candidates(args) -> list:
    structures = []
    for lattice, size in (("fcc", args.fcc), ("bcc", args.bcc), ("hcp", args.hcp)):
        if size:
            structures += derivative_structures(lattice, SPECIES, size)
    return perturbed(structures, rattle=0.02, strain=0.02, seed=args.seed)


class Counting(ASECalculatorPotential):
    """EMT as a `Potential` that counts its force calls."""

    def __init__(self):
        super().__init__(EMT())
        self.calls = 0

    def compute(self, positions, cell, pbc, numbers):
        self.calls += 1
        return super().compute(positions, cell, pbc, numbers)


def emt_energies(structures) -> dict[int, float]:
    """EMT's energy per atom of each structure as it stands (a single point; not counted: it measures the screening)."""
    energies = {}
    for index, atoms in enumerate(structures):
        copy = atoms.copy()
        copy.calc = EMT()
        energies[index] = copy.get_potential_energy() / len(copy)
    return energies


def hull_errors(hull: Hull, truth: Hull, energies: dict[int, float], tolerance: float = 1e-3) -> dict:
    """Formation-energy errors (meV/atom) of the structures on `hull` against EMT's formation energy of the same
    structures as they stand (`energies`, with the truth's elemental references), and whether the hull is the
    truth's: the same vertex compositions, each taken by a structure whose EMT formation energy is within `tolerance`
    eV/atom of the truth's vertex. The structure as it stands, not EMT's own relaxation of the same candidate: a
    relaxation under the model can end in another basin (1-atom bcc Cu slid to fcc along the Bain path where EMT's
    relaxation stayed in bcc), and then the model is right about the structure it gives."""
    def emt_formation(point) -> float:
        return energies[point.index] - sum(point.fractions[el] * truth.references[el] for el in SPECIES)

    errors = [1e3 * abs(point.formation_energy - emt_formation(point)) for point in hull.on_hull()]
    vertices = {round(p.fractions[SPECIES[1]], 6): p for p in hull.on_hull()}
    true_vertices = {round(p.fractions[SPECIES[1]], 6): p for p in truth.on_hull()}
    same = vertices.keys() == true_vertices.keys() and all(
        abs(emt_formation(p) - true_vertices[x].formation_energy) <= tolerance for x, p in vertices.items())
    return dict(hull_error_max_mev=max(errors, default=float("nan")),
                hull_error_mean_mev=float(np.mean(errors)) if errors else float("nan"),
                hull_compositions=sorted(vertices), truth_compositions=sorted(true_vertices), same_hull=same)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fcc", type=int, default=8, help="largest fcc derivative cell (atoms)")
    parser.add_argument("--bcc", type=int, default=4)
    parser.add_argument("--hcp", type=int, default=4)
    parser.add_argument("--level", type=int, default=10)
    parser.add_argument("--walkers", type=int, default=2)
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å")
    parser.add_argument("--window", type=float, default=3.0, help="verify within this many x the model's error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args()
    args.run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="alloy-hull-"))
    settings = RelaxSettings(fmax=args.fmax, relax_cell=True, max_steps=1000)
    structures = candidates(args)
    seconds = {}

    started = time.perf_counter()
    emt = Counting()
    truth = relax_all(structures, emt, settings)
    seconds["emt_relaxations"] = time.perf_counter() - started

    started = time.perf_counter()
    learner = Learner(untrained_mtp(args.level, len(SPECIES), MIN_DIST, CUTOFF, species=list(SPECIES)),
                      args.run_dir / "learning", LearnSettings(species=SPECIES))
    screened = relax_all(structures, learner, settings, walkers=args.walkers)
    learner.close()
    seconds["learning_relaxations"] = time.perf_counter() - started

    truth_hull, model_hull = build_hull(truth, SPECIES), build_hull(screened, SPECIES)
    error = run_energy_error(args.run_dir / "learning")
    started = time.perf_counter()
    verification = verify_hull(screened, SPECIES, args.window * error, Reference(), settings)
    seconds["verification"] = time.perf_counter() - started
    calls = learner.summary()["reference_calls"]
    for name, images in (("candidates", structures), ("emt_relaxed", truth), ("screened", screened),
                         ("verified", verification.structures)):
        write_structures(args.run_dir / f"{name}.extxyz", images)
    result = dict(
        candidates=len(structures), emt_force_calls=emt.calls, reference_calls=calls,
        fewer_calls=emt.calls / max(calls, 1), truth_status=status_counts(truth), screened_status=status_counts(screened),
        model_energy_error_mev=1e3 * error, window_mev=1e3 * args.window * error,
        before=hull_errors(model_hull, truth_hull, emt_energies(screened)),
        after=hull_errors(verification.hull, truth_hull, emt_energies(verification.structures)),
        verified=sum(verification.verified), verification_calls=verification.reference_calls,
        hull_all_verified=all(verification.verified[point.index] for point in verification.hull.on_hull()),
        learner=learner.summary(), seconds=seconds)
    print(f"{len(structures)} Cu-Pd candidates (fcc <= {args.fcc}, bcc <= {args.bcc}, hcp <= {args.hcp} atoms), "
          f"relaxed with cell to fmax {args.fmax} eV/Å")
    print(f"EMT relaxing everything: {emt.calls} force calls; learning on the fly: {calls} reference calls "
          f"({emt.calls / max(calls, 1):.1f}x fewer), {learner.summary()['retrainings']} retrainings")
    for name in ("before", "after"):
        row = result[name]
        print(f"hull {name} verification: formation-energy error of its hull structures (vs EMT's energy of them) max "
              f"{row['hull_error_max_mev']:.2f} meV/atom, mean {row['hull_error_mean_mev']:.2f}; "
              f"same hull as EMT: {row['same_hull']}")
    print(f"verified {result['verified']} structures within {result['window_mev']:.2f} meV/atom of the hull "
          f"({verification.reference_calls} EMT force calls in their relaxations)")
    print("wall time (s): " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    (args.run_dir / "alloy_hull.json").write_text(json.dumps(result, indent=1, default=str))
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
