#!/usr/bin/env python
"""Learning on the fly against passive learning in MD (issue 7, example 1; Podryabinkin & Shapeev 2017).

NVT (Langevin) MD of 128 fcc Cu atoms with EMT as the reference, in two ways:

* active: the MD is driven by the on-the-fly learner (in-process, `PotentialCalculator`), starting
  from an untrained MTP; it calls EMT only when the MTP extrapolates;
* passive: n snapshots drawn at random from an EMT MD trajectory at the same conditions.

Both arms fit the same untrained MTP with the same training options: the active arm on the first
k reference results of the learner at each of its retrainings (what a user would ship after k
calls), the passive arm on each random draw. Both are measured on the same test set: snapshots of
an independent EMT MD run (another seed), far apart in time. The script prints error against
reference calls for both arms and how many passive snapshots reach the active arm's final error,
as a multiple of the active arm's calls (log-log interpolation of the passive curve).

    python examples/learn_vs_passive.py [--steps 1000] [--level 10] [--plot learn_vs_passive.png]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from mtp_driver.calculator import MTPCalculator, predict
from mtp_driver.fit import TrainOptions, train
from mtp_driver.potential import PotentialCalculator
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.metrics import error_table
from mtp_driver.mtp.basis import untrained_mtp

SPECIES = ["Cu"]
TIME_STEP_FS = 4.0
FRICTION = 0.02  # 1/fs-scale Langevin friction of ASE examples: thermalises within a few hundred steps
TEST_SEED, PASSIVE_SEED, ACTIVE_SEED = 1, 2, 3


def start_structure(temperature: float, seed: int) -> Atoms:
    """The perfect 4x4x2 conventional fcc Cu cell (128 atoms) with Maxwell-Boltzmann velocities."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 2))
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(seed))
    return atoms


def dynamics(atoms: Atoms, temperature: float, seed: int) -> Langevin:
    return Langevin(atoms, TIME_STEP_FS * units.fs, temperature_K=temperature, friction=FRICTION, fixcm=False,
                    rng=np.random.default_rng(seed))


def labelled_copy(atoms: Atoms) -> Atoms:
    """The structure with the energy, forces and stress its calculator has just computed."""
    copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    copy.calc = SinglePointCalculator(copy, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                      stress=atoms.get_stress())
    return copy


def emt_trajectory(temperature: float, steps: int, every: int, skip: int, seed: int) -> list[Atoms]:
    """Labelled snapshots of an EMT MD run, every `every` steps after the first `skip` (thermalisation)."""
    atoms = start_structure(temperature, seed)
    atoms.calc = EMT()
    md = dynamics(atoms, temperature, seed)
    snapshots = []
    md.attach(lambda: snapshots.append(labelled_copy(atoms)) if md.nsteps > skip else None, interval=every)
    md.run(steps)
    return snapshots


def fitted(level: int, cutoff: float, images: list[Atoms], iterations: int):
    """The same untrained MTP fitted to `images` with the same options, whichever arm asks."""
    start = untrained_mtp(level, 1, 2.0, cutoff, species=SPECIES)
    return train(start, images, species=SPECIES, options=TrainOptions(max_iter=iterations, seed=0), progress=False).mtp


def test_errors(mtp, test: list[Atoms]) -> tuple[float, float]:
    """(energy RMSE meV/atom, force RMSE eV/Å) on the test set."""
    errors = error_table(test, predict(MTPCalculator(mtp, species=SPECIES), test))
    return 1e3 * errors["energy_per_atom"].rmse, errors["forces"].rmse


def learn_on_the_fly(args) -> tuple[list[Atoms], list[int], dict]:
    """Run the MD with the learner; its reference results in call order, the reference counts at
    which it retrained, and its summary."""
    settings = LearnSettings(species=tuple(SPECIES), threshold_save=args.threshold_save,
                             threshold_break=args.threshold_break, refit_iterations=args.fit_iterations,
                             seed=ACTIVE_SEED)
    learner = Learner(untrained_mtp(args.level, 1, 2.0, args.cutoff, species=SPECIES), args.run_dir, settings)
    atoms = start_structure(args.temperature, ACTIVE_SEED)
    atoms.calc = PotentialCalculator(learner)
    dynamics(atoms, args.temperature, ACTIVE_SEED).run(args.steps)
    learner.close(final_refit=False)  # the comparison refits every checkpoint itself, from the untrained start
    retrainings = sorted({event["references"] for event in learner.journal.events()
                          if event["event"] == "swap" and event["reason"] == "hold"})
    summary = dict(learner.summary(), final_temperature=atoms.get_temperature())
    return list(learner.training), retrainings, summary


def checkpoints(retrainings: list[int], most: int) -> list[int]:
    """At most `most` of the learner's reference counts, spread evenly on a log scale, the last included."""
    if len(retrainings) <= most:
        return retrainings
    wanted = np.geomspace(retrainings[0], retrainings[-1], most)
    return sorted({min(retrainings, key=lambda count: abs(math.log(count / value))) for value in wanted})


def passive_calls_to_reach(target: float, sizes: list[int], errors: list[float]) -> tuple[float, str]:
    """Snapshots the passive curve needs to reach `target`: linear interpolation of log(error)
    against log(n) between the first size above the target and the next one at or below it.
    Returns (n, "") or, off the measured range, its end with "<" (even the smallest set is as
    good) or ">" (no set is)."""
    if errors[0] <= target:
        return float(sizes[0]), "<"
    for (n0, e0), (n1, e1) in zip(zip(sizes, errors), zip(sizes[1:], errors[1:])):
        if e1 <= target < e0:
            fraction = math.log(e0 / target) / math.log(e0 / e1)
            return math.exp(math.log(n0) + fraction * math.log(n1 / n0)), ""
    return float(sizes[-1]), ">"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="MD steps of 4 fs, each arm")
    parser.add_argument("--temperature", type=float, default=900.0, help="K (about 0.7 of Cu's melting point)")
    parser.add_argument("--level", type=int, default=10)
    parser.add_argument("--cutoff", type=float, default=5.0, help="Å")
    parser.add_argument("--threshold-save", type=float, default=2.0)
    parser.add_argument("--threshold-break", type=float, default=3.0,
                        help="hold at this grade (the default 10 makes very few calls: we target accuracy)")
    parser.add_argument("--fit-iterations", type=int, default=100, help="L-BFGS iterations of every fit, both arms")
    parser.add_argument("--passive-sizes", default="1,2,4,8", help="snapshots per passive training set")
    parser.add_argument("--draws", type=int, default=2, help="random passive training sets per size")
    parser.add_argument("--checkpoints", type=int, default=5, help="active-arm models refitted and tested, at most")
    parser.add_argument("--test-size", type=int, default=30)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="error against calls, log-log (needs matplotlib)")
    args = parser.parse_args()
    args.run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="learn-vs-passive-"))
    sizes = [int(size) for size in args.passive_sizes.split(",")]
    thermalisation = args.steps // 5
    started = time.perf_counter()

    test_every = max((args.steps - thermalisation) // args.test_size, 1)  # far apart: decorrelated
    test = emt_trajectory(args.temperature, args.steps, test_every, thermalisation, TEST_SEED)[-args.test_size:]
    # the passive arm draws from the thermalised part only, the test set's distribution: the choice most
    # favourable to it (the learner's calls include the perfect lattice and the heating)
    pool = emt_trajectory(args.temperature, args.steps, 1, thermalisation, PASSIVE_SEED)
    emt_seconds = time.perf_counter() - started

    learning_started = time.perf_counter()
    references, retrainings, summary = learn_on_the_fly(args)
    learning_seconds = time.perf_counter() - learning_started

    fitting_started = time.perf_counter()
    active = [(count, *test_errors(fitted(args.level, args.cutoff, references[:count], args.fit_iterations), test))
              for count in checkpoints(retrainings, args.checkpoints)]
    random = np.random.default_rng(PASSIVE_SEED)
    passive = []
    for size in sizes:
        draws = [test_errors(fitted(args.level, args.cutoff, [pool[i] for i in random.choice(len(pool), size, False)],
                                    args.fit_iterations), test) for _ in range(args.draws)]
        passive.append((size, *np.mean(draws, axis=0)))
    fitting_seconds = time.perf_counter() - fitting_started

    calls, energy_error, force_error = active[-1]
    ratios = {}
    for name, column, target in (("energy", 1, energy_error), ("forces", 2, force_error)):
        needed, bound = passive_calls_to_reach(target, sizes, [row[column] for row in passive])
        ratios[name] = dict(passive_snapshots=needed, bound=bound, ratio=needed / calls)

    print(f"NVT MD of 128 fcc Cu atoms at {args.temperature:.0f} K, {args.steps} steps of {TIME_STEP_FS} fs; "
          f"MTP level {args.level}, cutoff {args.cutoff} Å, {args.fit_iterations} L-BFGS iterations per fit; "
          f"test set: {len(test)} snapshots of an independent EMT run")
    energies_per_atom = [atoms.get_potential_energy() / len(atoms) for atoms in test]
    force_rms = math.sqrt(np.mean([np.mean(atoms.get_forces() ** 2) for atoms in test]))
    print(f"scale of the test set: energy per atom spread (std) {1e3 * np.std(energies_per_atom):.3f} meV/atom, "
          f"force RMS {force_rms:.3f} eV/Å")
    print(f"active: thresholds {args.threshold_save}/{args.threshold_break}, {calls} EMT calls in "
          f"{summary['steps']} force requests, {summary['retrainings']} retrainings")
    print(f"{'arm':<8}{'EMT calls':>10}{'E RMSE meV/atom':>17}{'F RMSE eV/Å':>13}")
    for arm, rows in (("active", active), ("passive", passive)):
        for count, energy, forces in rows:
            print(f"{arm:<8}{count:>10}{energy:>17.4f}{forces:>13.5f}")
    for name, ratio in ratios.items():
        print(f"ratio ({name}): passive needs {ratio['bound']}{ratio['passive_snapshots']:.1f} snapshots to reach "
              f"the active arm's final error with {calls} calls: {ratio['bound']}{ratio['ratio']:.2f}x")
    print(f"the passive snapshots were drawn from an EMT MD of {args.steps} steps ({args.steps} EMT calls, the "
          f"first {thermalisation} discarded as thermalisation); the learner's MD made {calls} EMT calls in all")
    print(f"wall time: EMT trajectories {emt_seconds:.0f} s, learning MD {learning_seconds:.0f} s, "
          f"fits {fitting_seconds:.0f} s")
    result = dict(active=[dict(calls=c, energy_rmse_mev=e, force_rmse=f) for c, e, f in active],
                  passive=[dict(snapshots=n, energy_rmse_mev=e, force_rmse=f) for n, e, f in passive],
                  ratios=ratios, learner=summary, seconds=dict(emt=emt_seconds, learning=learning_seconds,
                                                               fits=fitting_seconds))
    print("RESULT " + json.dumps(result))
    if args.plot is not None:
        plot(active, passive, args.plot)


def plot(active, passive, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for axis, column, label in ((axes[0], 1, "energy RMSE (meV/atom)"), (axes[1], 2, "force RMSE (eV/Å)")):
        axis.loglog([row[0] for row in active], [row[column] for row in active], "o-", label="on the fly (active)")
        axis.loglog([row[0] for row in passive], [row[column] for row in passive], "s--", label="passive (random)")
        axis.set_xlabel("EMT calls")
        axis.set_ylabel(label)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
