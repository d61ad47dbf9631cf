"""The learner's models: the one answering now (`CurrentModel`), every version on disk
(`ModelVersions`, RUN/models/model_NNNN.mtp), the linear refit that compares two models on the same
data (`refit_linear`), and the refit of all parameters running in its own process (`RefitJob`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mtp_driver.active.active_set import ActiveSet
from mtp_driver.fit import TrainOptions, TrainResult, train
from mtp_driver.io.mtp_file import read_mtp, write_mtp
from mtp_driver.mtp.model import MTP

REFIT_RESTART_GROWTH = 0.25  # a background refit is restarted once the data grew by this fraction since it started


class CurrentModel(NamedTuple):
    """The model answering now, with the active set that grades its requests: a swap replaces it as a whole."""

    version: int
    mtp: MTP
    active_set: ActiveSet


class ModelVersions:
    """Every model a run swapped in, as `directory`/model_NNNN.mtp (NNNN = its version)."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(exist_ok=True)
        # the newest version on disk, not a count: a missing file must not make a new model overwrite one
        self.newest = max((int(match[1]) for path in directory.glob("model_*.mtp")
                           if (match := re.fullmatch(r"model_(\d+)\.mtp", path.name))), default=0)

    def path(self, version: int) -> Path:
        return self.directory / f"model_{version:04d}.mtp"

    def read_newest(self) -> MTP | None:
        return read_mtp(self.path(self.newest)) if self.newest else None

    def write_next(self, mtp: MTP) -> int:
        """Write `mtp` as the next version; its version."""
        self.newest += 1
        write_mtp(mtp, self.path(self.newest))
        return self.newest


def refit_linear(mtp: MTP, images, species: list[str], seed: int) -> TrainResult:
    """`mtp` with its linear (species and moment) coefficients fitted exactly to `images`, the radial ones kept:
    the loss of two models refitted so compares them on the same data."""
    return train(mtp, images, species=species, options=TrainOptions(max_iter=0, seed=seed), progress=False)


@dataclass(frozen=True)
class RefitJob:
    """A refit of all parameters in its own process (`refit.py`), on the data of the moment it started.

    `references`: reference results it sees; `structures`: all structures it sees (the initial training
    set included); `started`: `time.perf_counter()` at its start."""

    process: subprocess.Popen
    output: Path
    references: int
    structures: int
    started: float

    @classmethod
    def start(cls, run_dir: Path, versions: ModelVersions, version: int, keys: list[str], structures: int,
              iterations: int, seed: int, species: list[str]) -> RefitJob:
        """Refit model `version` on the run's initial training set and its reference results `keys`
        (`structures` in all); the job's files are refit_NNNN.* next to the models (NNNN = `version`)."""
        keys_file = versions.directory / f"refit_{version:04d}.keys.json"
        keys_file.write_text(json.dumps(keys))
        output = versions.directory / f"refit_{version:04d}.mtp"
        log = open(versions.directory / f"refit_{version:04d}.log", "w")
        command = [sys.executable, "-m", "mtp_driver.learn.refit", str(run_dir), str(versions.path(version)),
                   str(keys_file), str(output), str(iterations), str(seed), *species]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return cls(process, output, len(keys), structures, time.perf_counter())

    def finished(self) -> bool:
        return self.process.poll() is not None

    def result(self) -> MTP | None:
        """The refitted potential of a finished job; None if the process failed."""
        if self.process.returncode != 0 or not self.output.exists():
            return None
        return read_mtp(self.output)

    def outgrown(self, structures: int) -> bool:
        """Whether the data, now `structures` structures, grew by REFIT_RESTART_GROWTH since the job started:
        then restart it rather than let it finish on stale data."""
        return structures > (1.0 + REFIT_RESTART_GROWTH) * self.structures

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
