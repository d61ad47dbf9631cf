"""Reference calls as processes: any failure is a failed attempt, process groups are killed as a whole
(timeout, Ctrl-C, a killed pool worker, a learner killed with kill -9), scratch directories in the run."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from ase.build import bulk
from ase.calculators.socketio import SocketIOCalculator

from mtp_driver.io.mtp_file import write_mtp
from mtp_driver.learn import processes
from mtp_driver.learn.calls import ReferenceCalls
from mtp_driver.learn.client import LearnerClient
from mtp_driver.learn.journal import Journal
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.processes import Group, Groups
from mtp_driver.learn.reference import Reference, ReferenceFailure
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp

pytestmark = pytest.mark.timeout(60)

# A reference command like a DFT code under mpirun: a "rank" child in its process group, a marker
# SHARED/running/ATTEMPT holding "PGID PARENT RANK", then it waits while SHARED/slow exists, then EMT.
SLOW_EMT = """
import os, subprocess, sys, time
import ase.io
from ase.calculators.emt import EMT
shared = sys.argv[1]
rank = subprocess.Popen(["sleep", "300"])
os.makedirs(os.path.join(shared, "running"), exist_ok=True)
with open(os.path.join(shared, "running", os.path.basename(os.getcwd())), "w") as marker:
    marker.write(f"{os.getpgrp()} {os.getppid()} {rank.pid}")
while os.path.exists(os.path.join(shared, "slow")):
    time.sleep(0.05)
rank.kill()
atoms = ase.io.read("input.extxyz")
atoms.calc = EMT()
atoms.get_stress()
ase.io.write("output.extxyz", atoms)
"""

# An mpirun-like launcher that ignores SIGTERM (its ranks inherit that): only SIGKILL ends the tree
MPIRUN_LIKE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
ranks = [subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"]) for _ in range(2)]
with open(sys.argv[1], "w") as pids:
    pids.write(" ".join(str(pid) for pid in [os.getpid()] + [rank.pid for rank in ranks]))
time.sleep(300)
"""

# A learner killed with kill -9 in the middle of its calls (test_kill_minus_nine_*)
CALLS_IN_A_PROCESS = """
import sys
from pathlib import Path
from ase.build import bulk
from ase.calculators.socketio import SocketIOCalculator
from mtp_driver.learn.calls import ReferenceCalls
from mtp_driver.learn.journal import Journal
from mtp_driver.learn.reference import Reference
run, command, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
images = [bulk("Cu", "fcc", a=3.6 + 0.01 * k, cubic=True) for k in range(workers)]
ReferenceCalls(Reference(command=command), Journal(run), workers=workers).compute(images)
"""


def cu(k=0):
    return bulk("Cu", "fcc", a=3.6 + 0.01 * k, cubic=True)


def survivors(pgid: int) -> list[int]:
    """Processes of group `pgid` that still run (zombies have ended: they wait for their parent only)."""
    alive = []
    for name in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{name}/stat").read_text() if name.isdigit() else ""
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split() if stat else []
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(name))
    return alive


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)
    return value


def slow_emt(tmp_path: Path) -> str:
    """The SLOW_EMT command, slow until SHARED/slow is removed; SHARED is tmp_path/shared."""
    shared = tmp_path / "shared"
    (shared / "running").mkdir(parents=True)
    (shared / "slow").touch()
    script = tmp_path / "slow_emt.py"
    script.write_text(SLOW_EMT)
    return f"{sys.executable} {script} {shared}"


def markers(tmp_path: Path) -> dict[str, list[int]]:
    """Attempt directory name -> [pgid, parent pid, rank pid] of every SLOW_EMT command started so far."""
    return {path.name: [int(word) for word in path.read_text().split()]
            for path in (tmp_path / "shared" / "running").iterdir() if path.read_text()}


def failed_events(run_dir: Path) -> list[dict]:
    return [event for event in Journal(run_dir).events() if event["event"] == "reference_failed"]


@pytest.mark.processes
def test_non_utf8_output_is_a_failed_attempt_and_kept_for_inspection(tmp_path):
    """Bytes that are not UTF-8 on stdout/stderr: no crash (nor a crash loop at restart), the failure
    names the kept directory, which holds the output as written; a successful call leaves nothing."""
    garbage = tmp_path / "garbage.py"
    garbage.write_text("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\n')\n"
                       "sys.stderr.buffer.write(b'SCF \\xe9chec\\n')\nsys.exit(3)\n")
    run = tmp_path / "run"
    calls = ReferenceCalls(Reference(command=f"{sys.executable} {garbage}"), Journal(run), retries=1)
    assert calls.compute([cu()]) == []
    key = calls.key(cu())
    reasons = [event["reason"] for event in failed_events(run)]
    assert len(reasons) == 2 and "exited with 3: SCF \ufffdchec" in reasons[0]
    kept = run / "scratch" / f"{key}-1"
    assert f"kept {kept}" in reasons[0] and f"kept {run / 'scratch' / f'{key}-2'}" in reasons[1]
    assert (kept / "reference.stderr").read_bytes() == b"SCF \xe9chec\n"
    assert "Traceback" in (kept / "failure.txt").read_text()
    assert key in Journal(run).quarantined()

    emt = tmp_path / "emt_with_garbage.py"
    emt.write_text("import sys, ase.io\nfrom ase.calculators.emt import EMT\nsys.stdout.buffer.write(b'\\xff\\n')\n"
                   "atoms = ase.io.read('input.extxyz')\natoms.calc = EMT()\natoms.get_stress()\n"
                   "ase.io.write('output.extxyz', atoms)\n")
    good = ReferenceCalls(Reference(command=f"{sys.executable} {emt}"), Journal(tmp_path / "good"))
    assert len(good.compute([cu()])) == 1
    assert not list((tmp_path / "good" / "scratch").iterdir())  # removed after the success


@pytest.mark.parametrize("reference, message", [
    (Reference(calculator="reference_calculators:BrokenConstructor"), "RuntimeError: no license"),
    (Reference(command="true", input_format="no-such-format"), "no-such-format"),  # ase.io.write raises
])
def test_any_exception_of_a_call_is_a_failed_attempt(tmp_path, reference, message):
    calls = ReferenceCalls(reference, Journal(tmp_path), retries=1)
    assert calls.compute([cu(0), cu(1)]) == []  # quarantined, and the run goes on
    failed = failed_events(tmp_path)
    assert len(failed) == 4 and sorted(event["attempt"] for event in failed) == [1, 1, 2, 2]
    assert all(message in event["reason"] and "kept" in event["reason"] for event in failed)
    assert len(Journal(tmp_path).quarantined()) == 2 and not Journal(tmp_path).pending()
    kept = sorted((tmp_path / "scratch").iterdir())
    assert len(kept) == 4 and all("Traceback" in (path / "failure.txt").read_text() for path in kept)


def test_a_timeout_kills_a_shell_with_its_background_child(tmp_path):
    pgid_file = tmp_path / "pgid"
    reference = Reference(command=f"sh -c 'echo $$ > {pgid_file}; sleep 300 & sleep 300'", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ReferenceFailure, match="did not finish in 1.0 s"):
        reference.compute(cu(), tmp_path / "call")
    assert time.monotonic() - started < 10
    pgid = int(pgid_file.read_text())
    assert pgid != os.getpgrp() and survivors(pgid) == []


@pytest.mark.processes
def test_a_timeout_kills_an_mpirun_like_tree_that_ignores_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "GRACE_SECONDS", 0.5)
    script, pids_file = tmp_path / "mpirun_like.py", tmp_path / "pids"
    script.write_text(MPIRUN_LIKE)
    reference = Reference(command=f"{sys.executable} {script} {pids_file}", timeout=2.0)
    with pytest.raises(ReferenceFailure, match="did not finish in 2.0 s"):
        reference.compute(cu(), tmp_path / "call")
    launcher, *ranks = [int(pid) for pid in pids_file.read_text().split()]
    assert len(ranks) == 2 and survivors(launcher) == []
    assert not any(running(pid) for pid in [launcher, *ranks])


@pytest.mark.processes
def test_a_killed_pool_worker_is_one_failed_attempt_and_the_pool_is_replaced(tmp_path):
    """3 calls on 2 workers; one worker is killed (as by the OOM killer) while both make a call. Its
    call is one failed attempt (retried, then made); the call stopped with the pool and the one that
    had not started are made again without a failed attempt; no command of the broken pool survives."""
    command = slow_emt(tmp_path)
    run = tmp_path / "run"
    calls = ReferenceCalls(Reference(command=command), Journal(run), workers=2, retries=2)
    results = []
    thread = threading.Thread(target=lambda: results.extend(calls.compute([cu(0), cu(1), cu(2)])))
    thread.start()
    try:
        first = wait_for(lambda: markers(tmp_path) if len(markers(tmp_path)) == 2 else None, 30, "two calls")
        victim = sorted(first)[0]
        os.kill(first[victim][1], signal.SIGKILL)  # its worker
        wait_for(lambda: failed_events(run), 30, "the failed attempt")
    finally:
        (tmp_path / "shared" / "slow").unlink()
        thread.join(30)
        calls.close()
    assert len(results) == 3
    failed = failed_events(run)
    assert [(event["key"], event["attempt"]) for event in failed] == [(victim.rsplit("-", 1)[0], 1)]
    assert "worker making this call died" in failed[0]["reason"] and calls.calls == 4
    assert [path.name for path in (run / "scratch").iterdir()] == [victim]  # kept for inspection
    assert all(survivors(pgid) == [] and not running(rank) for pgid, _, rank in first.values())


def start_calls_process(tmp_path: Path, workers: int) -> tuple[subprocess.Popen, dict]:
    """CALLS_IN_A_PROCESS making `workers` SLOW_EMT calls, returned once every call runs."""
    command = slow_emt(tmp_path)
    learner = subprocess.Popen([sys.executable, "-c", CALLS_IN_A_PROCESS, str(tmp_path / "run"), command,
                                str(workers)], start_new_session=True)
    started = wait_for(lambda: markers(tmp_path) if len(markers(tmp_path)) == workers else None, 30, "the calls")
    return learner, started


@pytest.mark.processes
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_minus_nine_of_the_learner_leaves_no_reference_process(tmp_path, workers):
    """The reaper kills the groups of the commands (and of the pool workers) once the learner is gone."""
    learner, started = start_calls_process(tmp_path, workers)
    learner.kill()
    learner.wait()
    wait_for(lambda: all(survivors(pgid) == [] for pgid, _, _ in started.values()), 10, "the commands' end")
    assert not any(running(parent) or running(rank) for _, parent, rank in started.values())


@pytest.mark.processes
def test_a_restart_kills_what_a_killed_learner_and_its_reaper_left(tmp_path):
    learner, started = start_calls_process(tmp_path, 2)
    reaper = next(pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                  if f"PPid:\t{learner.pid}\n" in _status(pid) and b"processes.py" in _cmdline(pid))
    os.kill(reaper, signal.SIGKILL)
    learner.kill()
    learner.wait()
    time.sleep(0.5)
    assert all(survivors(pgid) for pgid, _, _ in started.values())  # nobody killed them yet
    ReferenceCalls(Reference(command="true"), Journal(tmp_path / "run"))  # the next start on this run directory
    assert all(survivors(pgid) == [] for pgid, _, _ in started.values())
    assert not any(running(worker) for _, worker, _ in started.values())
    assert not list((tmp_path / "run" / "scratch").iterdir())  # unfinished attempts are not kept


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.processes
def test_a_recycled_pid_is_never_killed(tmp_path):
    """A record of a killed run whose group id now belongs to another process (other start time)."""
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        groups = Groups(tmp_path / "processes")
        recorded = Group.led_by(stranger.pid)
        groups.add(recorded._replace(start_time=recorded.start_time - 1))
        groups.kill_all()
        assert stranger.poll() is None and not list((tmp_path / "processes").iterdir())
    finally:
        stranger.kill()
        stranger.wait()


def ctrl_c_during_a_call(tmp_path: Path, cli: str, options: list[str], request) -> tuple[int, str, list]:
    """`mtp-driver CLI` (a learner on a SLOW_EMT reference, in a process group of its own) answering
    `request()` in a thread, SIGINT to its group (as a terminal sends it) during the reference call;
    checks that the command's group is gone, the call is pending, not failed, and that a restart makes
    it. Returns the exit code, the stderr and the errors `request` raised."""
    command = slow_emt(tmp_path)
    potential, run = tmp_path / "untrained.mtp", tmp_path / "run"
    write_mtp(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), potential)
    learner = subprocess.Popen([sys.executable, "-m", "mtp_driver.cli", cli, str(potential), "--species", "Cu",
                                "--run-dir", str(run), "--reference-command", command, "--refit-iterations", "0",
                                *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    errors = []

    def make_request():
        try:
            request()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=make_request)
    thread.start()
    try:
        (pgid, _, rank), = wait_for(lambda: markers(tmp_path), 30, "the reference call").values()
        os.killpg(learner.pid, signal.SIGINT)
        _, err = learner.communicate(timeout=30)
    finally:
        learner.kill()
        thread.join(30)
    assert survivors(pgid) == [] and not running(rank)
    journal = Journal(run)
    (key,) = journal.pending()  # the held request's structure (through i-PI's units: not bit for bit cu())
    assert not failed_events(run) and not journal.quarantined()
    assert not list((run / "scratch").iterdir())

    (tmp_path / "shared" / "slow").unlink()
    settings = LearnSettings(species=("Cu",), reference=Reference(command=command), refit_iterations=0)
    restarted = Learner(potential, run, settings)  # makes the pending call
    restarted.close(final_refit=False)
    assert key in Journal(run).completed() and not Journal(run).pending()
    return learner.returncode, err, errors


@pytest.mark.processes
def test_ctrl_c_stops_the_learner_server_and_the_call_stays_pending(tmp_path):
    sock = tmp_path / "learner.sock"

    def walker():
        atoms = cu()
        LearnerClient(sock, connect_timeout=30).compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)

    code, err, errors = ctrl_c_during_a_call(tmp_path, "learn-server", ["--socket", str(sock)], walker)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert [error.kind for error in errors] == ["CallsInterrupted"] and "stay pending" in str(errors[0])


@pytest.mark.processes
def test_ctrl_c_stops_mtp_driver_learn_and_the_call_stays_pending(tmp_path):
    """`mtp-driver learn` behind ASE's SocketIOCalculator: the held request ends the session with a message."""
    template, name = tmp_path / "cu.extxyz", f"lrn{os.getpid()}_{uuid.uuid4().hex[:8]}"
    cu().write(template)

    def engine():
        with SocketIOCalculator(unixsocket=name) as calc:
            atoms = cu()
            atoms.calc = calc
            atoms.get_forces()

    code, err, errors = ctrl_c_during_a_call(tmp_path, "learn", ["--template", str(template), "--unix", name], engine)
    assert code == 1 and "CallsInterrupted" in err and "stay pending" in err and "Traceback" not in err, err[-3000:]
    assert errors  # the engine's request was not answered
