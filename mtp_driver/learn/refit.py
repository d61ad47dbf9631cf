"""The background refit of all parameters, as its own process: it reads a snapshot of the training
set from the run directory and writes the refitted potential atomically, so the learner (which
keeps serving meanwhile) only ever sees a finished file.

    python -m mtp_driver.learn.refit RUN_DIR START.mtp KEYS.json OUT.mtp ITERATIONS SEED SPECIES...
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mtp_driver.fit import TrainOptions, train
from mtp_driver.io.mtp_file import read_mtp, write_mtp

from .journal import JournalReader


def refit(run_dir: Path, start: Path, keys_file: Path, output: Path, iterations: int, seed: int,
          species: list[str]) -> None:
    journal = JournalReader(run_dir)  # the learner writes it meanwhile: read only
    completed = journal.completed()
    images = journal.initial_training() + [completed[key] for key in json.loads(keys_file.read_text())]
    parent = os.getppid()

    def stop_if_orphaned(_):  # a learner killed with -9 cannot stop its refit: the refit notices
        if os.getppid() != parent:
            raise SystemExit(1)

    result = train(read_mtp(start), images, species=species, options=TrainOptions(max_iter=iterations, seed=seed),
                   progress=False, checkpoint=stop_if_orphaned)
    write_mtp(result.mtp, output)  # atomic


def main(argv: list[str]) -> int:
    run_dir, start, keys_file, output, iterations, seed, *species = argv
    refit(Path(run_dir), Path(start), Path(keys_file), Path(output), int(iterations), int(seed), species)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
