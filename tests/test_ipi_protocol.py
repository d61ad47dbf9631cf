"""The driver against a scripted server on a real UNIX socket: both message orders, units,
extras, and every fatal path (clear error, no hang, no connection reset)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import Bohr, Hartree

from mtp_driver.ipi import (
    DriverError,
    DriverThread,
    Endpoint,
    Evaluator,
    PotentialSpec,
    make_driver,
)
from mtp_driver.ipi.driver import Driver
from mtp_driver.potential import ZeroPotential
from mtp_driver.ipi.protocol import GETFORCE, INIT, POSDATA, STATUS, header

pytestmark = pytest.mark.timeout(60)


def cu_atoms():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.rattle(0.05, seed=3)
    return atoms


class ScriptedServer:
    """The server side of the i-PI protocol, driven step by step by a test."""

    def __init__(self):
        self.endpoint = Endpoint(unix=f"test{os.getpid()}_{uuid.uuid4().hex[:10]}")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.endpoint.path)
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.conn = None

    def accept(self):
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(30)

    def send(self, *parts: bytes):
        self.conn.sendall(b"".join(parts))

    def recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            assert chunk, f"driver closed after {len(data)} of {n} bytes"
            data += chunk
        return data

    def status(self) -> bytes:
        self.send(STATUS)
        return self.recv(12)

    def init(self, text: bytes = b"\x00"):
        self.send(INIT, np.int32(0).tobytes(), np.int32(len(text)).tobytes(), text)

    def posdata(self, atoms, natoms: int | None = None) -> bytes:
        h = np.ascontiguousarray(atoms.cell.array.T) / Bohr
        n = len(atoms) if natoms is None else natoms
        return b"".join(
            (POSDATA, h.tobytes(), np.linalg.inv(h).tobytes(), np.int32(n).tobytes(), (atoms.positions / Bohr).tobytes())
        )

    def forceready(self):
        assert self.recv(12) == b"FORCEREADY  "
        energy = np.frombuffer(self.recv(8), np.float64)[0]
        natoms = np.frombuffer(self.recv(4), np.int32)[0]
        forces = np.frombuffer(self.recv(24 * natoms), np.float64).reshape(natoms, 3)
        virial = np.frombuffer(self.recv(72), np.float64).reshape(3, 3)
        extras = self.recv(int(np.frombuffer(self.recv(4), np.int32)[0])).decode()
        return energy * Hartree, forces * Hartree / Bohr, virial.T * Hartree, json.loads(extras)

    def assert_closed_cleanly(self):
        """The driver read everything before closing: a reset here would hang i-PI 3.3.1."""
        assert self.conn.recv(1 << 16) == b""

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        os.unlink(self.endpoint.path)


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.close()


def run_in_thread(server, driver: Driver) -> DriverThread:
    thread = DriverThread(driver, server.endpoint, connect_timeout=20)
    thread.start()
    server.accept()
    return thread


def start(server, potential_spec=PotentialSpec(emt=True), atoms=None, **options) -> DriverThread:
    atoms = atoms if atoms is not None else cu_atoms()
    return run_in_thread(server, make_driver(potential_spec, atoms, **options))


def emt_reference(atoms):
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy(), atoms.get_forces(), -atoms.get_stress(voigt=False) * atoms.get_volume()


def test_both_message_orders_give_emt_in_ase_units(server):
    atoms = cu_atoms()
    thread = start(server)
    assert server.status() == b"NEEDINIT    "
    server.init()
    assert server.status() == b"READY       "
    energy, forces, virial = emt_reference(atoms)
    # i-PI's consolidated order: POSDATA and GETFORCE back to back
    server.send(server.posdata(atoms), GETFORCE)
    e1, f1, v1, x1 = server.forceready()
    # ASE's order: STATUS around every step
    assert server.status() == b"READY       "
    atoms.positions[0] += 0.01
    server.send(server.posdata(atoms))
    assert server.status() == b"HAVEDATA    "
    server.send(GETFORCE)
    e2, f2, v2, x2 = server.forceready()
    np.testing.assert_allclose(e1, energy, rtol=1e-12)
    np.testing.assert_allclose(f1, forces, atol=1e-12)
    np.testing.assert_allclose(v1, virial, atol=1e-12)
    assert e2 != e1
    np.testing.assert_allclose(e2, emt_reference(atoms)[0], rtol=1e-12)
    assert x1 == x2 == {"model_version": "EMT", "mtp_grade": None}
    server.send(header("EXIT"))
    summary = thread.result(20)
    assert summary.requests == 2 and summary.reason == "the server sent EXIT"


def test_server_closing_between_requests_is_a_clean_exit(server):
    thread = start(server, PotentialSpec(calculator="mtp_driver.potential:ZeroPotential"))
    server.init()
    server.send(server.posdata(cu_atoms()), GETFORCE)
    energy, forces, _, extras = server.forceready()
    assert energy == 0 and not forces.any() and extras["model_version"] == "zero"
    server.conn.close()
    assert thread.result(20).reason == "the server closed the connection"


def test_stop_between_requests_ends_the_driver(server):
    thread = start(server)
    assert server.status() == b"NEEDINIT    "
    thread.stop()
    assert thread.result(20).reason == "stopped by its owner"
    server.assert_closed_cleanly()


def fatal(thread, server, match: str):
    with pytest.raises(DriverError, match=match):
        thread.result(20)
    server.assert_closed_cleanly()


def test_unknown_header_is_fatal(server):
    thread = start(server)
    server.send(b"HELLO       ")
    fatal(thread, server, "unknown message header b'HELLO")


def test_server_dying_mid_message_is_reported(server):
    thread = start(server)
    server.send(server.posdata(cu_atoms())[:100])
    server.conn.shutdown(socket.SHUT_WR)
    with pytest.raises(DriverError, match="truncated POSDATA message"):
        thread.result(20)


def test_server_stalling_mid_message_times_out(server):
    thread = start(server, payload_timeout=0.5)
    server.send(server.posdata(cu_atoms())[:100])
    fatal(thread, server, "truncated POSDATA .*before the 0.5 s timeout")


def test_natoms_mismatch_is_fatal_and_drained(server):
    thread = start(server)
    server.init()
    big = cu_atoms().repeat((1, 1, 2))
    server.send(server.posdata(big), GETFORCE)
    fatal(thread, server, "server sent 32 atoms but the template has 16")


def test_nan_positions_are_fatal(server):
    thread = start(server)
    atoms = cu_atoms()
    atoms.positions[3] = np.nan
    server.send(server.posdata(atoms), GETFORCE)
    fatal(thread, server, r"non-finite coordinates \(NaN/inf; atoms \[3\]")


def test_atoms_too_close_are_fatal(server):
    atoms = cu_atoms()
    thread = start(server, atoms=atoms, min_distance=0.5)
    atoms.positions[1] = atoms.positions[0] + [0.2, 0, 0]
    server.send(server.posdata(atoms), GETFORCE)
    fatal(thread, server, "atoms 0 and 1 are 0.200 Å apart")


class Counting:
    """EMT through ASE, counting the structures it computes."""

    def __init__(self):
        from mtp_driver.potential import ASECalculatorPotential

        self.inner, self.computed = ASECalculatorPotential(EMT()), 0

    def compute(self, positions, cell, pbc, numbers):
        self.computed += 1
        return self.inner.compute(positions, cell, pbc, numbers)


def test_a_batched_request_is_answered_in_the_batched_layout_with_each_structures_results(server):
    """i-PI's batch: the atom count, every cell (h and its inverse), every position array; the reply: every
    energy, the atom count, every force array, every virial, each structure's extras. A batch padded with a
    copy of its last structure (as i-PI pads one) computes that structure once."""
    structures = [cu_atoms() for _ in range(3)]
    for k, atoms in enumerate(structures):
        atoms.positions[k] += 0.02 * (k + 1)
    structures.append(structures[-1].copy())  # i-PI's padding
    potential = Counting()
    thread = start(server, potential)
    server.init(b"\x00, batch_size:4")
    hs = [np.ascontiguousarray(atoms.cell.array.T) / Bohr for atoms in structures]
    server.send(POSDATA, np.int32(len(structures[0])).tobytes(),
                *(h.tobytes() + np.linalg.inv(h).tobytes() for h in hs),
                *((atoms.positions / Bohr).tobytes() for atoms in structures), GETFORCE)
    assert server.recv(12) == b"FORCEREADY  "
    energies = np.frombuffer(server.recv(32), np.float64) * Hartree
    natoms = int(np.frombuffer(server.recv(4), np.int32)[0])
    forces = np.frombuffer(server.recv(4 * 24 * natoms), np.float64).reshape(4, natoms, 3) * Hartree / Bohr
    virials = np.frombuffer(server.recv(4 * 72), np.float64).reshape(4, 3, 3).transpose(0, 2, 1) * Hartree
    extras = [json.loads(server.recv(int(np.frombuffer(server.recv(4), np.int32)[0]))) for _ in range(4)]
    for k, atoms in enumerate(structures):
        energy, force, virial = emt_reference(atoms)
        np.testing.assert_allclose(energies[k], energy, rtol=1e-12)
        np.testing.assert_allclose(forces[k], force, atol=1e-12)
        np.testing.assert_allclose(virials[k], virial, atol=1e-12)
    assert len(set(energies[:3])) == 3 and extras[0] == {"model_version": "EMT", "mtp_grade": None}
    assert potential.computed == 3 and server.status() == b"READY       "
    server.send(header("EXIT"))
    assert thread.result(20).requests == 4


@pytest.mark.parametrize("token", [b"batch_size:0", b"batch_size:x", b"batch_size:99999"])
def test_a_malformed_batch_size_is_fatal(server, token):
    thread = start(server)
    server.init(token)
    fatal(thread, server, "is not a batch size of 1 to 4096")


def test_getforce_before_posdata_is_fatal(server):
    thread = start(server)
    server.send(GETFORCE)
    fatal(thread, server, r"GETFORCE\) before sending positions")


class Exploding:
    def compute(self, positions, cell, pbc, numbers):
        return np.nan, np.zeros_like(positions), np.zeros((3, 3)), {}


class Flickering:
    """Extras whose keys change: i-PI would die with a KeyError."""

    calls = 0

    def compute(self, positions, cell, pbc, numbers):
        self.calls += 1
        extras = {"a": 1} if self.calls == 1 else {"b": 2}
        return 0.0, np.zeros_like(positions), np.zeros((3, 3)), extras


@pytest.mark.parametrize(
    "potential, steps, match",
    [(Exploding(), 1, "non-finite results"), (Flickering(), 2, r"extras keys changed from \['a'\] to \['b'\]")],
)
def test_bad_potential_results_are_fatal(server, potential, steps, match):
    thread = run_in_thread(server, Driver(Evaluator(potential, cu_atoms())))
    for step in range(steps - 1):
        server.send(server.posdata(cu_atoms()), GETFORCE)
        server.forceready()
    server.send(server.posdata(cu_atoms()), GETFORCE)
    fatal(thread, server, match)


def test_no_server_gives_a_clear_error_after_the_retry_budget():
    driver = make_driver(PotentialSpec(emt=True), cu_atoms())
    endpoint = Endpoint(unix=f"nobody{uuid.uuid4().hex}")
    with pytest.raises(DriverError, match=f"no server accepted a connection on unix socket {endpoint.path} within 0.5 s"):
        driver.serve(endpoint, connect_timeout=0.5)


def test_wire_cell_decides_periodicity_without_a_template_cell():
    from ase import Atoms

    molecule = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])
    seen = {}

    class Recorder(ZeroPotential):
        def compute(self, positions, cell, pbc, numbers):
            seen["pbc"] = pbc.tolist()
            return super().compute(positions, cell, pbc, numbers)

    evaluate = Evaluator(Recorder(), molecule)
    evaluate(np.eye(3) * 20, molecule.positions / Bohr)
    assert seen["pbc"] == [True] * 3
    evaluate(np.zeros((3, 3)), molecule.positions / Bohr)
    assert seen["pbc"] == [False] * 3


def serve_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "mtp_driver.cli", "serve", *args],
        capture_output=True, text=True, timeout=60, **kwargs,
    )


@pytest.mark.processes
def test_cli_reports_bad_input_before_connecting(tmp_path):
    missing = serve_cli("--emt", "--template", str(tmp_path / "none.xyz"), "--unix", "x")
    assert missing.returncode == 2 and "template file" in missing.stderr and "does not exist" in missing.stderr
    empty = serve_cli("--emt", "--template", "-", "--unix", "x", input="")
    assert empty.returncode == 2 and "stdin was empty" in empty.stderr
    template = tmp_path / "cu.xyz"
    cu_atoms().write(template)
    bad = serve_cli("--calculator", "no_such_module:Calc", "--template", str(template), "--unix", "x")
    assert bad.returncode == 2 and "cannot import module 'no_such_module'" in bad.stderr
    kwargs = serve_cli("--calculator", "a:B", "--calculator-kwargs", "[1]", "--template", "-", "--unix", "x")
    assert kwargs.returncode == 2 and "expected a JSON object" in kwargs.stderr
    nobody = serve_cli("--emt", "--template", str(template), "--unix", f"nobody{uuid.uuid4().hex}", "--connect-timeout", "0.3")
    assert nobody.returncode == 1 and "no server accepted a connection" in nobody.stderr


@pytest.mark.processes
def test_cli_fatal_error_exits_non_zero_with_the_reason(server, tmp_path):
    template = tmp_path / "two.xyz"
    cu_atoms()[:2].write(template)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtp_driver.cli", "serve", "--calculator", "ase.calculators.lj:LennardJones",
         "--calculator-kwargs", '{"sigma": 2.3}', "--template", str(template), *server.endpoint.cli_args()],
        stderr=subprocess.PIPE, text=True,
    )
    server.accept()
    server.init()
    server.send(server.posdata(cu_atoms()), GETFORCE)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "server sent 16 atoms but template" in err and "two.xyz' has 2" in err
    assert "served 0 requests" in err
    server.assert_closed_cleanly()
