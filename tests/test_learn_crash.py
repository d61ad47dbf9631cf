"""Crash safety: kill -9 the learner at random moments, restart, and lose or repeat nothing."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mtp_driver.learn.journal import Journal

pytestmark = [pytest.mark.processes, pytest.mark.timeout(900)]
WORKER = Path(__file__).with_name("learner_crash_worker.py")
REQUESTS = 200


def start(run_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(WORKER), str(run_dir), str(REQUESTS)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def started(run_dir: Path) -> int:
    return sum(event["event"] == "start" for event in Journal(run_dir / "learning").events()) \
        if (run_dir / "learning").exists() else 0


def test_kill_minus_nine_loses_and_repeats_no_reference_call(tmp_path):
    rng = np.random.default_rng(2026)
    kills = 0
    while kills < 12:
        starts = started(tmp_path)
        worker = start(tmp_path)
        while started(tmp_path) == starts and worker.poll() is None:  # kill the learner, not the interpreter start-up
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))  # lands in reference calls, fits, journal and file writes
        if worker.poll() is not None:
            break  # finished before this kill
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
    final = start(tmp_path)
    output, _ = final.communicate(timeout=600)
    assert final.returncode == 0 and "finished" in output, output[-3000:]
    assert kills >= 10
    journal = Journal(tmp_path / "learning")
    events = journal.events()
    assert sum(event["event"] == "start" for event in events) == kills + 1
    finished = Counter(event["key"] for event in events if event["event"] == "reference")
    completed = journal.completed()
    assert finished and max(finished.values()) == 1  # no call was made twice
    assert set(finished) <= set(completed)  # every finished call is on disk
    assert not journal.pending()
    # the final training set is the union of all completed calls
    stop = [event for event in events if event["event"] == "stop"][-1]
    assert stop["summary"]["reference_calls"] == len(completed)
    assert int((tmp_path / "progress.txt").read_text()) == REQUESTS
