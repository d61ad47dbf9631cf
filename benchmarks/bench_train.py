#!/usr/bin/env python
"""Training speed benchmark (issue 4): loss+gradient per atom, and the wall time of a full fit.

1. ``evaluations``: 40 configurations x 32 atoms (1280 atoms, as the issue's MLIP-2 reference)
   of fcc Cu, a = 3.61 Å, rattled by 0.1 Å (fixed seed), labelled with ASE's EMT, cutoff 5.0 Å
   (about 43 neighbours per atom). Untrained bases of levels 8, 16 and 24 with fixed random
   radial coefficients and the linear coefficients solved for them (as in training). Per atom, median of repeated calls after a warm-up, on 1 and 2 Numba
   threads (each in a fresh subprocess):
   - ``loss``: energies, forces and virials of all configurations and the loss;
   - ``loss+gradient``: the same plus the gradient with respect to every parameter
     (forward-over-reverse kernel) -- the quantity MLIP-2 and motep were timed on;
   - ``linear least squares``: the design matrix of the linear coefficients and its QR factor;
   - ``projected evaluation``: one step evaluation of the default training method (linear
     least squares + solve + loss+gradient).
   MLIP-2 (one core, measured earlier on this machine kind, quoted from the issue): 0.077 s,
   0.86 s and 5.5 s per loss+gradient over 1280 atoms at levels 8, 16, 24; motep 0.2.0: 5.1 s
   over 1600 atoms at level 16.
2. ``fit``: `mtp-driver`'s trainer on the mlearn Mo training set (194 configurations, 10087
   atoms) from an untrained potential (default level 16, cutoff 5.2 Å as the published Mo MTP),
   MLIP's default loss without stresses, tracking the errors on the Mo test set every 10
   iterations. It prints the wall time, the test errors, and when (if) the test errors first
   reached those of the published level-20 MTP (3.978 meV/atom, 0.1514 eV/Å); and the errors of the
   fit and of the published MTP on the training set (what the model's size allows).

    python benchmarks/bench_train.py                 # both parts (about 10 min on 2 cores)
    python benchmarks/bench_train.py --only evaluations
    python benchmarks/bench_train.py --only fit --fit-level 20 --ranks 2

No timed assertions: it only prints. Other work on the machine changes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("MLEARN_DATA", HERE.parents[1] / "shared" / "data" / "mlearn_zuo2020"))
RESULT_TAG = "BENCH-RESULT "
CUTOFF = 5.0
MLIP2_SECONDS_PER_1280 = {8: 0.077, 16: 0.86, 24: 5.5}  # one core, from the issue
MOTEP_SECONDS_PER_ATOM = {16: 5.1 / 1600}
PUBLISHED_MO_TEST = (3.978, 0.1514)  # meV/atom, eV/Å: the published level-20 Mo MTP on the test set


def labelled_cu(count: int = 40, seed: int = 20240601):
    """40 rattled 32-atom fcc Cu cells with EMT energies, forces and stresses."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        atoms.calc = EMT()
        results = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **results)
        images.append(atoms)
    return images


def median_seconds(call, min_repeats: int = 5, min_time: float = 2.0) -> float:
    call()  # warm-up (JIT or cache load)
    times = []
    while len(times) < min_repeats or sum(times) < min_time:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def worker_evaluations(level: int, threads: int) -> None:
    import numba

    from mtp_driver.fit.dataset import make_batch
    from mtp_driver.fit.linear import least_squares
    from mtp_driver.fit.loss import Objective, parameters_of
    from mtp_driver.fit.options import LossWeights, TrainOptions
    from mtp_driver.fit.parallel import Reducer
    from mtp_driver.mtp.basis import untrained_mtp

    numba.set_num_threads(threads)
    images = labelled_cu()
    rng = np.random.default_rng(level)
    mtp = untrained_mtp(level, 1, 2.0, CUTOFF, species=["Cu"])
    mtp = mtp.copy(radial_coeffs=rng.uniform(-1, 1, (1, 1, mtp.radial_funcs_count, mtp.radial_basis_size)),
                   species_coeffs=np.zeros(1), moment_coeffs=np.zeros(mtp.alpha_scalar_moments), scaling=0.02)
    batch = make_batch(images, ["Cu"], CUTOFF)
    objective = Objective(mtp, batch, LossWeights(), len(images))
    parameters = parameters_of(mtp)
    shards = np.zeros(len(images), dtype=np.int64)

    def linear_problem():
        return least_squares(mtp, objective.layout, batch, objective.config_weights, shards, 1, Reducer())

    def projected_evaluation():
        solved = parameters.copy()
        solved[mtp.radial_coeffs.size:] = linear_problem().solve(TrainOptions().ridge)
        objective(solved)

    # time the gradient where training spends it: moment coefficients from the linear solve (all zero,
    # most products would have zero adjoints and cost nothing)
    parameters[mtp.radial_coeffs.size:] = linear_problem().solve(TrainOptions().ridge)
    atoms = len(batch.types)
    timings = dict(
        loss=median_seconds(lambda: objective(parameters, gradient=False)),
        loss_gradient=median_seconds(lambda: objective(parameters)),
        linear_least_squares=median_seconds(linear_problem),
        projected_evaluation=median_seconds(projected_evaluation),
    )
    print(RESULT_TAG + json.dumps(dict(level=level, threads=threads, atoms=atoms,
                                       neighbours=len(batch.centers) / atoms, parameters=len(parameters),
                                       us_per_atom={k: 1e6 * v / atoms for k, v in timings.items()})), flush=True)


def worker_fit(level: int, max_iter: int, init: str) -> None:
    from mtp_driver.calculator import MTPCalculator, predict
    from mtp_driver.fit import LossWeights, TrainOptions, train
    from mtp_driver.fit.mlearn import read_mlearn
    from mtp_driver.fit.parallel import world
    from mtp_driver.io.mtp_file import read_mtp
    from mtp_driver.metrics import error_table
    from mtp_driver.mtp.basis import untrained_mtp

    comm = world()
    started = time.perf_counter()
    training = read_mlearn(DATA / "Mo" / "training.json.xz")
    test = read_mlearn(DATA / "Mo" / "test.json.xz")
    published = read_mtp(DATA / "fitted_mtp" / "Mo.mtp")
    untrained = untrained_mtp(level, 1, published.min_dist, published.max_dist, species=["Mo"])
    options = TrainOptions(weights=LossWeights(stress=0.0), max_iter=max_iter, update_min_dist=True,
                           valid_every=10, init=init)
    result = train(untrained, training, valid_images=test, species=["Mo"], options=options, comm=comm,
                   progress=False)
    wall = time.perf_counter() - started
    if comm is not None and comm.Get_rank() != 0:
        return
    errors = error_table(test, predict(MTPCalculator(result.mtp), test))
    # training-set errors show capacity: a fit that cannot reach an error on its own data cannot on new data
    fitted_training = error_table(training, predict(MTPCalculator(result.mtp), training))
    published_training = error_table(training, predict(MTPCalculator(published, species=["Mo"]), training))
    reached = next((entry["seconds"] for entry in result.history if "valid_energy_rmse" in entry
                    and 1e3 * entry["valid_energy_rmse"] <= PUBLISHED_MO_TEST[0]
                    and entry["valid_force_rmse"] <= PUBLISHED_MO_TEST[1]), None)
    curve = [(round(e["seconds"], 1), e["iteration"], round(1e3 * e["valid_energy_rmse"], 3),
              round(e["valid_force_rmse"], 4)) for e in result.history if "valid_energy_rmse" in e]
    print(RESULT_TAG + json.dumps(dict(
        level=level, ranks=1 if comm is None else comm.Get_size(), wall=wall, train_seconds=result.seconds,
        iterations=result.iterations, evaluations=result.evaluations, stop=result.stop_reason,
        test_energy_rmse=1e3 * errors["energy_per_atom"].rmse, test_force_rmse=errors["forces"].rmse,
        training_energy_rmse=1e3 * fitted_training["energy_per_atom"].rmse,
        training_force_rmse=fitted_training["forces"].rmse,
        published_training_energy_rmse=1e3 * published_training["energy_per_atom"].rmse,
        published_training_force_rmse=published_training["forces"].rmse,
        reached_published_accuracy_at=reached, test_curve=curve)), flush=True)


def run_worker(arguments: list[str], ranks: int = 1, threads: int | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", *arguments]
    environment = dict(os.environ)
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpirun"), "-n", str(ranks)] + command
        environment["NUMBA_NUM_THREADS"] = str(threads or 1)
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    if finished.returncode != 0:
        raise SystemExit(f"worker {' '.join(arguments)} failed:\n{finished.stderr}")
    output = finished.stdout
    return json.loads(next(line for line in output.splitlines() if line.startswith(RESULT_TAG))[len(RESULT_TAG):])


def evaluations_report(levels: list[int]) -> None:
    print("## loss + gradient per atom (40 x 32-atom fcc Cu, cutoff 5.0 Å)\n")
    print("| level | parameters | threads | loss us/atom | loss+gradient us/atom | linear least squares us/atom "
          "| projected evaluation us/atom | MLIP-2 loss+gradient us/atom (1 core) | speed-up vs MLIP-2 per core |")
    print("|---|---|---|---|---|---|---|---|---|")
    for level in levels:
        for threads in (1, 2):
            r = run_worker(["evaluations", str(level), str(threads)])
            us = r["us_per_atom"]
            mlip2 = 1e6 * MLIP2_SECONDS_PER_1280[level] / 1280
            speedup = mlip2 / (us["loss_gradient"] * threads)
            print(f"| {level} | {r['parameters']} | {threads} | {us['loss']:.1f} | {us['loss_gradient']:.1f} | "
                  f"{us['linear_least_squares']:.1f} | {us['projected_evaluation']:.1f} | {mlip2:.0f} | {speedup:.1f}x |",
                  flush=True)
    print(f"\nmotep 0.2.0 (issue): {1e6 * MOTEP_SECONDS_PER_ATOM[16]:.0f} us/atom per loss+gradient at level 16.\n")


def fit_report(level: int, ranks: int, max_iter: int, init: str) -> None:
    threads = 2 if ranks == 1 else 1
    r = run_worker(["fit", str(level), str(max_iter), init], ranks=ranks, threads=threads)
    print(f"## full fit: mlearn Mo training set, level {level}, {r['ranks']} rank(s) x {threads} thread(s)\n")
    print(f"wall {r['wall']:.0f} s (training {r['train_seconds']:.0f} s), {r['iterations']} iterations, "
          f"{r['evaluations']} evaluations, stopped: {r['stop']}")
    print(f"test RMSE: {r['test_energy_rmse']:.3f} meV/atom, {r['test_force_rmse']:.4f} eV/Å "
          f"(published level-20 MTP: {PUBLISHED_MO_TEST[0]} meV/atom, {PUBLISHED_MO_TEST[1]} eV/Å)")
    print(f"training RMSE: {r['training_energy_rmse']:.3f} meV/atom, {r['training_force_rmse']:.4f} eV/Å "
          f"(published level-20 MTP on the same training set: {r['published_training_energy_rmse']:.3f} meV/atom, "
          f"{r['published_training_force_rmse']:.4f} eV/Å)")
    reached = r["reached_published_accuracy_at"]
    print("published accuracy " + (f"reached after {reached:.0f} s of training" if reached is not None
                                   else "not reached") + "\n")
    print("test errors during the fit (s, iteration, meV/atom, eV/Å):", r["test_curve"][:: max(1, len(r["test_curve"]) // 12)])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, *values = sys.argv[2:]
        if kind == "evaluations":
            worker_evaluations(int(values[0]), int(values[1]))
        else:
            worker_fit(int(values[0]), int(values[1]), values[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["evaluations", "fit"])
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 16, 24])
    parser.add_argument("--fit-level", type=int, default=16)
    parser.add_argument("--ranks", type=int, default=1, help="MPI ranks for the fit (1: one process, 2 threads)")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--init", choices=["same", "random"], default="same",
                        help="initial radial functions, as in examples/mlearn_comparison.py (default: %(default)s)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}\n")
    if args.only != "fit":
        evaluations_report(args.levels)
    if args.only != "evaluations":
        fit_report(args.fit_level, args.ranks, args.max_iter, args.init)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
