#!/usr/bin/env python
"""Cost of the extrapolation grade (issue 5): per MD step relative to energy+forces, and per active set.

System as in bench_efs.py: fcc Cu (a = 3.61 Å, cubic cell repeated, atoms rattled by 0.05 Å,
fixed seed), cutoff 5.0 Å, MLIP's fitted Li.mtp (level 16, 125 parameters) with ``max_dist`` 5.0 and
Cu as type 0. What it prints:

* per call, microseconds per atom of ``MTPCalculator.calculate(atoms, ["energy", "forces"])``
  (neighbour list + kernels), plain and with an active set in cfg and in nbh mode (nbh also gives
  per-atom grades), the median and the fastest of 15 calls after a warm-up, all in this one process and
  interleaved in rotating order so that load from other jobs hits each variant alike; the ratios graded / plain;
* the time to build a configuration-mode active set from 1000 rattled 32-atom cells at level 16
  (rows + column choice + MaxVol), and a calc-grade-like job at level 8: grading five 1372-atom
  cells against an active set of 200 cells. MLIP-2's figure for the latter (issue 5, measured
  earlier on this machine kind, not in this run): 1.8 s.

No timed assertions. Run from the repository root: ``python benchmarks/bench_grade.py [--atoms 2048]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numba
import numpy as np
from ase.build import bulk
from ase.calculators.calculator import all_changes

from mtp_driver import MTPCalculator
from mtp_driver.active import build_active_set, configuration_grades
from mtp_driver.active.rows import site_rows
from mtp_driver.io.mtp_file import read_mtp
from mtp_driver.mtp.basis import untrained_mtp

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MTP_BENCH_DATA", REPO.parent / "shared" / "data" / "mlearn_zuo2020" / "fitted_mtp"))
LATTICE = 3.61  # Å
RATTLE = 0.05  # Å
CUTOFF = 5.0  # Å
SEED = 20240601
MLIP2_CALC_GRADE_SECONDS = 1.8  # 5 x 1372 atoms, level 8 (issue 5)


def rattled_cells(repeat: int, count: int, seed: int, rattle: float = RATTLE) -> list:
    """`count` fcc Cu cells of 4 repeat^3 atoms, each rattled by `rattle` Å."""
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat(repeat)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        cells.append(atoms)
    return cells


def microseconds_per_atom(calculator, atoms) -> float:
    start = time.perf_counter()
    calculator.calculate(atoms, ["energy", "forces"], all_changes)
    return 1e6 * (time.perf_counter() - start) / len(atoms)


def step_cost(mtp, n_atoms: int, repeats: int) -> None:
    repeat = round((n_atoms / 4) ** (1 / 3))
    atoms = rattled_cells(repeat, 1, SEED)[0]
    training = rattled_cells(2, 200, SEED + 1)
    calculators = {"plain": MTPCalculator(mtp, species=["Cu"])}
    for mode in ("cfg", "nbh"):
        active_set = build_active_set(mtp, training, species=["Cu"], mode=mode)
        calculators[f"grade, {mode} mode"] = MTPCalculator(mtp, species=["Cu"], active_set=active_set)
    times = {name: [] for name in calculators}
    for calculator in calculators.values():  # warm-up: JIT and first-touch
        calculator.calculate(atoms, ["energy", "forces"], all_changes)
    names = list(calculators)
    for round_index in range(repeats):
        for k in range(len(names)):  # the order rotates: no variant always runs right after another
            name = names[(round_index + k) % len(names)]
            times[name].append(microseconds_per_atom(calculators[name], atoms))
    plain = statistics.median(times["plain"])
    fastest_plain = min(times["plain"])
    print(f"energy+forces per call, {len(atoms)} atoms, level {mtp.level}, {mtp.parameter_count} parameters "
          f"(median of {repeats}, neighbour list included):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:16s} median {median:8.2f} us/atom (ratio {median / plain:.3f}), "
              f"fastest {min(values):8.2f} us/atom (ratio {min(values) / fastest_plain:.3f})")


def build_cost(mtp) -> None:
    training = rattled_cells(2, 1000, SEED + 2)
    start = time.perf_counter()
    active_set = build_active_set(mtp, training, species=["Cu"], mode="cfg")
    seconds = time.perf_counter() - start
    print(f"active set from 1000 x 32-atom cells (cfg mode, level {mtp.level}): {seconds:.2f} s, "
          f"{active_set.size} active rows")


def calc_grade_cost() -> None:
    rng = np.random.default_rng(SEED)
    level8 = untrained_mtp(8, 1, 2.0, CUTOFF, species=["Cu"])
    S, K, R = level8.species_count, level8.radial_funcs_count, level8.radial_basis_size
    level8 = level8.copy(radial_coeffs=rng.normal(size=(S, S, K, R)), species_coeffs=np.zeros(S),
                         moment_coeffs=0.01 * rng.normal(size=level8.alpha_scalar_moments))
    active_set = build_active_set(level8, rattled_cells(2, 200, SEED + 3), mode="cfg")
    cells = rattled_cells(7, 5, SEED + 4)  # 1372 atoms each
    start = time.perf_counter()
    grades = configuration_grades(active_set, site_rows(level8, cells, None)).grades
    seconds = time.perf_counter() - start
    print(f"grading 5 x {len(cells[0])}-atom cells at level 8 (calc-grade without file I/O): {seconds:.3f} s "
          f"(max grade {grades.max():.3g}); MLIP-2 calc-grade measured earlier: {MLIP2_CALC_GRADE_SECONDS} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=2048, help="4 k^3 atoms (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="Numba threads (default: %(default)s)")
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    print(f"{args.threads} Numba thread(s)")
    mtp = read_mtp(DATA / "Li.mtp").copy(max_dist=CUTOFF)
    step_cost(mtp, args.atoms, args.repeats)
    build_cost(mtp)
    calc_grade_cost()


if __name__ == "__main__":
    main()
