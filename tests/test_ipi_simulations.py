"""The driver serving EMT to the real `i-pi` executable: MD, PIMD, LBFGS and NEB agree with ASE;
the pes plugin works in i-PI's own driver and in-process; drivers come and go without harm."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.mep import NEB
from ase.optimize import BFGS, FIRE

from mtp_driver.ipi import (
    DriverThread, Endpoint, IPIProcess, PotentialSpec, configure_input, make_driver, start_driver_process,
)
from mtp_driver.ipi.server import ipi_executable

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]
PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"
CHECK = dict(structure="init.extxyz", prefix="out")
EMT_SPEC = PotentialSpec(emt=True)
IPI_SECONDS = 180


def unix_endpoint() -> Endpoint:
    return Endpoint(unix=f"t{os.getpid()}_{uuid.uuid4().hex[:10]}")


def tcp_endpoint() -> Endpoint:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return Endpoint(port=probe.getsockname()[1])


def start_ipi(workdir: Path, check: str, endpoint: Endpoint | None = None, **settings) -> IPIProcess:
    """i-PI on protocols/CHECK_check.xml from init.extxyz (`settings` as in `configure_input`);
    output to out.*, energies at full precision."""
    return IPIProcess(PROTOCOLS / f"{check}_check.xml", workdir, endpoint, **CHECK, **settings)


def potentials(workdir: Path) -> np.ndarray:
    return np.loadtxt(workdir / "out.props", ndmin=2)[:, 1]


def finish(ipi: IPIProcess) -> None:
    assert ipi.wait(IPI_SECONDS) == 0, ipi.log()[-2000:]


def assert_energies_match_emt(workdir: Path) -> int:
    frames = ase.io.read(workdir / "out.pos_0.extxyz", ":")
    direct = []
    for atoms in frames:
        atoms.calc = EMT()
        direct.append(atoms.get_potential_energy())
    np.testing.assert_allclose(potentials(workdir), direct, rtol=1e-6)
    return len(frames)


CELLS = {
    "cubic": lambda: bulk("Cu", "fcc", a=3.5, cubic=True).repeat(2),
    "triclinic": lambda: bulk("Cu", "fcc", a=3.5).repeat(3),
}


@pytest.mark.parametrize("cell", CELLS)
def test_nvt_energies_equal_direct_emt(tmp_path, cell):
    atoms = CELLS[cell]()
    atoms.rattle(0.02, seed=7)
    atoms.write(tmp_path / "init.extxyz")
    endpoint = unix_endpoint()
    with start_ipi(tmp_path, "nvt", endpoint, total_steps=20) as ipi:
        if cell == "cubic":
            # the command-line driver, as a user runs it
            driver = start_driver_process(EMT_SPEC, str(tmp_path / "init.extxyz"), endpoint, stderr=subprocess.PIPE, text=True)
            finish(ipi)
            _, log = driver.communicate(timeout=60)
            assert driver.returncode == 0 and "served 21 requests" in log and "the server sent EXIT" in log
        else:
            thread = DriverThread(make_driver(EMT_SPEC, atoms), endpoint)
            thread.start()
            finish(ipi)
            assert thread.result(60).requests == 21
    assert assert_energies_match_emt(tmp_path) == 21
    # the extras reached i-PI as a JSON object, the same keys every step
    assert (tmp_path / "out.version_0").read_text().count("EMT") == 21


def run_pimd(workdir: Path, endpoint: Endpoint, clients: int, as_processes: bool, **settings) -> np.ndarray:
    workdir.mkdir()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.write(workdir / "init.extxyz")
    with start_ipi(workdir, "pimd", endpoint, **dict(dict(nbeads=4, total_steps=8), **settings)) as ipi:
        if as_processes:
            drivers = [start_driver_process(EMT_SPEC, atoms, endpoint) for _ in range(clients)]
        else:
            drivers = [DriverThread(make_driver(EMT_SPEC, atoms), endpoint) for _ in range(clients)]
            for thread in drivers:
                thread.start()
        finish(ipi)
        for driver in drivers:
            assert driver.wait(60) == 0 if as_processes else driver.result(60).requests > 0
    centroid = ase.io.read(workdir / "out.pos_0.extxyz", "-1").positions
    return np.concatenate([potentials(workdir), centroid.ravel()])


def test_pimd_two_unix_clients_equal_three_tcp_clients(tmp_path):
    unix = run_pimd(tmp_path / "unix", unix_endpoint(), clients=2, as_processes=True)
    tcp = run_pimd(tmp_path / "tcp", tcp_endpoint(), clients=3, as_processes=False)
    np.testing.assert_allclose(unix, tcp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_size", [4, 3])  # all beads in one request; a size that does not divide them
def test_batched_pimd_equals_unbatched(tmp_path, batch_size, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="mtp_driver.ipi")
    unbatched = run_pimd(tmp_path / "unbatched", unix_endpoint(), clients=1, as_processes=False)
    batched = run_pimd(tmp_path / "batched", unix_endpoint(), clients=1, as_processes=False, batch_size=batch_size)
    assert f"{batch_size} structures per request" in caplog.text
    np.testing.assert_allclose(batched, unbatched, rtol=1e-12, atol=1e-12)


def test_pes_plugin_answers_batched_pimd_in_ipis_python_driver(tmp_path):
    """i-PI's own driver hands the plugin a batch as lists: one call of the evaluator, the same trajectory."""
    from mtp_driver.ipi import pes_plugin

    unbatched = run_pimd(tmp_path / "unbatched", unix_endpoint(), clients=1, as_processes=False)
    workdir = tmp_path / "plugin"
    workdir.mkdir()
    bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1)).write(workdir / "init.extxyz")
    endpoint = unix_endpoint()
    with start_ipi(workdir, "pimd", endpoint, nbeads=4, total_steps=8, batch_size=4) as ipi:
        ipi.wait_listening()
        client = subprocess.Popen([str(Path(ipi_executable()).with_name("i-pi-py_driver")), "-m", "custom", "-P",
                                   pes_plugin.__file__, "-u", "-a", endpoint.unix, "-o", "template=init.extxyz,emt=true"],
                                  cwd=workdir)
        finish(ipi)
        assert client.wait(60) == 0
    centroid = ase.io.read(workdir / "out.pos_0.extxyz", "-1").positions
    np.testing.assert_allclose(np.concatenate([potentials(workdir), centroid.ravel()]), unbatched, rtol=1e-12,
                               atol=1e-12)


def vacancy_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    del atoms[0]
    return atoms


def relaxed(atoms, fmax=1e-4):
    atoms = atoms.copy()
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=1000)
    return atoms


def serve_in_thread(endpoint: Endpoint, atoms) -> DriverThread:
    thread = DriverThread(make_driver(EMT_SPEC, atoms), endpoint)
    thread.start()
    return thread


def test_lbfgs_reaches_the_ase_bfgs_minimum(tmp_path):
    start = vacancy_cell()
    start.rattle(0.05, seed=11)
    start.write(tmp_path / "init.extxyz")
    endpoint = unix_endpoint()
    with start_ipi(tmp_path, "geop", endpoint, total_steps=2000) as ipi:
        thread = serve_in_thread(endpoint, start)
        finish(ipi)
        thread.result(60)
    final = ase.io.read(tmp_path / "out.pos_0.extxyz", "-1")
    reference = relaxed(start)
    assert potentials(tmp_path)[-1] == pytest.approx(reference.get_potential_energy(), abs=1e-6)
    shift = (final.positions - reference.positions).mean(axis=0)
    np.testing.assert_allclose(final.positions - shift, reference.positions, atol=1e-3)


def vacancy_hop_images(count: int):
    initial = relaxed(vacancy_cell())
    final = vacancy_cell()
    # the neighbour at a/2 (1/2, 1/2, 0) hops into the vacancy at the origin
    hopper = int(np.argmin(np.linalg.norm(final.positions - [1.8, 1.8, 0.0], axis=1)))
    final.positions[hopper] = [0.0, 0.0, 0.0]
    final = relaxed(final)
    images = [initial] + [initial.copy() for _ in range(count)] + [final]
    NEB(images, method="improvedtangent").interpolate()
    return images


def test_neb_barrier_of_a_vacancy_hop_matches_ase(tmp_path):
    images = vacancy_hop_images(5)
    ase.io.write(tmp_path / "init.extxyz", images)
    reference = [image.copy() for image in images]
    for image in reference:
        image.calc = EMT()
    band = NEB(reference, k=0.1, climb=True, method="improvedtangent")
    FIRE(band, logfile=None).run(fmax=1e-3, steps=2000)
    ase_barrier = max(image.get_potential_energy() for image in reference) - reference[0].get_potential_energy()

    endpoint = unix_endpoint()
    with start_ipi(tmp_path, "neb", endpoint, nbeads=7, total_steps=3000) as ipi:
        threads = [serve_in_thread(endpoint, images[0]) for _ in range(2)]
        finish(ipi)
        for thread in threads:
            thread.result(60)
    assert "NEB_CLIMB finished successfully" in ipi.log()
    last = np.loadtxt(tmp_path / "out.beads", ndmin=2)[-1, 1:]
    assert last.max() - last[0] == pytest.approx(ase_barrier, abs=1e-3)
    assert 0.3 < ase_barrier < 1.0


def steps_done(props: Path) -> int:
    return sum(1 for line in props.read_text().splitlines() if line.strip() and not line.startswith("#"))


def wait_for_steps(workdir: Path, steps: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    props = workdir / "out.props"
    while time.monotonic() < deadline:
        if props.exists() and steps_done(props) >= steps:
            return
        time.sleep(0.02)
    raise TimeoutError(f"i-PI did not reach step {steps} within {timeout} s")


def test_driver_exits_cleanly_when_ipi_dies(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.write(tmp_path / "init.extxyz")
    endpoint = unix_endpoint()
    with start_ipi(tmp_path, "nvt", endpoint, total_steps=100000) as ipi:
        driver = start_driver_process(EMT_SPEC, atoms, endpoint, stderr=subprocess.PIPE, text=True)
        wait_for_steps(tmp_path, 5)
        ipi.kill()
        _, log = driver.communicate(timeout=60)
    assert driver.returncode == 0, log
    assert "closed the connection" in log or "reset the connection" in log


def test_sigterm_between_steps_lets_a_second_driver_continue_the_same_trajectory(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    runs = {}
    for name in ("reference", "interrupted"):
        workdir = tmp_path / name
        workdir.mkdir()
        atoms.write(workdir / "init.extxyz")
        endpoint = unix_endpoint()
        with start_ipi(workdir, "nvt", endpoint, total_steps=150) as ipi:
            if name == "interrupted":
                first = start_driver_process(EMT_SPEC, atoms, endpoint, stderr=subprocess.PIPE, text=True)
                wait_for_steps(workdir, 20)
                first.send_signal(signal.SIGTERM)
                _, log = first.communicate(timeout=60)
                assert first.returncode == 0 and "received SIGTERM" in log, log
                assert steps_done(workdir / "out.props") < 150
            thread = serve_in_thread(endpoint, atoms)
            finish(ipi)
            thread.result(60)
        runs[name] = np.concatenate([potentials(workdir), ase.io.read(workdir / "out.pos_0.extxyz", "-1").positions.ravel()])
    # a fresh EMT sums its neighbours in another order: equal to round-off, not bit for bit
    np.testing.assert_allclose(runs["interrupted"], runs["reference"], rtol=1e-9, atol=1e-10)


def in_process(xml: str, plugin: str) -> str:
    """The i-PI input with its <ffsocket> replaced by an <ffdirect> running the pes plugin on EMT."""
    root = ET.fromstring(xml)
    ffsocket = root.find("ffsocket")
    direct = ET.Element("ffdirect", name=ffsocket.get("name"))
    ET.SubElement(direct, "pes").text = "custom"
    ET.SubElement(direct, "pes_path").text = plugin
    ET.SubElement(direct, "parameters").text = "{template: init.extxyz, emt: true}"
    root.insert(list(root).index(ffsocket), direct)
    root.remove(ffsocket)
    return ET.tostring(root, encoding="unicode")


def test_pes_plugin_in_ipis_python_driver_and_in_process(tmp_path):
    from mtp_driver.ipi import pes_plugin

    atoms = CELLS["cubic"]()
    atoms.rattle(0.02, seed=5)
    plugin = pes_plugin.__file__
    for mode in ("py_driver", "ffdirect"):
        workdir = tmp_path / mode
        workdir.mkdir()
        atoms.write(workdir / "init.extxyz")
        if mode == "py_driver":
            endpoint = unix_endpoint()
            with start_ipi(workdir, "nvt", endpoint, total_steps=5) as ipi:
                ipi.wait_listening()
                client = subprocess.Popen(
                    [str(Path(ipi_executable()).with_name("i-pi-py_driver")), "-m", "custom", "-P", plugin,
                     "-u", "-a", endpoint.unix, "-o", "template=init.extxyz,emt=true"],
                    cwd=workdir,
                )
                finish(ipi)
                assert client.wait(60) == 0
        else:
            xml = in_process(configure_input(PROTOCOLS / "nvt_check.xml", total_steps=5, **CHECK), plugin)
            with IPIProcess(xml, workdir) as ipi:
                finish(ipi)
        assert assert_energies_match_emt(workdir) == 6
