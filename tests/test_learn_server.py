"""One learner process shared by several driver processes over a UNIX socket (`mtp-driver
learn-server`, `mtp-driver serve --learner`): real i-PI, EMT as the reference."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from ase.build import bulk

from mtp_driver.io.lock import InUseError
from mtp_driver.io.mtp_file import write_mtp
from mtp_driver.ipi import Endpoint, IPIProcess
from mtp_driver.learn.client import LearnerClient, RemoteLearnerError
from mtp_driver.learn.frames import MAGIC, MAX_BODY_BYTES, PREFIX
from mtp_driver.learn.journal import Journal
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.server import LearnerServer
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp
from test_learn_ipi import PIMD, PIMD_SETTINGS  # the tests here set the beads and steps

pytestmark = pytest.mark.timeout(300)

def cu32() -> object:
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)


def start_learn_server(tmp_path: Path, run_dir: Path, sock: Path, *options: str) -> subprocess.Popen:
    """`mtp-driver learn-server` on an untrained level-6 MTP; its stderr goes to RUN_DIR.log."""
    potential = tmp_path / "untrained.mtp"
    if not potential.exists():
        write_mtp(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), potential)
    command = [sys.executable, "-m", "mtp_driver.cli", "learn-server", str(potential), "--species", "Cu",
               "--run-dir", str(run_dir), "--socket", str(sock), *options]
    with open(f"{run_dir}.log", "w") as log:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)


def start_driver(learner: Path | list[str], template: Path, endpoint: Endpoint) -> subprocess.Popen:
    """`serve --learner` at a UNIX socket path, or with the given learner options (TCP and token)."""
    options = ["--learner", str(learner)] if isinstance(learner, Path) else learner
    command = [sys.executable, "-m", "mtp_driver.cli", "serve", *options, "--template", str(template),
               "--unix", endpoint.unix]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def tcp_learner_options(run_dir: Path) -> list[str]:
    """`serve` options for the learner server of RUN_DIR on loopback TCP, once its log says where it listens."""
    log = Path(f"{run_dir}.log")
    wait_for(lambda: "listening at tcp://" in log.read_text(), 60, "the learner server on TCP")
    port = re.search(r"listening at tcp://127\.0\.0\.1:(\d+)", log.read_text()).group(1)
    return ["--learner", f"tcp://127.0.0.1:{port}", "--token-file", str(run_dir / "learner.token")]


@pytest.mark.processes
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_pimd_beads_on_two_driver_processes_share_one_learner_server(tmp_path, transport):
    """8 PIMD beads, 2 `serve --learner` processes, 1 `learn-server` process: i-PI finishes, both drivers
    answer, no structure is computed twice, and the server stops by itself and writes final.mtp. Over the
    UNIX socket, and over loopback TCP with the run's token (walkers on other machines)."""
    steps = 3
    cu32().write(tmp_path / "init.extxyz")
    run_dir, sock = tmp_path / "run", tmp_path / "learner.sock"
    listen = ["--listen", "0"] if transport == "tcp" else []  # port 0: any free one, read from the log
    server = start_learn_server(tmp_path, run_dir, sock, "--refit-iterations", "10", "--stop-when-walkers-leave",
                                *listen)
    learner = tcp_learner_options(run_dir) if transport == "tcp" else sock
    endpoint = Endpoint(unix=f"lsrv_{uuid.uuid4().hex[:8]}")
    with IPIProcess(PIMD, tmp_path, endpoint, **dict(PIMD_SETTINGS, nbeads=8, total_steps=steps)) as ipi:
        drivers = [start_driver(learner, tmp_path / "init.extxyz", endpoint) for _ in range(2)]
        assert ipi.wait(200) == 0
        outputs = [driver.communicate(timeout=60) for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], [err[-2000:] for _, err in outputs]
    served = [int(re.search(r"served (\d+) requests", err).group(1)) for _, err in outputs]
    assert sum(served) == 8 * (steps + 1) and min(served) > 0
    summary = json.loads(server.communicate(timeout=120)[0].strip().splitlines()[-1])
    server_log = Path(f"{run_dir}.log").read_text()
    assert server.returncode == 0, server_log[-3000:]
    assert "stopping: all 2 walker(s) left" in server_log and not sock.exists()
    assert server_log.count(", 127.0.0.1:") >= 2 * (transport == "tcp")  # the walkers came over TCP
    assert (run_dir / "final.mtp").stat().st_size > 0
    computed = Counter(event["key"] for event in Journal(run_dir).events() if event["event"] == "reference")
    assert computed and max(computed.values()) == 1 and summary["reference_calls"] == len(computed)
    assert summary["steps"] == sum(served)
    trace = [json.loads(line) for line in (run_dir / "grades.jsonl").read_text().splitlines()]
    assert sorted(entry["step"] for entry in trace) == list(range(1, sum(served) + 1))
    walkers = {entry["walker"] for entry in trace}
    assert len(walkers) == 2 and all(name.startswith("walker ") for name in walkers)


@pytest.mark.processes
def test_killed_learner_server_ends_the_driver_with_a_clear_message(tmp_path):
    cu32().write(tmp_path / "init.extxyz")
    run_dir, sock = tmp_path / "run", tmp_path / "learner.sock"
    server = start_learn_server(tmp_path, run_dir, sock, "--refit-iterations", "0")
    endpoint = Endpoint(unix=f"lkill_{uuid.uuid4().hex[:8]}")
    try:
        with IPIProcess(PIMD, tmp_path, endpoint, **dict(PIMD_SETTINGS, nbeads=1, total_steps=100)) as ipi:
            driver = start_driver(sock, tmp_path / "init.extxyz", endpoint)
            # the first request of an untrained potential holds: the driver waits on the learner now
            journal = run_dir / "journal.jsonl"
            wait_for(lambda: journal.exists() and '"hold"' in journal.read_text(), 120, "a held request")
            server.kill()
            _, err = driver.communicate(timeout=30)
            assert ipi.proc.poll() is None  # i-PI waits for another driver, as with any driver that failed
    finally:
        server.kill()
        server.wait()
    assert driver.returncode == 1
    assert f"the learner at {sock} closed the connection (it was stopped or died" in err
    assert "Traceback" not in err


def test_socket_is_private_a_live_one_is_refused_a_stale_one_replaced(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mtp_driver.learn.server")
    path = tmp_path / "learner.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # what a server killed with -9 leaves behind
    stale.close()
    with LearnerServer(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"replacing the stale socket file {path}" in caplog.text
        with pytest.raises(InUseError, match=f"another learner server is using the socket path {path} "
                                             f"\\(process {os.getpid()} "):
            LearnerServer(path)
        assert path.exists()  # the refused server removed nothing
        # nor left its private directory
        assert sorted(p.name for p in tmp_path.iterdir()) == ["learner.sock", "learner.sock.lock"]
    assert not path.exists()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a listener that holds no lock is found too
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(FileExistsError, match=f"a learner server already answers at {path}: stop it first"):
            LearnerServer(path)
    finally:
        live.close()
        path.unlink()
    path.write_text("not a socket")
    with pytest.raises(FileExistsError, match="exists and is not a socket"):
        LearnerServer(path)


@pytest.mark.processes
def test_learn_server_command_refuses_a_live_socket_and_stops_on_sigterm(tmp_path):
    sock = tmp_path / "learner.sock"
    first = start_learn_server(tmp_path, tmp_path / "run", sock)
    try:
        wait_for(lambda: "listening at" in Path(f"{tmp_path / 'run'}.log").read_text(), 60, "the first server")
        second = start_learn_server(tmp_path, tmp_path / "run2", sock)
        assert second.wait(60) == 2
        refusal = Path(f"{tmp_path / 'run2'}.log").read_text()
        assert f"another learner server is using the socket path {sock} (process {first.pid} " in refusal
        assert "Traceback" not in refusal
        assert not (tmp_path / "run2").exists()  # refused before touching a run directory
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    finally:
        first.kill()
    log = Path(f"{tmp_path / 'run'}.log").read_text()
    assert "stopping: received SIGTERM" in log and not sock.exists()
    assert Journal(tmp_path / "run").events()[-1]["event"] == "stop"


@pytest.fixture
def served_learner(tmp_path):
    """A real learner (untrained level-6 MTP, EMT) behind a `LearnerServer` in a thread of this process."""
    learner = Learner(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), tmp_path / "run",
                      LearnSettings(species=("Cu",), refit_iterations=0))
    server = LearnerServer(tmp_path / "learner.sock")
    thread = threading.Thread(target=server.serve, args=(learner,), daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join(30)
    server.close()
    learner.close(final_refit=False)


def collapsed() -> object:
    atoms = cu32()
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    return atoms


def test_unphysical_structure_arrives_at_the_walker_with_the_learners_message(served_learner):
    atoms = collapsed()
    client = LearnerClient(served_learner.path)
    learners_message = r"UnphysicalStructure: request \d+: atoms 0 and 1 are 0.3000 Å apart"
    with pytest.raises(RemoteLearnerError, match=learners_message) as raised:
        client.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    assert raised.value.kind == "UnphysicalStructure" and "no reference call was made" in str(raised.value)
    client.close()


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def frame(header: bytes, body: bytes = b"") -> bytes:
    return PREFIX.pack(MAGIC, len(header), len(body)) + header + body


@pytest.mark.parametrize("garbage, logged", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "does not start with b'MTPL'"),
    (PREFIX.pack(MAGIC, 100, MAX_BODY_BYTES + 1), "beyond the limits"),
    (frame(b"[1, 2]"), "not a JSON object with a 'type'"),
    (frame(b'{"type": "hello", "protocol": 1, "arrays": [["x", "|O", [1]]]}', bytes(8)), "not allowed"),
    (frame(b'{"type": "hello", "protocol": 1, "arrays": [["x", "<f8", [2]]]}', bytes(8)), "does not fit"),
], ids=["not-the-protocol", "oversized", "header-not-an-object", "object-dtype", "arrays-beyond-the-body"])
def test_malformed_frame_drops_that_connection_and_the_server_serves_on(served_learner, caplog, garbage, logged):
    caplog.set_level(logging.INFO, logger="mtp_driver.learn.server")
    walker = LearnerClient(served_learner.path)  # connected before the garbage
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(served_learner.path))
    raw.sendall(garbage)
    assert closed_by_peer(raw)
    raw.close()
    wait_for(lambda: "dropped the connection" in caplog.text, 10, "the error log")
    assert logged in caplog.text
    atoms = collapsed()
    for client in (walker, LearnerClient(served_learner.path)):  # the old walker and a new one are answered
        with pytest.raises(RemoteLearnerError, match="UnphysicalStructure"):
            client.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
        client.close()
    assert served_learner.walkers == 2  # the garbage never counted as a walker


def test_a_batch_of_beads_is_learnt_in_one_hold(served_learner):
    """The beads of a batched i-PI request, sent as one message: graded together, every extrapolating one
    pooled into one D-optimal selection, one hold for the batch; all answered by the model after it."""
    import numpy as np

    beads = []
    for k in range(4):
        atoms = cu32()
        atoms.positions += np.random.default_rng(k).normal(scale=0.05, size=atoms.positions.shape)
        beads.append((atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers))
    client = LearnerClient(served_learner.path)
    results = client.compute_batch(beads)
    client.close()
    events = Journal(served_learner.path.parent / "run").events()
    holds = [event for event in events if event["event"] == "hold"]
    assert len(holds) == 1 and holds[0]["selected"] == 4 and holds[0]["candidates"] == 3
    assert [extras["model_version"] for *_, extras in results] == ["learner:1"] * 4
    assert all(extras["held_seconds"] > 0 for *_, extras in results) and len({e for e, *_ in results}) == 4
    assert served_learner.requests == 4
