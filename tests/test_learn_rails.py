"""The learner's safety rails and restart behaviour, calling it directly (no socket)."""

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from ase.build import bulk

from mtp_driver.io.lock import InUseError
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
    with pytest.raises(UnphysicalStructure, match="0.5000 Å apart"):
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


@pytest.mark.processes
def test_one_learner_per_run_directory(tmp_path):
    """A second learner on a busy run directory is refused (two would interleave one journal); the lock
    goes with its process, so a run killed with SIGKILL restarts without clean-up."""
    def start():
        return Learner(untrained(), tmp_path, LearnSettings(refit_iterations=0))

    first = start()
    with pytest.raises(InUseError, match=f"in use by another learner \\(process {os.getpid()} "):
        start()
    first.close(final_refit=False)
    start().close(final_refit=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mtp_driver.io.lock import hold_exclusive; "
         "lock = hold_exclusive(sys.argv[1] + '/lock', 'busy'); print('held', flush=True); time.sleep(120)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InUseError, match=f"process {holder.pid} "):
            start()
    finally:
        holder.kill()
        holder.wait()
    start().close(final_refit=False)


def test_answer_with_the_reference_result(tmp_path):
    from ase.calculators.emt import EMT

    learner = Learner(untrained(), tmp_path, LearnSettings(refit_iterations=0, answer_with="reference"))
    atoms = rattled(5, scale=0.1)
    energy, forces, _, _ = ask(learner, atoms)
    atoms.calc = EMT()
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-12)


def trained_start(tmp_path):
    """A level-8 potential fitted to a few EMT structures, and those structures: a fixed point of
    the learner's linear refit, so a learner given both starts from exactly this model."""
    from mtp_driver.fit import TrainOptions, train
    from mtp_driver.learn.reference import Reference

    training = [Reference().compute(rattled(seed, scale=0.05)) for seed in range(6)]
    fitted = train(untrained(), training, species=["Cu"], options=TrainOptions(max_iter=30), progress=False).mtp
    return train(fitted, training, species=["Cu"], options=TrainOptions(max_iter=0), progress=False).mtp, training


def unlike_the_training_data(kind, seed):
    """Structures of different families: learning one does not make another interpolative."""
    if kind == "expanded":
        atoms = rattled(seed, scale=0.05)
        atoms.set_cell(atoms.cell * 1.06, scale_atoms=True)
    elif kind == "compressed":
        atoms = rattled(seed, scale=0.05)
        atoms.set_cell(atoms.cell * 0.95, scale_atoms=True)
    elif kind == "bcc":
        atoms = bulk("Cu", "bcc", a=2.88, cubic=True).repeat((2, 2, 4))
    elif kind == "surface":
        atoms = rattled(seed, scale=0.05)
        atoms.cell[2] *= 2.0
    else:
        atoms = bulk("Cu", "sc", a=2.2).repeat(3)
    atoms.rattle(0.02, seed=seed)
    return atoms


def test_observe_mode_calls_nothing_and_counts_what_a_real_run_calls(tmp_path):
    mtp, training = trained_start(tmp_path)
    # deterministic requests: copies near the training data between structures of other families
    families = ("expanded", "bcc", "surface", "compressed", "simple cubic")
    requests = [rattled(100 + k, scale=0.05) if k % 2 else unlike_the_training_data(families[k // 2], k)
                for k in range(10)]
    counts = {}
    for mode in ("observe", "learn"):
        settings = LearnSettings(refit_iterations=0, hold_fit_iterations=0, cooldown_steps=2, observe=mode == "observe")
        learner = Learner(mtp, tmp_path / mode, settings, training=training)
        for atoms in requests:
            ask(learner, atoms)
        learner.close(final_refit=False)
        counts[mode] = (learner.summary(), reference_calls(learner))
    observe, real = counts["observe"], counts["learn"]
    assert observe[1] == 0 and observe[0]["retrainings"] == 0
    assert observe[0]["would_hold"] == real[0]["retrainings"] == len(families)


def test_audit_calls_feed_the_calibration(tmp_path):
    from mtp_driver.learn.report import calibration, calibration_pairs

    mtp, training = trained_start(tmp_path)
    learner = Learner(mtp, tmp_path, LearnSettings(refit_iterations=0, audit_every=3), training=training)
    for k in range(9):  # smaller than the training rattle: grades stay near 1, far from threshold_save 2
        ask(learner, rattled(200 + k, scale=0.03))
    learner.close(final_refit=False)
    audits = [event for event in learner.journal.events() if event["event"] == "audit"]
    assert len(audits) == 3 and all(event["grade"] <= 2.0 for event in audits)
    pairs = calibration_pairs(tmp_path)
    assert len(pairs) == 3 and all(error < 0.2 for _, error in pairs)
    table, suggested = calibration(pairs, target_force_rmse=1.0)
    assert sum(row["count"] for row in table) == 3 and suggested == max(grade for grade, _ in pairs)
    assert calibration(pairs, target_force_rmse=1e-9)[1] is None


def test_refits_keep_the_initial_training_set(tmp_path):
    """The background refit (its own process) sees the structures the run started from."""
    import json

    from mtp_driver.io.mtp_file import read_mtp, write_mtp
    from mtp_driver.learn.refit import refit

    mtp, training = trained_start(tmp_path)
    learner = Learner(mtp, tmp_path / "run", LearnSettings(refit_iterations=0), training=training)
    learner.close(final_refit=False)
    restarted = Learner(mtp, tmp_path / "run", LearnSettings(refit_iterations=0))
    assert len(restarted.training) == len(training)
    np.testing.assert_array_equal(restarted.training[0].get_forces(), training[0].get_forces())
    write_mtp(mtp, tmp_path / "start.mtp")
    (tmp_path / "keys.json").write_text(json.dumps([]))
    refit(tmp_path / "run", tmp_path / "start.mtp", tmp_path / "keys.json", tmp_path / "out.mtp", 3, 0, ["Cu"])
    assert read_mtp(tmp_path / "out.mtp").is_trained


def test_holds_fit_all_parameters_as_the_data_grows(tmp_path):
    """The answering model is a good fit to the data it has: holds refit the radial functions too, so no
    background refit is needed to get close to a full fit of the same data."""
    from mtp_driver.fit import TrainOptions, train

    losses = {}
    for iterations in (0, 100):  # 0: the linear coefficients only, as before issue 14
        settings = LearnSettings(refit_iterations=0, hold_fit_iterations=iterations, max_selected=1)
        learner = Learner(untrained(), tmp_path / str(iterations), settings)
        for seed in range(8):
            ask(learner, rattled(seed, scale=0.02 + 0.02 * seed))
        fits = [event for event in learner.journal.events() if event["event"] == "hold_fit"]
        assert len(fits) == (1 if iterations == 0 else learner.summary()["retrainings"]) >= 1
        losses[iterations] = train(learner.mtp, learner.training, species=["Cu"], options=TrainOptions(max_iter=0),
                                   progress=False).loss
        learner.close(final_refit=False)
    full = train(untrained(), learner.training, species=["Cu"], options=TrainOptions(max_iter=300), progress=False)
    assert losses[0] > 5.0 * full.loss  # measured: 65x (holds fitting all parameters: 1.07x)
    assert losses[100] < 2.0 * full.loss


def test_the_candidate_pool_is_bounded_by_d_optimal_pruning(tmp_path):
    learner = Learner(untrained(), tmp_path, LearnSettings(refit_iterations=0, threshold_save=1.0,
                                                           threshold_break=1e9, max_candidates=3, pool_hold=False))
    ask(learner, rattled(0))  # the first model; later requests only become candidates
    for seed in range(1, 12):
        ask(learner, rattled(seed, scale=0.05))
        assert len(learner.candidates) < 2 * 3
    assert len(learner.candidates) >= 3
    learner.close(final_refit=False)


def test_a_full_pool_of_candidates_is_learnt_at_once(tmp_path):
    """Structures above threshold_save and none above threshold_break: new territory no single grade flags. A full
    pool is learnt like a hold: its D-optimal max_selected computed, all parameters fitted, the pool emptied."""
    settings = LearnSettings(refit_iterations=0, threshold_save=1.0, threshold_break=1e9, max_candidates=3,
                             max_selected=2)
    learner = Learner(untrained(), tmp_path, settings)
    ask(learner, rattled(0))  # the first model; later requests only become candidates
    version = learner.version
    for seed in (1, 2):
        ask(learner, rattled(seed, scale=0.05))
    assert len(learner.candidates) == 2 and reference_calls(learner) == 1
    answer = ask(learner, rattled(3, scale=0.05))  # fills the pool
    events = learner.journal.events()
    holds = [(event["reason"], event["selected"], event["candidates"]) for event in events if event["event"] == "hold"]
    assert holds == [("grade", 1, 0), ("pool", 2, 3)]
    assert reference_calls(learner) == 3 and learner.candidates == [] and learner.version == version + 1
    assert [event["reason"] for event in events if event["event"] == "hold_fit"] == ["hold", "pool"]
    assert [event["reason"] for event in events if event["event"] == "resume"] == ["grade", "pool"]
    assert answer[3]["held_seconds"] > 0 and learner.summary()["retrainings"] == 2
    assert answer[3]["model_version"] == f"learner:{learner.version}"  # the held request: the new model answers
    learner.close(final_refit=False)


# (force eV/Å, energy meV/atom, x the model's own training RMSE): every audit is above one, or none is
@pytest.mark.parametrize("bounds, above", [((1e-6, 0, 0), 2), ((0, 1e-6, 0), 2), ((0, 0, 1e-6), 2),
                                           ((1e3, 1e6, 1e6), 0), ((0, 0, 0), 0)])
def test_an_audit_above_a_bound_refits_all_parameters(tmp_path, bounds, above):
    from mtp_driver.learn.report import format_summary, learning_summary

    mtp, training = trained_start(tmp_path)
    force, energy, ratio = bounds
    settings = LearnSettings(refit_iterations=0, audit_every=2, audit_force_bound=force, audit_energy_bound=energy,
                             audit_error_ratio=ratio)
    learner = Learner(mtp, tmp_path / "run", settings, training=training)
    for k in range(4):
        ask(learner, rattled(300 + k, scale=0.03))
    learner.close(final_refit=False)
    events = learner.journal.events()
    audits = [event for event in events if event["event"] == "audit"]
    assert len(audits) == 2 and all(event["training_force_rmse"] > 0 for event in audits)
    assert sum(event["event"] == "swap" and event["reason"] == "audit" for event in events) == above
    assert sum(event["event"] == "hold_fit" for event in events) == above
    assert len(learner.held_seconds) == above
    summary = learning_summary(tmp_path / "run")
    assert (summary["audits"], summary["audits_above_bound"], summary["hold_fits"]) == (2, above, above)
    assert f"at 2 audit calls: median {summary['audit_force_rmse_median']:.4f} eV/Å" in format_summary(summary)
    assert f"at the audit calls: median {summary['audit_energy_error_median_mev']:.3f} meV/atom" \
        in format_summary(summary)


def test_an_audit_above_its_bound_learns_the_pooled_candidates_too(tmp_path):
    """A refit on the same data cannot correct an error on structures it has not seen: the audit computes the
    D-optimal pooled candidates as a hold would."""
    mtp, training = trained_start(tmp_path)
    settings = LearnSettings(refit_iterations=0, audit_every=4, threshold_save=1.001, threshold_break=1e9,
                             max_selected=3, audit_force_bound=1e-9)
    learner = Learner(mtp, tmp_path / "run", settings, training=training)
    for seed in range(3):
        ask(learner, rattled(400 + seed, scale=0.08))  # graded above threshold_save: candidates only
    assert len(learner.candidates) == 3 and reference_calls(learner) == 0
    version = learner.version
    answer = ask(learner, training[0])  # within the data: audited, and its error is above the bound
    hold = [event for event in learner.journal.events() if event["event"] == "hold"]
    assert [(event["reason"], event["selected"], event["candidates"]) for event in hold] == [("audit", 2, 3)]
    assert reference_calls(learner) == 3 and len(learner.training) == len(training) + 3
    assert learner.candidates == [] and learner.version == version + 1
    assert answer[3]["model_version"] == f"learner:{learner.version}"  # the audited request: the new model answers
    learner.close(final_refit=False)


def learner_with_linear_holds(run_dir):
    """Twelve results learnt in holds that fit the linear coefficients only (the radial functions of the first
    structure): an answering model a fit of all parameters can beat; half the results are held out at close."""
    settings = LearnSettings(refit_iterations=0, hold_fit_iterations=0, max_selected=1, validation_share=0.5)
    learner = Learner(untrained(), run_dir, settings)
    for seed in range(12):
        ask(learner, rattled(seed, scale=0.02 + 0.02 * seed))
    learner.settings = LearnSettings(refit_iterations=200, max_selected=1, validation_share=0.5)
    return learner


def test_the_final_fit_is_validated_then_fitted_to_all_the_data(tmp_path):
    from mtp_driver.fit import TrainOptions, evaluate_on, train
    from mtp_driver.io.mtp_file import read_mtp
    from mtp_driver.learn.learner import VALIDATION_PATIENCE
    from mtp_driver.learn.report import format_summary, learning_summary

    learner = learner_with_linear_holds(tmp_path)
    answering = learner.mtp
    learner.close()
    [event] = [event for event in learner.journal.events() if event["event"] == "validated"]
    results = len(learner.keys)
    assert event["validation"] == results // 2 and event["training"] == results - results // 2
    assert 1 <= event["iterations"] <= 200 and event["kept"] == "refit"
    validation = learner.training[1::2]  # every 2nd result, in journal order
    final = read_mtp(tmp_path / "final.mtp")
    losses = [evaluate_on(mtp, validation, ["Cu"]).loss for mtp in (final, answering)]
    assert event["refit"]["loss"] == pytest.approx(losses[0]) and event["answering"]["loss"] == pytest.approx(losses[1])
    assert losses[0] <= losses[1]
    # the held-out results are data too: the final model was fitted to them after the validation
    assert event["refit"]["loss"] < event["unseen"]["loss"]
    # unseen means unseen: the held-out pass is a fit of the starting potential (not of the answering model, which
    # learnt the held-out results in its holds) to the other results
    options = TrainOptions(max_iter=200, seed=learner.settings.seed, patience=VALIDATION_PATIENCE)
    held_out_fit = train(learner.initial, learner.training[0::2], validation, species=["Cu"], options=options,
                         progress=False)
    assert event["unseen"]["loss"] == pytest.approx(evaluate_on(held_out_fit.mtp, validation, ["Cu"]).loss, rel=1e-9)
    assert f"on the {results // 2} held out" in format_summary(learning_summary(tmp_path))


def test_the_final_fit_never_returns_a_model_worse_on_the_held_out_results_than_the_answering_one(tmp_path):
    from mtp_driver.fit import TrainOptions, train
    from mtp_driver.io.mtp_file import read_mtp

    learner = learner_with_linear_holds(tmp_path)
    held_out = learner.training[1::2]
    # an answering model fitted to the held-out results alone, against a final refit of 5 iterations from scratch
    fitted = train(learner.mtp, held_out, species=["Cu"], options=TrainOptions(max_iter=100), progress=False).mtp
    learner._swap_in(fitted, "a model that has learnt the held-out results by heart")
    learner.settings = replace(learner.settings, refit_iterations=5)
    learner.close()
    [event] = [event for event in learner.journal.events() if event["event"] == "validated"]
    assert event["kept"] == "answering model" and event["answering"]["loss"] < event["refit"]["loss"]
    assert np.array_equal(read_mtp(tmp_path / "final.mtp").moment_coeffs, fitted.moment_coeffs)


def test_a_background_refit_is_swapped_in_at_a_request_boundary_when_better(tmp_path):
    settings = LearnSettings(refit_iterations=50, background_refit=True, hold_fit_iterations=0, max_selected=1)
    learner = Learner(untrained(), tmp_path, settings)
    for seed in range(4):
        ask(learner, rattled(seed, scale=0.02 + 0.02 * seed))
    job = learner.refit
    assert job is not None and job.structures == len(learner.training)  # started on the newest data
    job.process.wait(timeout=240)
    ask(learner, rattled(0, scale=0.02))  # a request boundary (a structure it has: no hold)
    events = learner.journal.events()
    [finished] = [event for event in events if event["event"] == "refit_finished"]
    assert finished["accepted"] and finished["loss_refit"] < finished["loss_current"]  # linear-only holds: beaten
    assert events[-1]["event"] == "swap" and events[-1]["reason"] == "refit"
    learner.close(final_refit=False)
    assert LearnSettings().background_refit is False  # off by default: holds fit all parameters themselves
