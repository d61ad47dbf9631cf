"""The on-the-fly learner behind the real i-PI and ASE's SocketIOCalculator, EMT as the reference."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from mtp_driver.demo import run_demo
from mtp_driver.io.mtp_file import write_mtp
from mtp_driver.ipi import PotentialSpec, socket_calculator
from mtp_driver.learn.calls import LearningStopped
from mtp_driver.learn.journal import Journal
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.learn.reference import Reference
from mtp_driver.mtp.basis import untrained_mtp

pytestmark = pytest.mark.timeout(600)
LEARNER = "mtp_driver.learn.learner:learning_potential"


def answered_versions(path) -> list[int]:
    """The model version in the extras of every i-PI step, in step order."""
    return [int(v) for v in re.findall(r"^learner:(\d+)$", path.read_text(), flags=re.M)]


@pytest.mark.processes
def test_demo_learns_md_from_an_untrained_potential(tmp_path):
    steps = 300
    summary = run_demo(tmp_path, steps=steps, repeat=2, refit_iterations=60)
    assert summary["steps"] == steps + 1  # i-PI's initial force call and one per step
    events = Journal(tmp_path / "learning").events()
    selected_steps = [event["step"] for event in events if event["event"] == "selected"]
    assert len(selected_steps) == summary["reference_calls"] > 0
    after_warm_up = [step for step in selected_steps if step > 100]
    assert len(after_warm_up) < 0.1 * (steps + 1 - 100)
    assert summary["force_rmse"] < 0.02  # eV/Å, final model vs EMT on fresh 900 K snapshots
    # every step was answered by the newest model announced at or before it (request = i-PI step + 1)
    swaps = [(event["step"], event["version"]) for event in events
             if event["event"] == "swap" and event["reason"] != "final refit"]  # that one follows the last step
    versions = answered_versions(tmp_path / "md.version_0")
    assert len(versions) == steps + 1
    for step, version in enumerate(versions):
        assert version == max(v for s, v in swaps if s <= step + 1)
    for output in ("training.cfg", "training.extxyz", "learning/final.mtp", "learning/journal.jsonl"):
        assert (tmp_path / output).stat().st_size > 0
    # the run's report: counts that match the journal, and the plots
    import subprocess
    import sys

    report = subprocess.run([sys.executable, "-m", "mtp_driver.cli", "learn-report", str(tmp_path / "learning"),
                             "--plot", str(tmp_path / "learning.png"), "--window", "200"],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert f"{steps + 1} requests from 1 walker(s), {summary['reference_calls']} reference calls" in report.stdout
    assert "converged" in report.stdout and (tmp_path / "learning.png").stat().st_size > 10_000


def test_learning_relaxation_through_ase_socketio(tmp_path):
    """BFGS of a Cu cell with a vacancy through SocketIOCalculator, the learner as the driver."""
    start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    del start[0]
    start.rattle(0.1, seed=3)
    potential = tmp_path / "untrained.mtp"
    write_mtp(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), potential)
    kwargs = dict(potential=str(potential), run_dir=str(tmp_path / "run"), species="Cu", refit_iterations=0)
    atoms = start.copy()
    with socket_calculator(PotentialSpec(calculator=LEARNER, calculator_kwargs=kwargs)) as calc:
        atoms.calc = calc
        assert BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
        learned = atoms.get_potential_energy()
    reference = start.copy()
    reference.calc = EMT()
    BFGS(reference, logfile=None).run(fmax=0.05, steps=200)
    assert learned == pytest.approx(reference.get_potential_energy(), abs=0.05)
    atoms.calc = EMT()
    assert np.abs(atoms.get_forces()).max() < 0.1  # a minimum of EMT too, not only of the MTP
    calls = [event for event in Journal(tmp_path / "run").events() if event["event"] == "reference"]
    assert 0 < len(calls) < 40


def test_failing_reference_is_quarantined_and_never_trained_on(tmp_path):
    """A reference failing on 30% of structures (always the same ones): failed calls are quarantined
    and the run goes on, until a held structure fails and the retrained MTP still extrapolates on
    it; then the learner stops rather than answer with an untrusted model."""
    flaky = Reference(calculator="reference_calculators:FlakyEMT", kwargs=dict(failure_rate=0.3))
    # holds fit the linear coefficients only: this sequence then meets failures on candidates before a failure
    # on a held one that the retrained MTP still extrapolates on
    settings = LearnSettings(species=("Cu",), reference=flaky, refit_iterations=0, hold_fit_iterations=0,
                             failure_budget=1000)
    learner = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, settings)
    rng = np.random.default_rng(2)
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    answered = 0
    with pytest.raises(LearningStopped, match="the reference failed on the held structure .* still extrapolates"):
        for k in range(40):
            atoms = base.copy()
            atoms.positions += rng.normal(scale=0.03 + 0.004 * k, size=atoms.positions.shape)
            energy, forces, virial, extras = learner.compute(atoms.positions, atoms.cell.array, atoms.pbc,
                                                             atoms.numbers)
            assert np.isfinite(energy) and np.isfinite(forces).all() and set(extras) >= {"mtp_grade", "model_version"}
            answered += 1
    learner.close(final_refit=False)
    quarantined = learner.journal.quarantined()
    assert answered > 5 and len(quarantined) > 1  # earlier failures did not stop the run
    assert atoms.positions.tobytes() in {held.positions.tobytes() for held in quarantined.values()}
    trained_positions = {atoms.positions.tobytes() for atoms in learner.training}
    assert not trained_positions & {atoms.positions.tobytes() for atoms in quarantined.values()}
    stop = [event for event in learner.journal.events() if event["event"] == "stop"][-1]
    assert stop["summary"]["quarantined"] == len(quarantined)
    assert json.loads((tmp_path / "settings.json").read_text())["reference"]["kwargs"] == {"failure_rate": 0.3}


def test_reference_failing_on_the_first_request_stops_with_a_message(tmp_path):
    """Nothing learnt yet and the first held structure fails: a clear stop, not a fit of nothing."""
    failing = Reference(calculator="reference_calculators:FlakyEMT", kwargs=dict(failure_rate=1.0))
    settings = LearnSettings(species=("Cu",), reference=failing, retries=0, refit_iterations=0)
    learner = Learner(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), tmp_path, settings)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    with pytest.raises(LearningStopped, match="request 1: the reference failed on the held structure"):
        learner.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    learner.close(final_refit=False)
    assert len(learner.journal.quarantined()) == 1 and not learner.training


@pytest.mark.processes
def test_learn_command_with_a_protocol_input(tmp_path):
    """`mtp-driver learn` (the user's command) against i-PI running protocols/nvt.xml, shortened."""
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    from mtp_driver.ipi import Endpoint, IPIProcess

    protocols = Path(__file__).resolve().parents[1] / "protocols"
    (tmp_path / "structures").mkdir()
    (tmp_path / "structures" / "cu108.extxyz").write_text((protocols / "structures" / "cu108.extxyz").read_text())
    potential = tmp_path / "untrained.mtp"
    write_mtp(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), potential)
    endpoint = Endpoint(unix=f"learn_{uuid.uuid4().hex[:8]}")
    with IPIProcess((protocols / "nvt.xml").read_text(), tmp_path, endpoint, total_steps=30) as ipi:
        learn = subprocess.run(
            [sys.executable, "-m", "mtp_driver.cli", "learn", str(potential), "--species", "Cu",
             "--run-dir", str(tmp_path / "run"), "--template", str(tmp_path / "structures" / "cu108.extxyz"),
             "--unix", endpoint.unix, "--refit-iterations", "20"],
            capture_output=True, text=True, timeout=300)
        assert learn.returncode == 0, learn.stderr[-3000:]
        assert ipi.wait(60) == 0
    summary = json.loads(learn.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 31 and 0 < summary["reference_calls"] <= 31
    assert (tmp_path / "run" / "final.mtp").exists()


# PIMD, PILE-L (tau 50 fs), 1 fs; here 4 beads, 20 steps at 600 K
PIMD = Path(__file__).resolve().parents[1] / "protocols" / "pimd_check.xml"
PIMD_SETTINGS = dict(total_steps=20, seed=27, temperature=600, nbeads=4, structure="init.extxyz", prefix="out")


@pytest.mark.processes
def test_pimd_beads_on_two_drivers_share_one_learner(tmp_path):
    """4 beads served by 2 driver threads with one learner: every bead structure is computed at most
    once, both drivers keep serving through the retrainings, and i-PI finishes."""
    import uuid
    from collections import Counter

    from mtp_driver.ipi import DriverThread, Endpoint, IPIProcess, make_driver

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.write(tmp_path / "init.extxyz")
    learner = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path / "run",
                      LearnSettings(species=("Cu",), refit_iterations=0))
    endpoint = Endpoint(unix=f"pimd_{uuid.uuid4().hex[:8]}")
    with IPIProcess(PIMD, tmp_path, endpoint, **PIMD_SETTINGS) as ipi:
        drivers = [DriverThread(make_driver(learner, atoms), endpoint) for _ in range(2)]
        for driver in drivers:
            driver.start()
        assert ipi.wait(300) == 0
        served = [driver.result(60).requests for driver in drivers]
    learner.close(final_refit=False)
    assert sum(served) == 4 * 21 and min(served) > 0
    events = learner.journal.events()
    computed = Counter(event["key"] for event in events if event["event"] == "reference")
    assert computed and max(computed.values()) == 1
    holds = [event for event in events if event["event"] == "hold"]
    assert len(holds) >= 1 and learner.summary()["reference_calls"] == len(computed)


def run_batched_pimd(workdir, learner, batch_size):
    """PIMD of 4 beads, 6 steps, served by one driver of `learner` with i-PI's batch_size; the potentials."""
    import uuid

    import numpy as np

    from mtp_driver.ipi import DriverThread, Endpoint, IPIProcess, make_driver

    workdir.mkdir()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.write(workdir / "init.extxyz")
    endpoint = Endpoint(unix=f"bpimd_{uuid.uuid4().hex[:8]}")
    settings = dict(PIMD_SETTINGS, total_steps=6, batch_size=batch_size)
    with IPIProcess(PIMD, workdir, endpoint, **settings) as ipi:
        driver = DriverThread(make_driver(learner, atoms), endpoint)
        driver.start()
        assert ipi.wait(300) == 0, ipi.log()[-2000:]
        assert driver.result(60).requests == 4 * 7
    return np.loadtxt(workdir / "out.props", ndmin=2)[:, 1]


@pytest.mark.processes
def test_batched_pimd_learns_once_per_batch_and_answers_as_unbatched(tmp_path):
    """The beads of a batched request are learnt in one hold per batch; with what that run learnt, a learner
    answers batched requests exactly as unbatched ones (the same trajectory to round-off)."""
    import numpy as np

    scratch = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path / "scratch",
                      LearnSettings(species=("Cu",), refit_iterations=0))
    run_batched_pimd(tmp_path / "learning", scratch, batch_size=4)
    scratch.close(final_refit=False)
    holds = [event["step"] for event in scratch.journal.events() if event["event"] == "hold"]
    # the 4 beads of the first request are one structure (computed once): later batches end at steps 5, 9, ...
    assert len(holds) >= 2 and all((step - 1) % 4 == 0 for step in holds) and len(set(holds)) == len(holds)
    potentials = {}
    for batch_size in (1, 4):
        learner = Learner(scratch.mtp, tmp_path / f"run{batch_size}", LearnSettings(
            species=("Cu",), refit_iterations=0, threshold_break=1e9), training=scratch.training)
        potentials[batch_size] = run_batched_pimd(tmp_path / f"pimd{batch_size}", learner, batch_size)
        learner.close(final_refit=False)
    np.testing.assert_allclose(potentials[4], potentials[1], rtol=1e-12, atol=1e-12)
