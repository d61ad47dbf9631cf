"""Reference calls of the learner: results, failure detection, retries, quarantine, the journal."""

import json
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mtp_driver.learn.calls import LearningStopped, ReferenceCalls
from mtp_driver.learn.journal import Journal, atoms_from_dict, atoms_to_dict, structure_key
from mtp_driver.learn.reference import Reference, ReferenceFailure


def rattled_cu(count, seed=0):
    images = []
    for k in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=seed + k)
        images.append(atoms)
    return images


def test_emt_reference_labels_energy_forces_stress():
    atoms = rattled_cu(1)[0]
    labelled = Reference().compute(atoms)
    expected = atoms.copy()
    expected.calc = EMT()
    assert labelled.get_potential_energy() == pytest.approx(expected.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(labelled.get_forces(), expected.get_forces(), atol=1e-12)
    np.testing.assert_allclose(labelled.get_stress(), expected.get_stress(), atol=1e-12)
    assert labelled.positions is not atoms.positions


@pytest.mark.parametrize("reference, message", [
    (Reference(calculator="reference_calculators:NaNForces"), "non-finite"),
    (Reference(calculator="reference_calculators:Unconverged"), "did not converge"),
    (Reference(calculator="reference_calculators:FlakyEMT", kwargs=dict(failure_rate=1.0)), "SCF did not converge"),
    (Reference(calculator="no_such_module:Calc"), "cannot import module"),
    (Reference(command="false"), "exited with 1"),
    (Reference(command="true"), "wrote no output.extxyz"),
    (Reference(command="no-such-program-anywhere"), "not found"),
])
def test_failed_reference_calls_are_recognised(reference, message):
    with pytest.raises(ReferenceFailure, match=message):
        reference.compute(rattled_cu(1)[0])


@pytest.mark.processes
def test_external_command_reference(tmp_path):
    """A command that reads input.extxyz and writes output.extxyz (here: Python running EMT)."""
    script = tmp_path / "emt_command.py"
    script.write_text("import ase.io\nfrom ase.calculators.emt import EMT\n"
                      "atoms = ase.io.read('input.extxyz')\natoms.calc = EMT()\natoms.get_stress()\n"
                      "ase.io.write('output.extxyz', atoms)\n")
    atoms = rattled_cu(1)[0]
    labelled = Reference(command=f"{sys.executable} {script}").compute(atoms, workdir=tmp_path / "call")
    assert labelled.get_potential_energy() == pytest.approx(Reference().compute(atoms).get_potential_energy(),
                                                            abs=1e-6)
    # it ran in the directory given, which is left to the caller (ReferenceCalls removes it after a success)
    assert {path.name for path in (tmp_path / "call").iterdir()} == {"input.extxyz", "output.extxyz",
                                                                     "reference.stdout", "reference.stderr"}


def test_reference_settings_change_the_key():
    atoms = rattled_cu(1)[0]
    emt, other = Reference(), Reference(kwargs={"asap_cutoff": True})
    assert structure_key(atoms, emt.fingerprint()) != structure_key(atoms, other.fingerprint())
    moved = atoms.copy()
    moved.positions[0, 0] += 1e-12
    assert structure_key(atoms, emt.fingerprint()) != structure_key(moved, emt.fingerprint())


def test_journal_round_trip_is_exact():
    labelled = Reference().compute(rattled_cu(1)[0])
    copy = atoms_from_dict(json.loads(json.dumps(atoms_to_dict(labelled))))
    np.testing.assert_array_equal(copy.positions, labelled.positions)
    np.testing.assert_array_equal(copy.get_forces(), labelled.get_forces())
    np.testing.assert_array_equal(copy.get_stress(), labelled.get_stress())
    assert copy.get_potential_energy() == labelled.get_potential_energy()


def test_a_torn_last_journal_line_is_dropped(tmp_path):
    journal = Journal(tmp_path)
    journal.log("first", value=1)
    with open(journal.path, "a") as stream:
        stream.write('{"event": "sec')  # a kill in the middle of a write
    events = Journal(tmp_path).events()
    assert [event["event"] for event in events] == ["first"]


def test_calls_are_never_repeated_and_pending_ones_are_recovered(tmp_path):
    images = rattled_cu(3)
    calls = ReferenceCalls(Reference(), Journal(tmp_path))
    results = calls.compute(images + images[:1])
    assert calls.calls == 3 and len(results) == 3
    # a killed run left a selected structure without result
    extra = rattled_cu(1, seed=10)[0]
    journal = Journal(tmp_path)
    journal.select(structure_key(extra, Reference().fingerprint()), extra, Reference().fingerprint())
    restarted = ReferenceCalls(Reference(), Journal(tmp_path))
    pending = restarted.journal.pending()
    assert len(pending) == 1
    results = restarted.compute(images + [entry.atoms for entry in pending.values()])
    assert restarted.calls == 1  # only the pending one
    assert len(results) == 4 and len(restarted.journal.completed()) == 4 and not restarted.journal.pending()


@pytest.mark.processes
def test_parallel_calls_equal_serial_calls(tmp_path):
    images = rattled_cu(4)
    serial = ReferenceCalls(Reference(), Journal(tmp_path / "serial")).compute(images)
    pool = ReferenceCalls(Reference(), Journal(tmp_path / "parallel"), workers=2)
    try:
        parallel = pool.compute(images)
    finally:
        pool.close()
    assert [key for key, _ in serial] == [key for key, _ in parallel]
    for (_, a), (_, b) in zip(serial, parallel):
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())


def test_failures_are_retried_quarantined_and_budgeted(tmp_path):
    images = rattled_cu(20)
    flaky = Reference(calculator="reference_calculators:FlakyEMT", kwargs=dict(failure_rate=0.3))
    calls = ReferenceCalls(flaky, Journal(tmp_path), retries=2, failure_budget=100)
    results = calls.compute(images)
    quarantined = calls.journal.quarantined()
    assert 0 < len(quarantined) < len(images)
    assert len(results) + len(quarantined) == len(images)
    assert calls.calls == len(results) + 3 * len(quarantined)  # each failure tried retries + 1 times
    assert not set(quarantined) & {key for key, _ in results}
    strict = ReferenceCalls(flaky, Journal(tmp_path / "strict"), retries=0, failure_budget=1)
    with pytest.raises(LearningStopped, match="failure budget of 1"):
        strict.compute(images)
    # random failures: a retry can succeed, and nothing is quarantined with enough retries
    lucky = ReferenceCalls(Reference(calculator="reference_calculators:FlakyEMT",
                                     kwargs=dict(failure_rate=0.3, random_failures=True)),
                           Journal(tmp_path / "lucky"), retries=30)
    assert len(lucky.compute(images[:5])) == 5
