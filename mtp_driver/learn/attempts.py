"""One attempt at a reference call, wherever it runs: in the learner, in a worker of its local process
pool, or on a worker of another executor (Dask, Parsl, ...: `remote_attempt`).

An attempt runs in a directory of its own, removed after a success and kept (with `failure.txt`, the
traceback) after a failure, whose message names it. Any exception of an attempt is a failed attempt.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import NamedTuple

from ase import Atoms

from .journal import store_result
from .processes import Group, Groups
from .reference import Reference, ReferenceFailure

PROBE_FILE = "executor.probe"  # in the run directory: a worker that reads the learner's probe in it shares the file system
FAILURE = "failure.txt"  # in the kept directory of a failed attempt: what went wrong
INTERRUPTED = ".interrupted"  # suffix of the directory of an attempt stopped with its pool worker


class Outcome(NamedTuple):
    """One attempt: the labelled structure, or why it failed; neither when the call did not run or
    was stopped, which is no failed attempt: the call is made again."""

    labelled: Atoms | None
    failure: str | None
    seconds: float


NOT_RUN = Outcome(None, None, 0.0)
_attempt: Path | None = None  # the directory of the attempt this process is making, for _leave_attempt


def attempt(reference: Reference, atoms: Atoms, directory: Path, groups: Groups | None) -> Outcome:
    """One attempt in `directory`, made here (so it marks a started attempt): removed after a success,
    kept with FAILURE (the traceback) after any exception."""
    global _attempt
    started = time.perf_counter()
    directory.mkdir(parents=True)
    _attempt = directory
    try:
        labelled, failure = reference.compute(atoms, directory, groups), None
    except Exception as exc:  # a calculator's own bug too: a failed attempt, retried, then quarantined
        labelled, failure = None, str(exc) if isinstance(exc, ReferenceFailure) else f"{type(exc).__name__}: {exc}"
        (directory / FAILURE).write_text(traceback.format_exc())
    finally:
        _attempt = None
    seconds = time.perf_counter() - started
    if labelled is None:
        return Outcome(None, f"{failure} (kept {directory} for inspection)", seconds)
    shutil.rmtree(directory)
    return Outcome(labelled, None, seconds)


def start_pool_worker(groups: Groups) -> None:
    """Initializer of a worker of the local process pool."""
    os.setpgid(0, 0)  # a recorded group of its own: a stop, the reaper or a restart kill it with all it started
    groups.add(Group.led_by(os.getpid()))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle: it stops its workers itself
    signal.signal(signal.SIGTERM, _leave_attempt)


def _leave_attempt(number, frame) -> None:
    """SIGTERM: the learner stops, or the pool does because another worker died; either way this
    attempt did not fail, and its directory tells the learner so."""
    try:
        if _attempt is not None:
            os.replace(_attempt, _attempt.with_name(_attempt.name + INTERRUPTED))
    finally:
        os._exit(128 + number)  # whatever happened: the pool waits for this worker to end


def remote_attempt(reference: Reference, atoms: Atoms, key: str, fingerprint: str, run_dir: str,
                   probe: str) -> Outcome:
    """One attempt on a worker of another executor, in a temporary directory of the worker's machine (node-local
    scratch, as DFT codes want it; kept after a failure, the message names host and path). When the run directory
    is reachable from the worker (a shared file system: its probe file holds `probe`), the worker also stores the
    result in RUN/references itself, so a result that finishes while the learner is down is found at its restart."""
    run = Path(run_dir)
    shared = _reads(run / PROBE_FILE, probe)
    parent = Path(tempfile.mkdtemp(prefix="mtp-driver-attempt-"))
    outcome = attempt(reference, atoms, parent / key, None)
    if outcome.labelled is None:
        return outcome._replace(failure=f"{outcome.failure} on {socket.gethostname()}")
    shutil.rmtree(parent, ignore_errors=True)
    if shared:
        store_result(run, key, outcome.labelled, outcome.seconds, fingerprint)
    return outcome


def _reads(path: Path, probe: str) -> bool:
    try:
        return path.read_text().strip() == probe
    except OSError:
        return False
