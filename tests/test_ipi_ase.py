"""ASE's SocketIOCalculator as the server: relaxations through the driver equal direct ones, and
`--potential` serves the MTP with the numbers of MTPCalculator."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.socketio import SocketIOCalculator
from ase.optimize import BFGS

from mtp_driver.ipi import DriverThread, Endpoint, PotentialSpec, make_driver, socket_calculator

pytestmark = pytest.mark.timeout(240)
SHIPPED_CU = Path(__file__).resolve().parents[1] / "mtp_driver" / "data" / "Cu_zuo2020.mtp"


def vacancy():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    del atoms[5]
    atoms.rattle(0.05, seed=2)
    return atoms


def bfgs(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=1e-3, steps=200)
    return atoms.positions.copy()


def test_socketio_relaxation_equals_direct_emt_relaxation():
    start = vacancy()
    direct = bfgs(start, EMT())
    # launch_client starts `mtp-driver serve` as a process and stops it when the calculator closes
    with socket_calculator(PotentialSpec(emt=True)) as calc:
        through_socket = bfgs(start, calc)
    np.testing.assert_allclose(through_socket, direct, rtol=0, atol=1e-8)


def test_mtp_potential_is_served_with_mtpcalculators_numbers():
    from mtp_driver.calculator import MTPCalculator

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=4)
    reference = atoms.copy()
    reference.calc = MTPCalculator(str(SHIPPED_CU), species=["Cu"])
    name = f"mtp{os.getpid()}_{uuid.uuid4().hex[:8]}"
    driver = make_driver(PotentialSpec(mtp=str(SHIPPED_CU), species=("Cu",)), atoms)
    with SocketIOCalculator(unixsocket=name) as calc:
        thread = DriverThread(driver, Endpoint(unix=name))
        thread.start()
        served = atoms.copy()
        served.calc = calc
        np.testing.assert_allclose(served.get_potential_energy(), reference.get_potential_energy(), rtol=1e-12)
        np.testing.assert_allclose(served.get_forces(), reference.get_forces(), atol=1e-10)
        np.testing.assert_allclose(served.get_stress(), reference.get_stress(), atol=1e-12)
        extras = json.loads(bytes(calc.results["morebytes"]))
    thread.result(30)
    assert set(extras) == {"model_version", "mtp_grade"}
    assert extras["model_version"].startswith("Cu_zuo2020.mtp:") and len(extras["model_version"]) == 27
