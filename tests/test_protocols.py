"""Every ready-to-run protocol in protocols/ runs: a few steps of each i-PI input with our driver
serving EMT, and each ASE script with --emt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import ase.io
import numpy as np
import pytest

from mtp_driver.ipi import DriverThread, Endpoint, IPIProcess, PotentialSpec, make_driver

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"
pytestmark = pytest.mark.timeout(240)

# input -> (template, drivers, steps): short runs, one driver per two beads at most
IPI_INPUTS = {
    "nvt.xml": ("cu108.extxyz", 1, 4),
    "npt.xml": ("cu108.extxyz", 1, 4),
    "pimd.xml": ("cu108.extxyz", 2, 2),
    "rpmd.xml": ("cu108.extxyz", 2, 2),
    "trpmd.xml": ("cu108.extxyz", 2, 2),
    "geop.xml": ("cu107_vacancy_rattled.extxyz", 1, 4),
    "neb.xml": ("cu107_vacancy_rattled.extxyz", 2, 2),
    "nvt_timing.xml": ("cu108.extxyz", 1, 4),
    "pimd_timing.xml": ("cu108.extxyz", 2, 2),
    "nvt_check.xml": ("cu108.extxyz", 1, 4),
    "pimd_check.xml": ("cu108.extxyz", 2, 2),
    "geop_check.xml": ("cu107_vacancy_rattled.extxyz", 1, 4),
    "neb_check.xml": ("cu107_vacancy_rattled.extxyz", 2, 2),
}


def test_every_protocol_is_tested_and_documented():
    shipped = {p.name for p in PROTOCOLS.glob("*.xml")}
    assert shipped == set(IPI_INPUTS)
    readme = (PROTOCOLS / "README.md").read_text()
    for name in [*shipped, *(p.name for p in PROTOCOLS.glob("ase_*.py"))]:
        assert f"`{name}`" in readme, f"{name} has no line in protocols/README.md"


@pytest.mark.processes
@pytest.mark.parametrize("name", IPI_INPUTS)
def test_ipi_protocol_runs(tmp_path, name):
    template, drivers, steps = IPI_INPUTS[name]
    shutil.copytree(PROTOCOLS / "structures", tmp_path / "structures")
    endpoint = Endpoint(unix=f"p{os.getpid()}_{uuid.uuid4().hex[:10]}")
    atoms = ase.io.read(tmp_path / "structures" / template)
    with IPIProcess((PROTOCOLS / name).read_text(), tmp_path, endpoint, total_steps=steps) as ipi:
        threads = [DriverThread(make_driver(PotentialSpec(emt=True), atoms), endpoint) for _ in range(drivers)]
        for thread in threads:
            thread.start()
        assert ipi.wait(180) == 0, ipi.log()[-2000:]
        served = sum(thread.result(60).requests for thread in threads)
    assert served >= steps
    output = ET.parse(PROTOCOLS / name).getroot().find("output")
    rows = np.loadtxt(tmp_path / f"{output.get('prefix')}.{output.find('properties').get('filename')}", ndmin=2)
    assert len(rows) >= 1 and np.isfinite(rows).all()
    if name == "npt.xml":
        assert rows[-1, -1] != pytest.approx(atoms.get_volume(), rel=1e-9), "the barostat never moved the cell"


def run_script(tmp_path, script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(PROTOCOLS / script), "--emt", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.processes
def test_ase_relaxation_script(tmp_path):
    out = run_script(tmp_path, "ase_relax.py", "--steps", "3", "--output", "relaxed.extxyz")
    assert len(ase.io.read(tmp_path / "relaxed.extxyz")) == 107 and "energy" in out


@pytest.mark.processes
def test_ase_md_script(tmp_path):
    run_script(tmp_path, "ase_md.py", "--steps", "3", "--interval", "1", "--trajectory", "md.extxyz")
    assert len(ase.io.read(tmp_path / "md.extxyz", ":")) == 4


@pytest.mark.processes
def test_ase_neb_script(tmp_path):
    out = run_script(tmp_path, "ase_neb.py", "--steps", "2", "--images", "3", "--output", "band.extxyz")
    assert len(ase.io.read(tmp_path / "band.extxyz", ":")) == 5 and "barrier" in out
