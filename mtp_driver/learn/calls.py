"""Reference calls of a learning run: journaled, in parallel, retried, failures quarantined.

Every structure is recorded in the journal before its call and every result is stored before it
is returned, so a killed run neither loses nor repeats a call. A structure that fails `retries`
+ 1 times is quarantined (never trained on) and the run goes on, until more than
`failure_budget` structures have failed: then `LearningStopped` says so.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

from ase import Atoms

from .journal import Journal, structure_key
from .reference import Reference, ReferenceFailure


class LearningStopped(RuntimeError):
    """The run cannot go on (too many failed reference calls); the message says what to do."""


def _compute(reference: Reference, atoms: Atoms) -> tuple[Atoms | None, str | None, float]:
    started = time.perf_counter()
    try:
        return reference.compute(atoms), None, time.perf_counter() - started
    except ReferenceFailure as exc:
        return None, str(exc), time.perf_counter() - started


class ReferenceCalls:
    """Runs reference calls for the learner; `workers` > 1 runs them in parallel processes."""

    def __init__(self, reference: Reference, journal: Journal, workers: int = 1, retries: int = 2,
                 failure_budget: int = 10):
        self.reference = reference
        self.journal = journal
        self.workers = workers
        self.retries = retries
        self.failure_budget = failure_budget
        self.fingerprint = reference.fingerprint()
        self.failed = len(journal.quarantined())
        self.done = journal.completed()  # read once: this object adds every later result
        self.calls = 0  # calls made by this process (restarts do not repeat finished ones)
        self._pool = None

    def key(self, atoms: Atoms) -> str:
        return structure_key(atoms, self.fingerprint)

    def compute(self, structures: Sequence[Atoms], **fields) -> list[tuple[str, Atoms]]:
        """(key, labelled structure) for each structure whose reference result exists or could be
        computed, in input order; the rest are quarantined. Already finished keys are not recomputed."""
        done = self.done
        keys = [self.key(atoms) for atoms in structures]
        todo = {}
        for key, atoms in zip(keys, structures):
            if key not in done and key not in todo:
                self.journal.select(key, atoms, **fields)
                todo[key] = atoms
        reasons: dict[str, list[str]] = {key: [] for key in todo}
        while todo:
            outcomes = self._map(list(todo.values()))
            for (key, atoms), (labelled, failure, seconds) in zip(list(todo.items()), outcomes):
                self.calls += 1
                if labelled is not None:
                    self.journal.complete(key, labelled, seconds)
                    done[key] = labelled
                    del todo[key]
                    continue
                reasons[key].append(failure)
                self.journal.log("reference_failed", key=key, attempt=len(reasons[key]), reason=failure)
                if len(reasons[key]) > self.retries:
                    self.journal.quarantine(key, atoms, reasons[key])
                    self.failed += 1
                    del todo[key]
        if self.failed > self.failure_budget:
            raise LearningStopped(
                f"{self.failed} structures failed their reference calls, more than the failure budget of "
                f"{self.failure_budget}; see {self.journal.run_dir / 'quarantine'} for the structures and reasons, "
                "fix the reference settings (or raise the budget) and restart: finished calls are kept")
        return [(key, done[key]) for key in dict.fromkeys(keys) if key in done]

    def _map(self, structures: list[Atoms]) -> list:
        if self.workers <= 1 or len(structures) == 1:
            return [_compute(self.reference, atoms) for atoms in structures]
        if self._pool is None:
            # forkserver: the learner holds Numba threads and sockets, which fork would copy
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"))
        futures = [self._pool.submit(_compute, self.reference, atoms) for atoms in structures]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as exc:  # a worker died (killed, out of memory): a failed call, and a new pool
                outcomes.append((None, f"reference worker failed: {type(exc).__name__}: {exc}", 0.0))
                self.close()
        return outcomes

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
