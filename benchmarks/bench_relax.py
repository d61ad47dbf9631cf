"""Structures relaxed per minute with a trained MTP (no learning) through `mtp_driver.screen.relax_all` (what
`mtp-driver relax` runs), with 1 and 2 walkers (threads, and processes: `--processes`), against ASE relaxing the same structures with EMT, at 8, 32 and
108 atoms per cell, in one run.

    NUMBA_NUM_THREADS=1 python benchmarks/bench_relax.py [--rounds 3] [--structures 16] [--cell-filter unit]

The MTP is Zuo et al.'s fitted Cu MTP (mtp_driver/data/Cu_zuo2020.mtp); the structures are fcc Cu cells
(2x1x1, 2x2x2, 3x3x3 conventional) rattled by 0.05 Å and strained by up to 2 %, relaxed with the cell
(`--cell-filter`: ASE's FrechetCellFilter or UnitCellFilter, BFGS, fmax 0.01 eV/Å). EMT runs twice: as a user
runs it (`atoms.calc = EMT()` and ASE's optimiser on the same filter) and through `relax_all` (one walker), which
also keeps OpenBLAS to one thread; the second isolates the potential's share. The codes alternate for `--rounds`
rounds (this machine is noisy); the best round of each is kept. Thread walkers share one potential and one
interpreter: the optimiser's and the filter's Python run one walker at a time. Walker processes load the potential
each (their start, ~2 s, is in their time).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS

import mtp_driver
from mtp_driver.calculator import MTPCalculator, MTPPotential
from mtp_driver.potential import ASECalculatorPotential
from mtp_driver.screen.candidates import perturbed
from mtp_driver.screen.relax import CELL_FILTER_CLASSES, relax_all
from mtp_driver.screen.settings import RelaxSettings
from mtp_driver.screen.walkers import WalkerPotential, relax_in_processes

POTENTIAL = Path(mtp_driver.__file__).parent / "data" / "Cu_zuo2020.mtp"
REPEATS = {8: (2, 1, 1), 32: (2, 2, 2), 108: (3, 3, 3)}


def structures(atoms: int, count: int) -> list:
    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(REPEATS[atoms])
    return perturbed([cell] * count, rattle=0.05, strain=0.02, seed=atoms)


def with_emt(images, settings: RelaxSettings) -> float:
    started = time.perf_counter()
    for atoms in images:
        atoms = atoms.copy()
        atoms.calc = EMT()
        BFGS(CELL_FILTER_CLASSES[settings.cell_filter](atoms), logfile=None).run(fmax=settings.fmax,
                                                                                 steps=settings.max_steps)
    return time.perf_counter() - started


def with_relax_all(images, potential, settings: RelaxSettings, walkers: int) -> float:
    started = time.perf_counter()
    relaxed = relax_all(images, potential, settings, walkers=walkers)
    assert all(atoms.info["relax_status"] == "converged" for atoms in relaxed)
    return time.perf_counter() - started


def with_processes(images, settings: RelaxSettings, walkers: int) -> float:
    started = time.perf_counter()
    relaxed = relax_in_processes(images, WalkerPotential(str(POTENTIAL), ("Cu",)), settings, walkers)
    assert all(atoms.info["relax_status"] == "converged" for atoms in relaxed)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--structures", type=int, default=16, help="structures per size and round")
    parser.add_argument("--cell-filter", choices=sorted(CELL_FILTER_CLASSES), default="frechet")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(REPEATS), choices=list(REPEATS))
    args = parser.parse_args()
    settings = RelaxSettings(fmax=0.01, relax_cell=True, max_steps=1000, cell_filter=args.cell_filter)
    potential = MTPPotential(MTPCalculator(POTENTIAL, species=["Cu"]), "Cu_zuo2020")
    emt = ASECalculatorPotential(EMT())
    with_relax_all(structures(8, 2), potential, settings, 1)  # compile
    print(f"cell filter: {args.cell_filter}")
    print("| atoms | MTP, 1 walker | MTP, 2 walker threads | MTP, 2 walker processes | EMT, ASE loop | EMT, relax_all "
          "| MTP 1 walker / EMT ASE loop | MTP / EMT relax_all | 2 threads / 1 | 2 processes / 1 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for atoms in args.sizes:
        images = structures(atoms, args.structures)
        best = dict.fromkeys(("1", "2", "2p", "emt", "emt_relax_all"), np.inf)
        for _ in range(args.rounds):
            best["1"] = min(best["1"], with_relax_all(images, potential, settings, 1))
            best["2"] = min(best["2"], with_relax_all(images, potential, settings, 2))
            best["2p"] = min(best["2p"], with_processes(images, settings, 2))
            best["emt"] = min(best["emt"], with_emt(images, settings))
            best["emt_relax_all"] = min(best["emt_relax_all"], with_relax_all(images, emt, settings, 1))
        rate = {name: 60.0 * len(images) / seconds for name, seconds in best.items()}
        print(f"| {atoms} | {rate['1']:.0f}/min | {rate['2']:.0f}/min | {rate['2p']:.0f}/min | {rate['emt']:.0f}/min | "
              f"{rate['emt_relax_all']:.0f}/min | {rate['1'] / rate['emt']:.1f} | {rate['1'] / rate['emt_relax_all']:.1f} "
              f"| {rate['2'] / rate['1']:.2f} | {rate['2p'] / rate['1']:.2f} |", flush=True)

if __name__ == "__main__":
    main()
