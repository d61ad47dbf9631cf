#!/usr/bin/env python
"""Train MTPs from scratch on the mlearn benchmark and compare with the published fitted MTPs.

Zuo et al., J. Phys. Chem. A 124, 731 (2020) fitted MTPs of level 16 (Li) and 20 (Mo, Cu) to the
mlearn training sets; their files are in ``shared/data/mlearn_zuo2020/fitted_mtp``. For each
element this script

1. takes an untrained potential of the same level and cutoff (max_dist) as the published file,
2. trains it on ``training`` (Cu: the reconstructed training set, see SOURCE.md) with MLIP's
   default loss (energy weight 1, force weight 0.01, "vibrations" weighting) and MLIP's default
   ``--auto-min-dist`` behaviour (min_dist = 0.99 x the shortest training distance),
3. evaluates both potentials on ``test`` and prints the energy (meV/atom) and force (eV/Å) RMSEs.

Stresses are not fitted (stress weight 0): the published potentials were fitted without them
(MLIP-2 ignores the ``Stress:`` lines mlearn wrote), and the DFT diagonal stresses carry a nearly
constant offset (derived_not_published/README.md). Nothing else is chosen per element.

    python examples/mlearn_comparison.py                 # Li 16, Mo 20, Cu 20
    python examples/mlearn_comparison.py Li --max-iter 300 --output-dir /tmp/fits
    mpirun -n 2 python examples/mlearn_comparison.py Mo  # MPI: same result, ranks share the data

Wall times are for the machine it runs on; on 2 cores, Li takes minutes, Mo and Cu (level 20,
10k and 27k atoms) longer.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from mtp_driver.calculator import MTPCalculator, predict
from mtp_driver.fit import LossWeights, TrainOptions, train
from mtp_driver.fit.options import INITIALISATIONS
from mtp_driver.fit.mlearn import read_mlearn
from mtp_driver.fit.parallel import world
from mtp_driver.io.mtp_file import read_mtp, write_mtp
from mtp_driver.metrics import error_table
from mtp_driver.mtp.basis import untrained_mtp

DATA = Path(os.environ.get("MLEARN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "mlearn_zuo2020"))
TRAINING = {"Li": "Li/training.json.xz", "Mo": "Mo/training.json.xz", "Cu": "Cu/training_reconstructed.json.xz"}


def test_errors(potential, test) -> tuple[float, float]:
    """Energy RMSE (meV/atom) and force-component RMSE (eV/Å) on the test configurations."""
    errors = error_table(test, predict(MTPCalculator(potential, species=[test[0].get_chemical_symbols()[0]]), test))
    return 1e3 * errors["energy_per_atom"].rmse, errors["forces"].rmse


def compare(element: str, options: TrainOptions, output_dir: Path | None, comm) -> dict:
    published = read_mtp(DATA / "fitted_mtp" / f"{element}.mtp")
    training = read_mlearn(DATA / TRAINING[element])
    test = read_mlearn(DATA / element / "test.json.xz")
    untrained = untrained_mtp(published.level, 1, published.min_dist, published.max_dist,
                              published.radial_basis_size, species=[element])
    started = time.perf_counter()
    result = train(untrained, training, species=[element], options=options, comm=comm)
    seconds = time.perf_counter() - started
    if output_dir is not None and (comm is None or comm.Get_rank() == 0):
        write_mtp(result.mtp, output_dir / f"{element}_level{published.level}.mtp")
    ours, paper = test_errors(result.mtp, test), test_errors(published, test)
    return dict(element=element, level=published.level, configs=len(training), atoms=sum(map(len, training)),
                seconds=seconds, iterations=result.iterations, evaluations=result.evaluations,
                stop=result.stop_reason, ours=ours, paper=paper)


def table(rows: list[dict]) -> str:
    lines = ["| El | level | train configs (atoms) | fit wall (s) | iterations | test E RMSE meV/atom: ours / paper "
             "| test F RMSE eV/Å: ours / paper | no worse |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        (energy, force), (paper_energy, paper_force) = row["ours"], row["paper"]
        verdict = "yes" if energy <= paper_energy and force <= paper_force else "no"
        lines.append(f"| {row['element']} | {row['level']} | {row['configs']} ({row['atoms']}) | {row['seconds']:.0f} | "
                     f"{row['iterations']} ({row['stop']}) | {energy:.3f} / {paper_energy:.3f} | "
                     f"{force:.4f} / {paper_force:.4f} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("elements", nargs="*", default=["Li", "Mo", "Cu"], choices=sorted(TRAINING))
    parser.add_argument("--max-iter", type=int, default=TrainOptions.max_iter)
    parser.add_argument("--seed", type=int, default=TrainOptions.seed)
    parser.add_argument("--init", choices=INITIALISATIONS, default="best",
                        help="initial radial functions: 'same' (function k = Chebyshev polynomial k), 'random', or "
                        "'best': fit from both, keep the lower training loss (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, help="write the fitted potentials here")
    args = parser.parse_args()
    comm = world()
    options = TrainOptions(weights=LossWeights(stress=0.0), max_iter=args.max_iter, seed=args.seed, init=args.init,
                           update_min_dist=True)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for element in args.elements:
        rows.append(compare(element, options, args.output_dir, comm))
        if comm is None or comm.Get_rank() == 0:
            print(table(rows[-1:]), flush=True)
    if comm is None or comm.Get_rank() == 0:
        print("\nmlearn test sets, trained from scratch vs the published MTPs (Zuo et al. 2020):")
        print(table(rows))


if __name__ == "__main__":
    main()
