"""Reference calls on a real Dask cluster (`--executor dask://...`): a `LocalCluster` of two worker
processes, EMT as the reference; the same calls as the local pool, a worker killed mid-call, the
learner killed with calls in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from mtp_driver.learn.executors import open_executor
from mtp_driver.learn.journal import JournalReader
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.reference import Reference
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(300)

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as local, distributed.Client(local) as client:
        yield local, client


def address(cluster) -> str:
    return "dask://" + cluster[0].scheduler_address.removeprefix("tcp://")


def requests():
    for k in range(10):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.positions += np.random.default_rng(k).normal(scale=0.02 + 0.01 * k, size=atoms.positions.shape)
        yield atoms


def learn(run_dir: Path, reference=None, **settings) -> Learner:
    settings = LearnSettings(species=("Cu",), reference=reference or Reference(), refit_iterations=0,
                             hold_fit_iterations=20, max_selected=4, **settings)
    learner = Learner(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), run_dir, settings)
    for atoms in requests():
        learner.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    learner.close(final_refit=False)
    return learner


def calls(run_dir: Path) -> list[tuple[str, float]]:
    return [(event["key"], event["energy"]) for event in JournalReader(run_dir).events() if event["event"] == "reference"]


@pytest.mark.processes
def test_dask_makes_the_same_calls_as_the_local_pool(tmp_path, cluster):
    local = learn(tmp_path / "local", workers=2)
    dask = learn(tmp_path / "dask", executor=address(cluster))
    assert calls(tmp_path / "dask") == calls(tmp_path / "local")  # same structures, same order, same energies
    assert len(calls(tmp_path / "local")) > len(local.held_seconds)  # holds computed several structures at once
    assert dask.summary()["reference_calls"] == local.summary()["reference_calls"]
    assert (tmp_path / "dask" / "executor.probe").exists() and not list((tmp_path / "dask").glob("scratch/*"))


def test_unknown_executors_are_refused_with_what_to_give():
    with pytest.raises(ValueError, match="expected 'local', 'dask://HOST:PORT'"):
        LearnSettings(executor="slurm")
    with pytest.raises(ValueError, match="cannot import nothing_here from os"):
        open_executor("os:nothing_here")
    with pytest.raises(ValueError, match="returned a str, not a concurrent.futures.Executor"):
        open_executor("os:getcwd")


def worker_running_a_task(client, timeout: float = 60.0) -> int:
    """The pid of a Dask worker processing a task now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [worker for worker, tasks in client.processing().items() if tasks]
        if busy:
            return client.run(os.getpid, workers=busy[:1])[busy[0]]
        time.sleep(0.05)
    raise TimeoutError("no Dask worker started a task")


@pytest.mark.processes
def test_a_worker_killed_mid_call_is_retried_and_nothing_is_lost(tmp_path, cluster):
    import threading

    _, client = cluster
    slow = Reference(calculator="reference_calculators:SlowEMT", kwargs={"delay": 2.0})
    settings = LearnSettings(species=("Cu",), reference=slow, refit_iterations=0, hold_fit_iterations=5,
                             executor=address(cluster))
    learner = Learner(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), tmp_path, settings)
    atoms = next(requests())
    asked = threading.Thread(target=learner.compute, args=(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers))
    asked.start()  # the first request holds: its call runs on a Dask worker
    os.kill(worker_running_a_task(client), signal.SIGKILL)
    asked.join(120)
    assert not asked.is_alive()
    events = JournalReader(tmp_path).events()
    learner.close(final_refit=False)
    assert [event["event"] for event in events if event["event"] in ("selected", "reference")] == \
        ["selected", "reference"]  # Dask ran the call again on the other worker: made once, stored once
    assert learner.mtp is not None and not JournalReader(tmp_path).quarantined()
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed one


@pytest.mark.processes
def test_a_learner_killed_with_calls_in_flight_restarts_without_repeating_a_stored_result(tmp_path, cluster):
    _, client = cluster
    run_dir = tmp_path / "run"
    script = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from test_learn_dask import learn
from mtp_driver.learn.reference import Reference
learn({str(run_dir)!r}, Reference(calculator="reference_calculators:SlowEMT", kwargs={{"delay": 3.0}}),
      executor={address(cluster)!r})
"""
    learner = subprocess.Popen([sys.executable, "-c", script], cwd=TESTS, start_new_session=True,
                               stderr=subprocess.PIPE, text=True)
    try:
        worker_running_a_task(client, timeout=120)
        os.killpg(learner.pid, signal.SIGKILL)
    finally:
        learner.wait()
    pending = JournalReader(run_dir).pending()
    assert pending, "the learner was killed with no call in flight"
    deadline = time.monotonic() + 60
    while any(not (run_dir / "references" / f"{key}.json").exists() for key in pending):
        assert time.monotonic() < deadline, "the calls in flight never stored their results"
        time.sleep(0.2)  # the workers finish them and store the results themselves (shared file system)
    stored = set(JournalReader(run_dir).completed())
    learn(run_dir, Reference(calculator="reference_calculators:SlowEMT", kwargs={"delay": 3.0}),
          executor=address(cluster))
    events = JournalReader(run_dir).events()
    restart = max(i for i, event in enumerate(events) if event["event"] == "start")
    made = {event["key"] for event in events[restart:] if event["event"] == "reference"}
    assert made and not stored & made, "a stored result was computed again"
    assert set(JournalReader(run_dir).completed()) >= stored


@pytest.mark.processes
def test_a_failing_call_on_a_worker_is_retried_then_quarantined_naming_where_it_ran(tmp_path, cluster):
    import socket

    from mtp_driver.learn.calls import ReferenceCalls
    from mtp_driver.learn.journal import Journal

    calls_ = ReferenceCalls(Reference(calculator="reference_calculators:NaNForces"), Journal(tmp_path), retries=1,
                            executor=address(cluster))
    try:
        assert calls_.compute([next(requests())]) == []
    finally:
        calls_.close()
    (reasons,) = [event["reasons"] for event in JournalReader(tmp_path).events() if event["event"] == "quarantined"]
    assert len(reasons) == 2 and all("non-finite" in reason and reason.endswith(f"on {socket.gethostname()}")
                                     for reason in reasons), reasons
