"""One bad input harms nothing else: cells no neighbour list can handle (NaN, 1e7 Å, 1e-7 Å) are refused
with a message before vesin sees them, on every path (the calculator, `serve`, `learn-server`, the learner),
and a request the learner cannot train on (an unknown element, no atoms) is refused before anything is
recorded. Structures that used to crash vesin (SIGFPE) or make it search for ever run in child processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from mtp_driver.ipi.protocol import GETFORCE
from mtp_driver.learn.client import LearnerClient, RemoteLearnerError
from mtp_driver.learn.intake import UntrainableStructure
from mtp_driver.learn.journal import Journal
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp
from mtp_driver.geometry import MAX_IMAGES, MAX_LENGTH, MAX_VISITS, UnphysicalCell, check_geometry
from test_ipi_protocol import ScriptedServer
from test_learn_server import start_learn_server

pytestmark = pytest.mark.timeout(120)

POTENTIAL = Path(__file__).resolve().parents[1] / "mtp_driver" / "data" / "Cu_zuo2020.mtp"  # trained Cu, cutoff 3.9 Å
# what each bad cell is refused with (the limit named in the message)
BAD_CELLS = {
    "nan": (np.nan, "cell vector a is not finite: [nan, 0.0, 0.0]"),
    "huge": (1e7, "cell vector a is [10000000.0, 0.0, 0.0], 1e+07 Å long, longer than the 1e+05 Å"),
    "flat": (1e-7, "the cell is flat: vector a (1e-07 Å long) spans a height of 1e-07 Å"),
}


def cu32():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.03, seed=1)
    return atoms


def with_bad_cell(kind: str):
    atoms = cu32()
    atoms.cell[0, 0] = BAD_CELLS[kind][0]
    return atoms


# ------------------------------------------------------------------ the check itself (no neighbour search)

def check(atoms, cutoff=5.0):
    check_geometry(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)


def test_real_structures_pass():
    big = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(32)  # 131072 atoms, as in benchmarks/bench_efs.py
    big.rattle(0.05, seed=0)
    check(big, 5.0)
    check(big, 8.0)
    slab = big.copy()
    slab.pbc = (True, True, False)
    check(slab)
    cluster = cu32()
    cluster.pbc = False
    cluster.cell[:] = 0.0
    check(cluster)
    for element in ("Cu", "Fe", "Mg", "Si"):  # one-atom primitive cells reach many images, but few
        check(bulk(element), 10.0)
    check(cu32()[:0])  # no atoms: nothing to search


@pytest.mark.parametrize("kind", BAD_CELLS)
def test_bad_cells_are_named_with_their_limit(kind):
    with pytest.raises(UnphysicalCell, match=re.escape(BAD_CELLS[kind][1])):
        check(with_bad_cell(kind))


def test_a_calculator_reusing_its_neighbour_pairs_still_refuses_a_bad_next_structure():
    """After a good call (its pairs kept for reuse), NaN or absurdly far positions are refused by a new search,
    not evaluated with the kept pairs; the calculator then still answers the good structure."""
    from mtp_driver import MTPCalculator

    calculator = MTPCalculator(Path(__file__).resolve().parents[1] / "mtp_driver" / "data" / "Cu_zuo2020.mtp",
                               species=["Cu"])
    atoms = cu32()
    types = calculator.types_of(atoms)
    good = calculator.evaluate(atoms.positions, atoms.cell.array, atoms.pbc, types)
    bad = atoms.positions.copy()
    bad[3] = np.nan
    with pytest.raises(UnphysicalCell, match=r"non-finite positions for atoms \[3\]"):
        calculator.evaluate(bad, atoms.cell.array, atoms.pbc, types)
    bad = atoms.positions.copy()
    bad[5, 2] = -3e5
    with pytest.raises(UnphysicalCell, match="atom 5 is at"):
        calculator.evaluate(bad, atoms.cell.array, atoms.pbc, types)
    again = calculator.evaluate(atoms.positions, atoms.cell.array, atoms.pbc, types)
    assert again.energy == pytest.approx(good.energy, abs=1e-10)
    assert np.abs(again.forces - good.forces).max() < 1e-11


def test_positions_non_finite_or_absurdly_far_and_elongated_or_collapsed_structures():
    atoms = cu32()
    atoms.positions[[3, 7]] = np.nan
    with pytest.raises(UnphysicalCell, match=r"non-finite positions for atoms \[3, 7\]"):
        check(atoms)
    atoms = cu32()
    atoms.positions[5, 2] = -3e5
    with pytest.raises(UnphysicalCell, match=rf"atom 5 is at .* Å, a coordinate beyond ±{re.escape(f'{MAX_LENGTH:.0e}')} Å"):
        check(atoms)
    sheet = cu32()
    sheet.cell[0, 0] = sheet.cell[1, 1] = 1700.0  # vesin's cell grid would have no cell along c: SIGFPE
    with pytest.raises(UnphysicalCell, match="too elongated for the neighbour list: a box of height a 1700 Å, height b 1700 Å, height c 7.22 Å .* "
                                             "thicker along height c"):
        check(sheet)
    collapsed = cu32().repeat(4)
    collapsed.set_cell(collapsed.cell * 0.05, scale_atoms=True)
    with pytest.raises(UnphysicalCell, match=rf"would examine ~.* pairs, more than {re.escape(f'{MAX_VISITS:.0e}')}"):
        check(collapsed)
    skewed = bulk("Cu")  # one atom, its cell sheared so that a height is tiny: too many images
    skewed.cell[2] += 3e4 * skewed.cell[0]
    with pytest.raises(UnphysicalCell, match=rf"the cell is flat: .* more than {re.escape(f'{MAX_IMAGES:.0e}')}"):
        check(skewed)


# ------------------------------------------------------------------ MTPCalculator (in a child process)

CALCULATOR_SCRIPT = """
import json, sys
import numpy as np
from ase.build import bulk
from mtp_driver import MTPCalculator
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
atoms.cell[0, 0] = {value}
atoms.calc = MTPCalculator({potential!r}, species=["Cu"])
try:
    atoms.get_potential_energy()
    print(json.dumps(dict(error=None)))
except Exception as exc:
    print(json.dumps(dict(error=type(exc).__name__, message=str(exc))))
"""


@pytest.mark.processes
@pytest.mark.parametrize("kind", BAD_CELLS)
def test_calculator_refuses_bad_cells(kind):
    value = {"nan": "np.nan", "huge": "1e7", "flat": "1e-7"}[kind]
    child = subprocess.run([sys.executable, "-c", CALCULATOR_SCRIPT.format(value=value, potential=str(POTENTIAL))],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, f"the calculator's process died ({child.returncode}): {child.stderr[-2000:]}"
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "UnphysicalCell" and BAD_CELLS[kind][1] in outcome["message"]


# ------------------------------------------------------------------ `mtp-driver serve` (a process, raw i-PI socket)

@pytest.mark.processes
@pytest.mark.parametrize("kind", BAD_CELLS)
def test_serve_stops_with_a_message_naming_the_request(tmp_path, kind):
    template = tmp_path / "cu32.extxyz"
    cu32().write(template)
    server = ScriptedServer()
    try:
        driver = subprocess.Popen([sys.executable, "-m", "mtp_driver.cli", "serve", "--potential", str(POTENTIAL),
                                   "--species", "Cu", "--template", str(template), *server.endpoint.cli_args()],
                                  stderr=subprocess.PIPE, text=True)
        server.accept()
        server.init()
        server.send(server.posdata(cu32()), GETFORCE)
        energy, forces, _, _ = server.forceready()
        assert np.isfinite(energy) and forces.shape == (32, 3)
        server.send(server.posdata(with_bad_cell(kind)), GETFORCE)
        _, err = driver.communicate(timeout=60)
        server.assert_closed_cleanly()
    finally:
        server.close()
    assert driver.returncode == 1, err[-3000:]
    if kind == "nan":  # the driver's own check of the wire data comes first
        assert "the server sent non-finite coordinates" in err
    else:
        assert "the potential failed on request 2: UnphysicalCell: " + BAD_CELLS[kind][1] in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ `mtp-driver learn-server` with two walkers

def test_learn_server_drops_only_the_bad_request_and_serves_the_other_walker(tmp_path):
    run_dir, sock = tmp_path / "run", tmp_path / f"l{uuid.uuid4().hex[:6]}.sock"
    server = start_learn_server(tmp_path, run_dir, sock, "--refit-iterations", "0")
    try:
        good, bad = LearnerClient(sock, connect_timeout=60), LearnerClient(sock, connect_timeout=60)

        def refused_everything(model: str) -> None:
            recorded = Journal(run_dir).events()
            for kind, (_, message) in BAD_CELLS.items():
                atoms = with_bad_cell(kind)
                with pytest.raises(RemoteLearnerError, match="UnphysicalStructure") as raised:
                    bad.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
                assert message in str(raised.value) and "no reference call was made" in str(raised.value), model
            foreign = cu32()
            foreign.numbers[:2] = 47  # Ag
            with pytest.raises(RemoteLearnerError, match=r"UntrainableStructure: the structure contains \['Ag'\], "
                                                         r"which the potential does not have \(its species are "
                                                         r"\['Cu'\]\)"):
                bad.compute(foreign.positions, foreign.cell.array, foreign.pbc, foreign.numbers)
            assert Journal(run_dir).events() == recorded, f"a refused request was recorded ({model})"
            assert server.poll() is None, f"the learner server died ({model})"

        refused_everything("before the first model")
        for seed in range(2):  # the first request of an untrained potential holds and learns
            atoms = cu32()
            atoms.rattle(0.05, seed=seed)
            energy, forces, _, extras = good.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
            assert np.isfinite(energy) and forces.shape == (32, 3) and extras["model_version"] != "learner:0"
            if seed == 0:
                refused_everything("with a model")
        good.close()
        bad.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    finally:
        server.kill()
        server.wait()
    log = Path(f"{run_dir}.log").read_text()
    assert log.count("UnphysicalStructure: ") == 6 and log.count("UntrainableStructure: ") == 2
    assert "Traceback" not in log
    summary = json.loads(server.stdout.read().strip().splitlines()[-1])
    assert summary["steps"] == 2  # refused requests are not steps


# ------------------------------------------------------------------ the learner: untrainable requests

def ask(learner, atoms):
    return learner.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)


def test_untrainable_requests_cost_nothing_and_a_restart_works(tmp_path):
    run_dir = tmp_path / "run"
    settings = LearnSettings(species=("Cu",), refit_iterations=0)
    learner = Learner(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), run_dir, settings)
    foreign = cu32()
    foreign.numbers[5] = 47  # Ag: EMT computes it, and its stored result used to fail every restart
    with pytest.raises(UntrainableStructure, match=r"contains \['Ag'\], which the potential does not have "
                                                   r"\(its species are \['Cu'\]\)"):
        ask(learner, foreign)
    foreign.numbers[[0, 1]] = [0, 40]
    with pytest.raises(UntrainableStructure, match=r"contains \['Ag', 'Z=0', 'Zr'\]"):
        ask(learner, foreign)
    with pytest.raises(UntrainableStructure, match="has no atoms"):
        learner.compute(np.zeros((0, 3)), np.eye(3) * 10, [True] * 3, np.zeros(0, dtype=int))
    atoms = cu32()
    with pytest.raises(UntrainableStructure, match=r"positions of shape \(32, 3\) and atomic numbers of shape \(31,\)"):
        learner.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers[:31])
    assert learner.step == 0
    assert not any(event["event"] in ("selected", "hold", "reference") for event in learner.journal.events())
    assert not (run_dir / "references").exists() or not any((run_dir / "references").iterdir())
    learner.close(final_refit=False)

    restarted = Learner(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), run_dir, settings)
    energy, forces, _, _ = ask(restarted, cu32())
    assert np.isfinite(energy) and forces.shape == (32, 3) and len(restarted.keys) == 1
    restarted.close(final_refit=False)
