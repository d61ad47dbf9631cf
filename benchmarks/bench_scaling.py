#!/usr/bin/env python
"""Per-atom time against system size, the sizes taken in turns (issue 18: "flat from 256 to 131,072 atoms").

bench_efs.py measures each size in its own process, one after another: on a VM whose speed drifts by up
to 2x within minutes, a size measured in a slow minute looks slower. Here one process holds the structures
of bench_efs.py (rattled fcc Cu, 5.0 Å cutoff, Li.mtp or Si.mtp with that cutoff) and their neighbour
lists, and each round evaluates every size on 1 and 2 threads in turn (`evaluate`, the kernel and the
forces; about 200,000 atom-evaluations per size and round). Printed per size: median µs/atom per call,
the ratio to 2048 atoms within each round (median [min-max]: 1.00 is flat), and 1 thread / 2 threads.

    python benchmarks/bench_scaling.py --level 24 --rounds 6    # about 9 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

from bench_efs import CUTOFF, POTENTIALS, fcc_cu, machine_info

SIZES = (256, 2048, 16384, 131072)
ATOM_CALLS = 200_000  # atom-evaluations per size and round: several calls of the small sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", type=int, default=24, choices=sorted(POTENTIALS))
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)

    from mtp_driver.io import read_mtp
    from mtp_driver.mtp.evaluate import evaluate
    from mtp_driver.mtp.layout import kernel_layout
    from mtp_driver.mtp.neighbors import build_neighbor_list

    print(machine_info(), flush=True)
    mtp = read_mtp(POTENTIALS[args.level]).copy(max_dist=CUTOFF)
    layout = kernel_layout(mtp)
    cases = {}
    for n_atoms in SIZES:
        atoms = fcc_cu(n_atoms)
        cases[n_atoms] = (np.zeros(n_atoms, dtype=np.int64),
                          build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF))
        evaluate(mtp, *cases[n_atoms], layout)  # compiled (or loaded) outside the timing
    per_atom = {(n_atoms, threads): [] for n_atoms in SIZES for threads in (1, 2)}
    for round_ in range(args.rounds):
        for n_atoms in SIZES:
            for threads in (1, 2) if round_ % 2 == 0 else (2, 1):
                numba.set_num_threads(threads)
                calls = max(1, ATOM_CALLS // n_atoms)
                start = time.perf_counter()
                for _ in range(calls):
                    evaluate(mtp, *cases[n_atoms], layout)
                per_atom[n_atoms, threads].append(1e6 * (time.perf_counter() - start) / calls / n_atoms)
    print(f"level {args.level}, fcc Cu, {CUTOFF} Å cutoff, {args.rounds} rounds; µs/atom per call (median), "
          "ratio to 2048 atoms within each round and 1 thread / 2 threads: median [min-max]")
    for n_atoms in SIZES:
        to_2048 = [a / b for a, b in zip(per_atom[n_atoms, 1], per_atom[2048, 1])]
        speedup = [a / b for a, b in zip(per_atom[n_atoms, 1], per_atom[n_atoms, 2])]
        print(f"{n_atoms:7d} atoms: 1 thread {statistics.median(per_atom[n_atoms, 1]):7.1f}, 2 threads "
              f"{statistics.median(per_atom[n_atoms, 2]):7.1f}; 1 thread / 2048 atoms' "
              f"{statistics.median(to_2048):.2f} [{min(to_2048):.2f}-{max(to_2048):.2f}]; "
              f"1 thread / 2 threads {statistics.median(speedup):.2f} [{min(speedup):.2f}-{max(speedup):.2f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
