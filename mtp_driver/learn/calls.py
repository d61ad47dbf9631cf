"""Reference calls of a learning run: journaled, in parallel, retried, failures quarantined.

Every structure is recorded in the journal before its call and every result is stored before it
is returned, so a killed run neither loses nor repeats a call. A structure that fails `retries`
+ 1 times is quarantined (never trained on) and the run goes on, until more than
`failure_budget` structures have failed: then `LearningStopped` says so.

Every attempt runs in RUN/scratch/KEY-N (`attempts.py`), removed after a success and kept (with
`failure.txt`, the traceback) after a failure, whose message names it. Any exception of an attempt is a
failed attempt. With another executor (`executors.py`: Dask, or any concurrent.futures executor) the
selected structures are submitted at once and attempts run on its workers (`attempts.remote_attempt`); a
worker lost mid-call is a failed attempt. Reference commands and pool workers run in process groups of their own that are killed when the
learner stops or dies (`processes.py`). A stop (`interrupt`, Ctrl-C) fails no attempt: interrupted
calls stay pending and are made at the next start. A pool whose worker died (out of memory) is replaced;
the call that worker ran is one failed attempt, the calls stopped with the pool are made again.
"""

from __future__ import annotations

import multiprocessing
import secrets
import shutil
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Sequence

from ase import Atoms

from mtp_driver.io.atomic import atomic_write

from .attempts import FAILURE, INTERRUPTED, NOT_RUN, PROBE_FILE, Outcome, attempt, remote_attempt, start_pool_worker
from .executors import open_executor
from .journal import Journal, structure_key
from .processes import Groups, Reaper
from .reference import Reference, structure_mismatch

class LearningStopped(RuntimeError):
    """The run cannot go on (too many failed reference calls); the message says what to do."""


class StructureFailed(LearningStopped):
    """The reference failed on the held structure and the retrained model still extrapolates there: this request
    cannot be answered; the learner can go on with others (e.g. the next relaxation)."""


class CallsInterrupted(LearningStopped):
    """The learner was stopped (Ctrl-C, SIGTERM) during reference calls; they stay pending."""


def _after_break(directory: Path) -> Outcome:
    """The outcome of a call whose pool broke: a failed attempt if it ran in the worker that died (its
    directory is still there), else not run."""
    if not directory.exists():  # never started, or stopped with the pool
        return _forget(directory)
    reason = f"the reference worker making this call died (killed by a signal: out of memory?); kept {directory}"
    (directory / FAILURE).write_text(reason + "\n")
    return Outcome(None, reason, 0.0)


def _forget(directory: Path) -> Outcome:
    """A call that did not run or was stopped: nothing of it is kept."""
    shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(directory.with_name(directory.name + INTERRUPTED), ignore_errors=True)
    return NOT_RUN


class ReferenceCalls:
    """Runs reference calls for the learner; `workers` > 1 runs them in parallel processes, an `executor` other
    than "local" (see `executors.open_executor`) on that executor's workers."""

    def __init__(self, reference: Reference, journal: Journal, workers: int = 1, retries: int = 2,
                 failure_budget: int = 10, executor: str = "local"):
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
        self.groups = Groups(journal.run_dir / "processes")
        self.scratch = journal.run_dir / "scratch"
        self._reaper: Reaper | None = None
        self._interrupted = False  # a plain flag: set from signal handlers
        self._clear_leftovers()
        self.executor = open_executor(executor)
        self._probe = secrets.token_hex(16)
        if self.executor is not None:  # workers that read it share the run directory's file system
            with atomic_write(journal.run_dir / PROBE_FILE) as stream:
                stream.write(self._probe + "\n")

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
                self.journal.select(key, atoms, self.fingerprint, **fields)
                todo[key] = atoms
        reasons: dict[str, list[str]] = {key: [] for key in todo}
        while todo:
            if self._interrupted:
                raise CallsInterrupted(
                    f"the learner was stopped during reference calls: {len(todo)} interrupted call(s) stay pending "
                    f"(in {self.journal.run_dir / 'pending'}) and are made when the same command is run again")
            outcomes = self._map(todo)
            for (key, atoms), (labelled, failure, seconds) in zip(list(todo.items()), outcomes):
                if labelled is None and failure is None:
                    continue  # did not run, or stopped: made again, not a failed attempt
                self.calls += 1
                if labelled is not None:
                    self.journal.complete(key, labelled, seconds, self.fingerprint)
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

    def _map(self, todo: dict[str, Atoms]) -> list[Outcome]:
        """One attempt at each call of `todo`, in order; calls a stop cut short come back as NOT_RUN."""
        if self.executor is not None:
            return self._executor_map(todo)
        directories = [self._attempt_directory(key) for key in todo]
        if self._reaper is None and (self.reference.command is not None or self.workers > 1):
            # not PR_SET_PDEATHSIG: it reaches only a direct child (no mpirun rank), whose parent is a pool worker
            self._reaper = Reaper(self.groups)
        if self.workers <= 1 or len(todo) == 1:
            outcomes = [NOT_RUN if self._interrupted else attempt(self.reference, atoms, directory, self.groups)
                        for atoms, directory in zip(todo.values(), directories)]
        else:
            outcomes = self._pool_map(list(todo.values()), directories)
        if not self._interrupted:
            return outcomes
        # the stop killed them: no failed attempts, nothing to inspect
        return [outcome if outcome.labelled is not None else _forget(directory)
                for outcome, directory in zip(outcomes, directories)]

    def _pool_map(self, structures: list[Atoms], directories: list[Path]) -> list[Outcome]:
        if self._pool is None:
            # forkserver: the learner holds Numba threads and sockets, which fork would copy
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                             initializer=start_pool_worker, initargs=(self.groups,))
        try:
            futures = [self._pool.submit(attempt, self.reference, atoms, directory, self.groups)
                       for atoms, directory in zip(structures, directories)]
        except BrokenProcessPool:  # a worker died while idle: a new pool at the next round
            self._drop_broken_pool()
            return [_after_break(directory) for directory in directories]
        outcomes = []
        for future, directory in zip(futures, directories):
            try:
                outcomes.append(future.result())
            except BrokenProcessPool:  # a worker died, and the executor stopped every call still open
                self._drop_broken_pool()
                outcomes.append(_after_break(directory))
            except Exception as exc:  # e.g. a result that cannot be pickled: a failed attempt like any other
                outcomes.append(Outcome(None, f"the reference worker failed: {type(exc).__name__}: {exc}", 0.0))
        return outcomes

    def _executor_map(self, todo: dict[str, Atoms]) -> list[Outcome]:
        """One attempt at each call of `todo` on the executor, all submitted at once: the fit needs every selected
        structure, so the held walker waits for all of them. A stop cancels what has not finished (made again)."""
        submit = self.executor.executor.submit
        futures = [submit(remote_attempt, self.reference, atoms, key, self.fingerprint, str(self.journal.run_dir),
                          self._probe) for key, atoms in todo.items()]
        running = set(futures)
        while running and not self._interrupted:
            running = wait(running, timeout=0.5).not_done
        outcomes = []
        for future, (key, atoms) in zip(futures, todo.items()):
            if future in running:
                future.cancel()  # still running remotely: its result may still arrive in references/ (shared)
                outcomes.append(NOT_RUN)
                continue
            try:
                outcome = future.result()
            except Exception as exc:  # e.g. Dask's KilledWorker: the worker died (out of memory?) or was lost
                outcome = Outcome(None, f"the executor lost or failed this call: {type(exc).__name__}: {exc}", 0.0)
            mismatch = None if outcome.labelled is None else \
                structure_mismatch(atoms, outcome.labelled, self.reference.match_tolerance)
            if mismatch is not None:  # the worker checks too: another mtp-driver version there?
                (self.journal.run_dir / "references" / f"{key}.json").unlink(missing_ok=True)
                outcome = Outcome(None, f"the executor's result is not the structure asked for: {mismatch}", 0.0)
            outcomes.append(outcome)
        return outcomes

    def _drop_broken_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()  # returns once the executor has ended every worker
            self._pool = None
            self.groups.kill_all()  # the commands those workers left running

    def _attempt_directory(self, key: str) -> Path:
        """RUN/scratch/KEY-N, N the first number that no earlier attempt (a kept failure of an earlier run
        too) has taken."""
        number = 1
        while (self.scratch / f"{key}-{number}").exists():
            number += 1
        return self.scratch / f"{key}-{number}"

    def _clear_leftovers(self) -> None:
        """What a killed learner left: the process groups its reaper did not get to, and the directories
        of its unfinished attempts (those of failed ones are kept)."""
        self.groups.kill_all()
        if self.scratch.is_dir():
            for directory in self.scratch.iterdir():
                if not (directory / FAILURE).exists():
                    shutil.rmtree(directory)

    def interrupt(self) -> None:
        """Stop the running calls now (safe from signal handlers): they stay pending, and `compute`
        raises CallsInterrupted instead of making more."""
        self._interrupted = True
        self.groups.kill_all()

    def close(self) -> None:
        """Stop every process this object started (calls still running stay pending)."""
        self.groups.kill_all()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None
        if self.executor is not None:
            self.executor.close()
            self.executor = None
