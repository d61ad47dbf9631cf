"""Learning on the fly inside LAMMPS: one learner (`mtp_driver.learn.Learner`) on rank 0, its model on every rank.

A step whose grade (computed over all ranks, see `MTPFix`) is above threshold_save is gathered and handed to the
learner as one request, which answers it as `learn` answers a socket request: a candidate, or, above
threshold_break, a hold while the reference computes and the MTP is retrained. A new model is broadcast and
answers the same step again on every rank; the run goes on. The learner's journal makes the run crash-safe: the
same command after a kill resumes without repeating a reference call (the MD itself starts again)."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from ase.data import atomic_numbers

from mtp_driver.active.storage import load_active_set, save_active_set
from mtp_driver.calculator import MTPCalculator
from mtp_driver.io.mtp_file import format_mtp, parse_mtp

from .library import World, box_cell


class LammpsLearning:
    """The learner of a LAMMPS run (made by `make_learner` on rank 0 only) and the calculator of its newest model
    on every rank (None before anything was learnt)."""

    def __init__(self, world: World, make_learner, species):
        self.world = world
        self.learner, error = None, None
        if world.rank == 0:
            try:
                self.learner = make_learner()  # a restart refits first
            except Exception as exc:  # noqa: BLE001 - the other ranks wait to hear
                error = f"{type(exc).__name__}: {exc}"
        world.wait_for_all()
        error = world.broadcast_text(error or "")
        if error:
            raise ValueError(f"the learner did not start: {error}")
        self.numbers = np.array([atomic_numbers[symbol] for symbol in species])
        self.species = list(species)
        settings = self.learner.settings if self.learner is not None else None
        self.threshold_save = float(world.broadcast_text(str(settings.threshold_save) if settings else None))
        self.grade_mode = world.broadcast_text(settings.grade_mode if settings else None)
        self.cutoff = float(world.broadcast_text(repr(self.learner.initial.max_dist) if settings else None))  # Å
        self.version = -1
        self.calculator: MTPCalculator | None = None
        self.summary: dict | None = None  # the learner's, on rank 0 after `close`
        self.sync()

    def wants(self, grade: float | None) -> bool:
        """Whether a step of this grade goes to the learner (every step before a model exists)."""
        return self.calculator is None or grade is None or grade > self.threshold_save

    def learn(self, lmp, step: int) -> tuple[bool, str | None]:
        """Collective: gather this step's structure, let the learner answer it on rank 0, and follow its model.
        (whether the model changed, the learner's error or None), the same on every rank."""
        structure = self._gather(lmp)
        error = None
        if self.learner is not None:
            try:
                self.learner.compute(*structure)
            except Exception as exc:  # noqa: BLE001 - every rank must hear of it, or they would wait for ever
                error = f"the learner (rank 0) at step {step}: {type(exc).__name__}: {exc}"
        self.world.wait_for_all()
        error = self.world.broadcast_text(error or "") or None
        if error:
            return False, error
        return self.sync(), None

    def sync(self) -> bool:
        """Collective: every rank takes the learner's newest model if it is new; whether it was."""
        current = self.learner.current if self.learner is not None else None
        version = int(self.world.broadcast_text(str(current.version if current is not None else 0)))
        if version == self.version or version == 0:
            self.version = version
            return False
        mtp = parse_mtp(self.world.broadcast_text(format_mtp(current.mtp) if current is not None else None),
                        f"model version {version}")
        active_set = load_active_set(io.BytesIO(self.world.broadcast_bytes(
            _active_set_bytes(current.active_set) if current is not None else None)), mtp)
        self.calculator = MTPCalculator(mtp, species=self.species, active_set=active_set)
        self.version = version
        return True

    def _gather(self, lmp):
        """The whole structure (positions Å in ID order, cell, pbc, atomic numbers), on every rank."""
        nlocal = lmp.extract_global("nlocal")
        tags = np.concatenate(self.world.gather_all(lmp.numpy.extract_atom("id", nelem=nlocal).astype(np.int64)))
        types = np.concatenate(self.world.gather_all(lmp.numpy.extract_atom("type", nelem=nlocal).astype(np.int64)))
        positions = np.concatenate(self.world.gather_all(lmp.numpy.extract_atom("x", nelem=nlocal, dim=3)))
        order = np.argsort(tags)
        cell, periodic = box_cell(lmp)
        return positions[order], cell, periodic, self.numbers[types[order] - 1]

    def close(self, final_refit: bool = True) -> dict | None:
        """Collective: the learner's final refit (final.mtp, unless the run failed); its summary on rank 0."""
        summary = None
        if self.learner is not None:
            self.learner.close(final_refit)
            summary = self.learner.summary()
        self.world.wait_for_all()
        return summary


def _active_set_bytes(active_set) -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "active_set.npz")
        save_active_set(active_set, path)
        with open(path, "rb") as stream:
            return stream.read()
