"""Relaxing many structures with one `Potential` (a fixed MTP, or the on-the-fly learner shared by all).

Walker threads take the next unfinished structure and relax it with an ASE optimiser (positions, and
with `relax_cell` the cell at a pressure through ASE's `FrechetCellFilter` or `UnitCellFilter`). With the
learner, a walker that extrapolates is held while the learner selects D-optimally among the candidates of every walker,
computes, refits, and then resumes where it was. Each finished relaxation is stored at once
(`RelaxStore`), so a rerun after a kill relaxes only what was left; the learner's journal makes sure
no reference call is repeated.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter, UnitCellFilter
from ase.optimize import BFGS, FIRE, LBFGS
from threadpoolctl import threadpool_limits

from mtp_driver.calculator import CloseContactError
from mtp_driver.geometry import UnphysicalCell
from mtp_driver.io.atomic import atomic_write
from mtp_driver.potential import Potential, PotentialCalculator
from mtp_driver.learn.calls import StructureFailed
from mtp_driver.learn.client import RemoteLearnerError
from mtp_driver.learn.intake import UnphysicalStructure
from mtp_driver.learn.reference import ReferenceFailure

from .settings import RelaxSettings

OPTIMIZER_CLASSES = {"BFGS": BFGS, "FIRE": FIRE, "LBFGS": LBFGS}  # by the names of settings.OPTIMIZERS
CELL_FILTER_CLASSES = {"frechet": FrechetCellFilter, "unit": UnitCellFilter}  # settings.CELL_FILTERS
CONVERGED, UNCONVERGED, UNPHYSICAL, FAILED = "converged", "unconverged", "unphysical", "failed"
STATUSES = (CONVERGED, UNCONVERGED, UNPHYSICAL, FAILED)
UNPHYSICAL_ERRORS = (UnphysicalStructure, CloseContactError, UnphysicalCell)
FAILED_ERRORS = (StructureFailed, ReferenceFailure)  # the reference failed on this structure only


class Relaxed(NamedTuple):
    """One structure after its relaxation: the relaxed atoms with the potential's last results and the input's
    info, plus what happened."""

    index: int  # in the input
    atoms: Atoms
    status: str  # converged, unconverged (max_steps reached), unphysical or failed (the reason says why)
    steps: int
    grade: float | None  # the extrapolation grade at the last step (None without an active set)
    reason: str


def relax_structure(index: int, atoms: Atoms, potential: Potential, settings: RelaxSettings) -> Relaxed:
    """Relax one structure (a copy: `atoms` is not changed) with `potential`."""
    work = atoms.copy()
    work.calc = calculator = PotentialCalculator(potential)
    target = (CELL_FILTER_CLASSES[settings.cell_filter](work, scalar_pressure=settings.pressure * units.GPa)
              if settings.relax_cell else work)
    optimizer = OPTIMIZER_CLASSES[settings.optimizer](target, logfile=None)
    status, reason = UNCONVERGED, f"not converged in {settings.max_steps} steps"
    try:
        if optimizer.run(fmax=settings.fmax, steps=settings.max_steps):
            status, reason = CONVERGED, ""
    except UNPHYSICAL_ERRORS as exc:
        status, reason = UNPHYSICAL, str(exc)
    except FAILED_ERRORS as exc:
        status, reason = FAILED, str(exc)
    except RemoteLearnerError as exc:  # the same errors from a learner in another process (walker processes)
        if exc.kind in {error.__name__ for error in UNPHYSICAL_ERRORS}:
            status, reason = UNPHYSICAL, str(exc)
        elif exc.kind in {error.__name__ for error in FAILED_ERRORS}:
            status, reason = FAILED, str(exc)
        else:
            raise
    results = calculator.results if status in (CONVERGED, UNCONVERGED) else {}
    grade = calculator.extras.get("mtp_grade") if results else None
    relaxed = Atoms(work.numbers, positions=work.positions, cell=work.cell, pbc=work.pbc)
    relaxed.info = dict(atoms.info)
    relaxed.info.update(relax_status=status, relax_steps=optimizer.nsteps, relax_reason=reason or "none")
    if grade is not None:
        relaxed.info["mtp_grade"] = float(grade)
    if results:
        relaxed.calc = SinglePointCalculator(relaxed, **{key: np.copy(results[key]) for key in
                                                         ("energy", "forces", "stress") if key in results})
    return Relaxed(index, relaxed, status, optimizer.nsteps, grade, reason)


class RelaxStore:
    """Finished relaxations on disk, one extxyz file each (written atomically), in a directory that belongs to one
    input and one set of settings: a rerun with another input or other settings is refused, not mixed in."""

    def __init__(self, directory: str | Path, fingerprint: dict):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = self.directory / "input.json"
        text = json.dumps(fingerprint, sort_keys=True)
        if stamp.exists() and stamp.read_text() != text:
            raise ValueError(f"{self.directory} holds relaxations of another input or other settings "
                             f"({stamp.read_text()} != {text}): remove it to start again, or rerun as before")
        if not stamp.exists():
            with atomic_write(stamp) as stream:
                stream.write(text)

    def path(self, index: int) -> Path:
        return self.directory / f"{index:07d}.extxyz"

    def indices(self) -> list[int]:
        """The input indices of the finished relaxations (from the file names: nothing is read)."""
        return sorted(int(path.stem) for path in self.directory.glob("*.extxyz"))

    def finished(self) -> dict[int, Atoms]:
        return {index: ase.io.read(self.path(index), format="extxyz") for index in self.indices()}

    def put(self, relaxed: Relaxed) -> None:
        with atomic_write(self.path(relaxed.index)) as stream:
            ase.io.write(stream, relaxed.atoms, format="extxyz")

    def remove(self) -> None:
        """Once the output is written: the store is no longer needed."""
        shutil.rmtree(self.directory)


def input_fingerprint(path: str | Path, settings: RelaxSettings, potential: str, learning: str | None) -> dict:
    """What a store's relaxations depend on: the input file's bytes, the settings, the potential file and the
    learning run directory (None: a fixed potential)."""
    return dict(input=hashlib.sha256(Path(path).read_bytes()).hexdigest(), settings=asdict(settings),
                potential=str(potential), learning=learning)


def status_counts(structures: Sequence[Atoms]) -> dict[str, int]:
    """How many relaxed structures have each status."""
    counts = dict.fromkeys(STATUSES, 0)
    for atoms in structures:
        counts[atoms.info["relax_status"]] += 1
    return counts


class Stopped(RuntimeError):
    """The relaxations were stopped (Ctrl-C, SIGTERM); finished ones are stored, the others are made at the rerun."""


class Stoppable:
    """A walker's `Potential`: `potential`, until `stop` (a threading or multiprocessing Event) is set; then the next
    force call raises `Stopped`."""

    def __init__(self, potential: Potential, stop: threading.Event):
        self.potential, self.stop = potential, stop

    def compute(self, positions, cell, pbc, numbers):
        if self.stop.is_set():
            raise Stopped("stopped")
        return self.potential.compute(positions, cell, pbc, numbers)


def relax_all(structures: Sequence[Atoms], potential: Potential, settings: RelaxSettings, walkers: int = 1,
              store: RelaxStore | None = None, progress: Callable[[Relaxed], None] | None = None,
              stop: threading.Event | None = None) -> list[Atoms]:
    """Relax every structure not yet in `store` with `walkers` threads sharing `potential`; the relaxed structures in
    input order (finished ones read back from the store). Setting `stop` (e.g. from a signal handler) ends every
    walker at its next force call and raises `Stopped`."""
    done = store.finished() if store is not None else {}
    todo = iter([i for i in range(len(structures)) if i not in done])
    lock, errors = threading.Lock(), []
    stop = stop or threading.Event()
    potential = Stoppable(potential, stop)

    def walk() -> None:
        while not errors:
            with lock:
                index = next(todo, None)
            if index is None:
                return
            try:
                relaxed = relax_structure(index, structures[index], potential, settings)
            except BaseException as exc:  # stopped, or the learner cannot go on: every walker stops
                errors.append(exc)
                stop.set()
                return
            if store is not None:
                store.put(relaxed)
            with lock:
                done[index] = relaxed.atoms
                if progress is not None:
                    progress(relaxed)

    threads = [threading.Thread(target=walk, name=f"walker-{k}") for k in range(max(1, walkers))]
    # the cell filters' 3x3 BLAS calls: OpenBLAS's spinning threads made them 8x slower on a busy machine (measured)
    with threadpool_limits(limits=1, user_api="blas"):
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # not join(): the main thread must stay free to run signal handlers
    if errors:
        raise errors[0]
    return [done[i] for i in range(len(structures))]
