"""The learner's safety rails and restart behaviour, calling it directly (no socket)."""

import numpy as np
import pytest
from ase.build import bulk

from mtp_driver.learn.learner import Learner, UnphysicalStructure
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp

pytestmark = pytest.mark.timeout(300)


def untrained():
    return untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"])


def rattled(seed, scale=0.05):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(seed).normal(scale=scale, size=atoms.positions.shape)
    return atoms


def ask(learner, atoms):
    return learner.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)


def reference_calls(learner):
    return sum(event["event"] == "reference" for event in learner.journal.events())


def test_close_contact_is_unphysical_and_costs_no_reference_call(tmp_path):
    learner = Learner(untrained(), tmp_path, LearnSettings(refit_iterations=0))
    atoms = rattled(0)
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.0, 0.0]
    with pytest.raises(UnphysicalStructure, match="0.500 Å apart"):
        ask(learner, atoms)  # nothing learnt yet
    ask(learner, rattled(1))
    with pytest.raises(UnphysicalStructure, match="left physical space"):
        ask(learner, atoms)  # with a model
    assert reference_calls(learner) == 1


def test_cooldown_and_hourly_cap_answer_without_learning(tmp_path):
    learner = Learner(untrained(), tmp_path / "cap", LearnSettings(refit_iterations=0, max_calls_per_hour=2))
    for seed in range(6):
        ask(learner, rattled(seed, scale=0.03 + 0.015 * seed))
    assert reference_calls(learner) <= 2
    learner = Learner(untrained(), tmp_path / "cool", LearnSettings(refit_iterations=0, cooldown_steps=4))
    holds = []
    for seed in range(9):
        before = reference_calls(learner)
        ask(learner, rattled(seed, scale=0.03 + 0.015 * seed))
        if reference_calls(learner) > before:
            holds.append(learner.step)
    assert holds[0] == 1 and all(b - a >= 4 for a, b in zip(holds, holds[1:]))


def test_restart_keeps_the_data_and_reports_changed_settings(tmp_path, capsys):
    learner = Learner(untrained(), tmp_path, LearnSettings(refit_iterations=0))
    for seed in range(3):
        ask(learner, rattled(seed, scale=0.05 + 0.03 * seed))
    learner.close(final_refit=False)
    calls = reference_calls(learner)
    again = Learner(untrained(), tmp_path, LearnSettings(refit_iterations=0, threshold_break=5.0))
    assert "threshold_break: 10.0 -> 5.0" in capsys.readouterr().err
    assert len(again.training) == calls and again.mtp is not None and again.version > learner.version
    energy, forces, _, extras = ask(again, rattled(0, scale=0.05))  # a structure it has seen: no new call
    assert reference_calls(again) == calls and extras["mtp_grade"] <= 1.0 + 1e-6


def test_answer_with_the_reference_result(tmp_path):
    from ase.calculators.emt import EMT

    learner = Learner(untrained(), tmp_path, LearnSettings(refit_iterations=0, answer_with="reference"))
    atoms = rattled(5, scale=0.1)
    energy, forces, _, _ = ask(learner, atoms)
    atoms.calc = EMT()
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-12)
