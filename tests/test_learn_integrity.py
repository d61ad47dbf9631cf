"""Nothing wrong enters training: results must belong to their structure, one level of theory per
training set, and readers of a live run directory never change it."""

import json
import os
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
from ase.build import bulk

from mtp_driver.cli import main
from mtp_driver.learn.calls import ReferenceCalls
from mtp_driver.learn.journal import Journal, JournalReader, JournalWarning
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.reference import Reference, ReferenceFailure
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.learn.theory import ReferenceChanged
from mtp_driver.mtp.basis import untrained_mtp

pytestmark = pytest.mark.timeout(300)


def rattled(seed, scale=0.05, symbols="Cu"):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    if symbols != "Cu":
        atoms.symbols[::2] = symbols
    atoms.positions += np.random.default_rng(seed).normal(scale=scale, size=atoms.positions.shape)
    return atoms


def command_reference(tmp_path, change: str) -> Reference:
    """A command that computes EMT right, then writes the result of another structure: `change` edits `atoms`."""
    script = tmp_path / "reference.py"
    script.write_text(textwrap.dedent(f"""
        import ase.io
        from ase.calculators.emt import EMT
        from ase.optimize import BFGS
        atoms = ase.io.read("input.extxyz")
        atoms.calc = EMT()
        {change}
        atoms.get_forces()
        ase.io.write("output.extxyz", atoms)
    """))
    return Reference(command=f"{sys.executable} {script}")


# ---------------------------------------------------------------- a result belongs to its structure

@pytest.mark.processes
@pytest.mark.parametrize("change, message", [
    ("atoms = atoms[list(range(1, len(atoms))) + [0]]; atoms.calc = EMT()", "another element, first atom 0"),
    ("atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)", "another cell"),
    ("BFGS(atoms, logfile=None).run(fmax=0.05, steps=5)", "the last image of a relaxation"),
    ("pass", None),
    ("atoms.wrap(); atoms.positions[0] += atoms.cell[1]", None),  # the same atoms, other lattice images
])
def test_a_command_result_of_another_structure_is_a_failed_call(tmp_path, change, message):
    atoms = rattled(1, symbols="Ag")
    atoms.positions[0] -= atoms.cell[0] * 0.3  # outside the cell: the output may wrap it
    reference = command_reference(tmp_path, change)
    if message is None:
        result = reference.compute(atoms, tmp_path)
        np.testing.assert_array_equal(result.positions, atoms.positions)  # stored with the input's positions
        return
    with pytest.raises(ReferenceFailure, match=message):
        reference.compute(atoms, tmp_path)
    calls = ReferenceCalls(reference, Journal(tmp_path / "run"), retries=1)
    assert calls.compute([atoms]) == []
    assert len(calls.journal.quarantined()) == 1 and not calls.journal.completed()


def test_an_in_process_calculator_that_moves_the_atoms_is_refused():
    with pytest.raises(ReferenceFailure, match="atoms elsewhere"):
        Reference(calculator="reference_calculators:RelaxingEMT").compute(rattled(2))


def test_a_result_an_executor_worker_computed_for_another_structure_is_refused_and_not_kept(tmp_path):
    """A worker that checks its result against what it received cannot see that it received another structure
    (another mtp-driver version there): the learner checks again, removes the file the worker stored and quarantines."""
    run = tmp_path / "run"
    calls = ReferenceCalls(Reference(), Journal(run), retries=1, executor="reference_calculators:SkewedExecutor")
    try:
        assert calls.compute([rattled(3)]) == []
    finally:
        calls.close()
    (reasons,) = [event["reasons"] for event in JournalReader(run).events() if event["event"] == "quarantined"]
    assert len(reasons) == 2 and all("not the structure asked for" in reason and "atoms elsewhere" in reason
                                     for reason in reasons), reasons
    assert not list((run / "references").glob("*.json")) and not JournalReader(run).completed()


def test_the_timeout_and_the_tolerance_are_not_part_of_the_level_of_theory():
    assert Reference(timeout=10, match_tolerance=1e-3).fingerprint() == Reference().fingerprint()
    assert Reference(kwargs={"asap_cutoff": True}).fingerprint() != Reference().fingerprint()


# ---------------------------------------------------------------- one level of theory per training set

SETTINGS = dict(refit_iterations=0, max_selected=2)


def learn_a_little(run_dir, reference, requests=3, **options):
    learner = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), run_dir,
                      LearnSettings(reference=reference, **SETTINGS), **options)
    for seed in range(requests):
        atoms = rattled(seed, scale=0.03 + 0.03 * seed)
        learner.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    return learner


def test_a_changed_reference_is_a_decision_never_a_mix(tmp_path):
    first = learn_a_little(tmp_path, Reference())
    first.close(final_refit=False)
    old = len(first.keys)
    assert old >= 1
    other = Reference(kwargs={"asap_cutoff": True})  # another EMT: another level of theory
    with pytest.raises(ReferenceChanged, match=rf"(?s){old} results of reference .*kwargs\.asap_cutoff.*--reference-changed"):
        Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, LearnSettings(reference=other, **SETTINGS))
    dropped = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path,
                      LearnSettings(reference=other, **SETTINGS), reference_changed="drop")
    assert dropped.training == [] and dropped.keys == []
    atoms = rattled(7)
    dropped.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    assert len(dropped.keys) >= 1
    new_keys = set(dropped.keys)
    dropped.close(final_refit=False)
    # the decision is journaled: a later restart with the same settings asks nothing, and mixes nothing
    again = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, LearnSettings(reference=other, **SETTINGS))
    assert set(again.keys) == new_keys
    again.close(final_refit=False)
    # back to the first settings: their results count again, the others are now the changed ones
    with pytest.raises(ReferenceChanged):
        Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, LearnSettings(**SETTINGS))
    kept = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, LearnSettings(**SETTINGS),
                   reference_changed="keep")
    assert len(kept.keys) == old + len(new_keys)
    kept.close(final_refit=False)
    stored = [json.loads(path.read_text()) for path in (tmp_path / "references").glob("*.json")]
    assert {data["reference"] for data in stored} == {Reference().fingerprint()}
    assert sum(data.get("adopted_from") == other.fingerprint() for data in stored) == len(new_keys)


def test_a_pending_structure_of_old_settings_is_computed_with_the_new_ones(tmp_path):
    old, new = Reference(), Reference(kwargs={"asap_cutoff": True})
    atoms = rattled(3)
    journal = Journal(tmp_path)
    old_key = ReferenceCalls(old, journal).key(atoms)
    journal.select(old_key, atoms, old.fingerprint())  # selected, then the run was killed
    learner = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, LearnSettings(reference=new, **SETTINGS))
    assert learner.keys == [learner.calls.key(atoms)] and learner.keys[0] != old_key
    assert not learner.journal.pending()
    [result] = learner.journal.results()
    assert result.fingerprint == new.fingerprint()
    learner.close(final_refit=False)


# ---------------------------------------------------------------- start-up checks

def test_observe_mode_without_a_trained_start_fails_at_start(tmp_path):
    with pytest.raises(ValueError, match="observe mode .*--training"):
        Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, LearnSettings(observe=True))
    assert not (tmp_path / "journal.jsonl").exists() or not JournalReader(tmp_path).events()


def test_answering_with_a_reference_without_stress_fails_at_start(tmp_path):
    reference = Reference(calculator="reference_calculators:NoStressEMT")
    with pytest.raises(ValueError, match="needs the reference's stress"):
        Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path,
                LearnSettings(reference=reference, answer_with="reference"))
    Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, LearnSettings(reference=reference)).close(False)


# ---------------------------------------------------------------- readers do not write

def test_readers_never_change_a_live_journal_and_skip_bad_lines_by_number(tmp_path):
    journal = Journal(tmp_path)
    journal.log("start", step=0)
    with open(journal.path, "a") as stream:
        stream.write("garbage \xff not json\n")
    journal.log("stop", step=5)
    with open(journal.path, "a") as stream:
        stream.write('{"event": "sel')  # the live learner is writing this line
    before = journal.path.read_bytes()
    with pytest.warns(JournalWarning) as caught:
        events = JournalReader(tmp_path).events()
    assert [event["event"] for event in events] == ["start", "stop"]
    messages = [str(warning.message) for warning in caught]
    assert any("line 2, not a journal event" in m for m in messages)
    assert any("line 4, cut short" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JournalWarning)
        assert main(["learn-report", str(tmp_path)]) == 0
    assert journal.path.read_bytes() == before


def test_results_come_back_in_journal_order_whatever_the_file_times(tmp_path):
    calls = ReferenceCalls(Reference(), Journal(tmp_path))
    keys = [key for key, _ in calls.compute([rattled(seed) for seed in range(4)])]
    for age, key in enumerate(keys):  # the first result now looks the newest
        os.utime(tmp_path / "references" / f"{key}.json", (time.time() - age * 100,) * 2)
    assert list(JournalReader(tmp_path).completed()) == keys


# ---------------------------------------------------------------- smaller ones

def test_model_versions_never_overwrite_a_file(tmp_path):
    learner = learn_a_little(tmp_path, Reference(), requests=1)
    learner.close(final_refit=False)
    models = tmp_path / "models"
    newest = max(models.glob("model_*.mtp"))
    first = models / "model_0001.mtp"
    if first != newest:
        first.unlink()  # a user tidied up: the count of files is now below the newest version
    contents = {path.name: path.read_bytes() for path in models.glob("model_*.mtp")}
    learner = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path, LearnSettings(**SETTINGS))
    learner.close(final_refit=False)
    for name, content in contents.items():
        assert (models / name).read_bytes() == content
    assert learner.version == int(newest.stem.split("_")[1]) + 1


def test_a_symbolic_link_at_the_lock_path_is_refused(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "lock").symlink_to(target)
    with pytest.raises(OSError, match="is a symbolic link"):
        Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), run, LearnSettings(**SETTINGS))
    assert target.read_text() == "keep me\n"


def test_candidates_found_by_other_walkers_during_a_hold_are_kept(tmp_path):
    reference = Reference(calculator="reference_calculators:SlowEMT", kwargs={"delay": 1.5})
    learner = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path,
                      LearnSettings(reference=reference, refit_iterations=0, threshold_save=1.0, threshold_break=100.0,
                                    max_selected=1))
    ask = lambda atoms: learner.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)  # noqa: E731
    ask(rattled(0, scale=0.05))  # the first model
    holding = threading.Thread(target=ask, args=(rattled(3, scale=0.1),))  # grade about 1600: held
    holding.start()
    while sum(event["event"] == "hold" for event in learner.journal.events()) < 2:
        time.sleep(0.05)
    candidate = rattled(2, scale=0.05)  # grade about 23: answered, kept as a candidate
    assert ask(candidate)[3]["mtp_grade"] < 100.0
    holding.join()
    assert [atoms.positions.tolist() for atoms in learner.candidates] == [candidate.positions.tolist()]
    learner.close(final_refit=False)
