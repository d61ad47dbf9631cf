"""A learning run that can be killed at any moment and restarted (used by test_learn_crash.py).

    python learner_crash_worker.py RUN_DIR REQUESTS

Request k is a rattled Cu cell made from seed k (amplitude cycling up to 0.125 Å, so the learner keeps
meeting new structures); `progress.txt` holds the number of requests answered, written
atomically after each answer, so a restart continues where the killed run stopped."""

import sys
from pathlib import Path

import numpy as np
from ase.build import bulk

from mtp_driver.io.atomic import atomic_write
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.reference import Reference
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp


def request(k: int):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(k).normal(scale=0.03 + 0.005 * (k % 20), size=atoms.positions.shape)
    return atoms


def main(run_dir: Path, requests: int) -> None:
    progress = run_dir / "progress.txt"
    done = int(progress.read_text()) if progress.exists() else 0
    settings = LearnSettings(species=("Cu",), reference=Reference(calculator="reference_calculators:SlowEMT",
                                                                  kwargs={"delay": 0.2}),
                             refit_iterations=20, max_selected=3)
    learner = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), run_dir / "learning", settings)
    for k in range(done, requests):
        atoms = request(k)
        learner.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
        with atomic_write(progress) as stream:
            stream.write(str(k + 1))
    learner.close(final_refit=False)
    print("finished", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
