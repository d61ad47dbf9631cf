"""Walkers as processes: each relaxes structures on its own core (threads share one interpreter, and the optimiser's
and the cell filter's Python then runs one walker at a time; measured: 2 thread walkers relax 0.8x as fast as 1).

The parent hands out (index, structure) tasks and stores each finished relaxation; each walker process loads the
fixed MTP itself, or asks the parent's learner through a learner server on a UNIX socket in a private temporary
directory (`LearnerClient`), so selection stays D-optimal across all walkers. Walkers run in their own process group
(a terminal's Ctrl-C reaches the parent only, which stops them at their next force call) and are started with
'spawn' (no fork of a process running Numba or server threads).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from ase import Atoms
from threadpoolctl import threadpool_limits

from mtp_driver.learn.calls import CallsInterrupted, LearningStopped
from mtp_driver.potential import Potential

from .relax import Relaxed, RelaxStore, Stoppable, Stopped, relax_structure
from .settings import RelaxSettings

POLL_SECONDS = 0.2  # the parent's wait for a result between looks at the stop event and its walkers
STOP_SECONDS = 60.0  # for walkers to finish their force call once stopped (a learner's hold answers first)


class WalkerPotential(NamedTuple):
    """What a walker process answers its force calls with: a fixed MTP file, or the learner server at a socket."""

    mtp_path: str | None
    species: tuple[str, ...]
    learner_socket: str | None = None


def _walker_potential(source: WalkerPotential) -> Potential:
    if source.learner_socket is not None:
        from mtp_driver.learn.client import LearnerClient

        return LearnerClient(source.learner_socket)
    from mtp_driver.calculator import MTPCalculator, MTPPotential

    return MTPPotential(MTPCalculator(source.mtp_path, species=list(source.species)),
                        model_version=Path(source.mtp_path).name)


def _walk(source: WalkerPotential, settings: RelaxSettings, tasks, results, stop) -> None:
    """A walker process: relax tasks until none is left or the parent stops it; report each result or the error."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when walkers stop
    threadpool_limits(limits=1, user_api="blas")  # as relax_all: a core per walker, no spinning BLAS threads
    parent = os.getppid()
    try:
        potential = Stoppable(_walker_potential(source), stop)
        while not stop.is_set() and os.getppid() == parent:  # a killed parent takes no results: stop too
            try:
                task = tasks.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if task is None:
                break
            index, atoms = task
            results.put(("relaxed", relax_structure(index, atoms, potential, settings)))
    except BaseException as exc:  # noqa: BLE001 - every error goes to the parent, which stops the others
        results.put(("error", getattr(exc, "kind", type(exc).__name__), str(exc)))


def _parent_error(kind: str, message: str) -> BaseException:
    """The exception the parent raises for a walker's error, as a thread walker would have raised it."""
    if kind == "Stopped":
        return Stopped(message)
    if kind == "CallsInterrupted":
        return CallsInterrupted(message)
    if kind in ("LearningStopped", "UntrainableStructure"):
        return LearningStopped(message)
    return RuntimeError(f"a walker process failed: {kind}: {message}")


def relax_in_processes(structures: Sequence[Atoms], source: WalkerPotential, settings: RelaxSettings, walkers: int,
                       store: RelaxStore | None = None, progress: Callable[[Relaxed], None] | None = None,
                       stop: threading.Event | None = None, learner=None) -> list[Atoms]:
    """`relax_all` with `walkers` processes: the relaxed structures in input order. With `learner` (whose run
    `source` does not name), the walkers ask it through a learner server this call starts and stops."""
    done = store.finished() if store is not None else {}
    todo = [i for i in range(len(structures)) if i not in done]
    stop = stop or threading.Event()
    context = multiprocessing.get_context("spawn")
    tasks, results, walker_stop = context.Queue(), context.Queue(), context.Event()
    for index in todo:
        tasks.put((index, structures[index]))
    for _ in range(walkers):
        tasks.put(None)
    with tempfile.TemporaryDirectory(prefix="mtp-walkers-") as private:  # mode 0700: the socket is ours alone
        server = serving = None
        if learner is not None:
            from mtp_driver.learn.server import LearnerServer

            server = LearnerServer(Path(private) / "learner.sock")
            serving = threading.Thread(target=server.serve, args=(learner,), name="walker-server", daemon=True)
            serving.start()
            source = source._replace(learner_socket=str(server.path))
        processes = [context.Process(target=_walk, args=(source, settings, tasks, results, walker_stop),
                                     name=f"walker-{k}") for k in range(walkers)]
        error = None

        def keep(relaxed: Relaxed) -> None:
            if store is not None:
                store.put(relaxed)
            done[relaxed.index] = relaxed.atoms
            if progress is not None:
                progress(relaxed)

        try:
            for process in processes:
                process.start()
            while len(done) < len(structures) and error is None:
                if stop.is_set():
                    error = Stopped("stopped")
                    break
                try:
                    message = results.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if not any(process.is_alive() for process in processes):
                        error = RuntimeError("every walker process ended before the relaxations were done")
                    continue
                if message[0] == "error":
                    error = _parent_error(*message[1:])
                else:
                    keep(message[1])
        finally:
            walker_stop.set()
            deadline = time.monotonic() + STOP_SECONDS
            while any(process.is_alive() for process in processes) and time.monotonic() < deadline:
                try:  # relaxations finished while stopping are kept too (and a walker exits once its queue drained)
                    message = results.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if message[0] == "relaxed":
                    keep(message[1])
            for process in processes:
                if process.is_alive():
                    process.kill()
                process.join()
            if server is not None:
                server.stop("the relaxations are done" if error is None else "stopping")
                serving.join()
                server.close()
    if error is not None:
        raise error
    return [done[i] for i in range(len(structures))]
