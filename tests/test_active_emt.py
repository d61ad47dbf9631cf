"""Grades on EMT copper: a small potential fitted to 300 K MD, graded on its own data, on rattled
copies and on hotter, strained MD; grades in MTPCalculator; the stored active set; the CLI."""

import json

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.verlet import VelocityVerlet

from mtp_driver import MTPCalculator
from mtp_driver.active import build_active_set, configuration_grades, load_active_set, save_active_set
from mtp_driver.active.rows import site_rows
from mtp_driver.cli import main
from mtp_driver.fit import TrainOptions, train
from mtp_driver.io.cfg import read_cfg, write_cfg
from mtp_driver.io.mtp_file import write_mtp
from mtp_driver.mtp.basis import untrained_mtp


def emt_md(temperature, count, seed, strain=0.0, every=5):
    """Snapshots of NVE MD of 32 Cu atoms with EMT labels, started at twice `temperature` (K)."""
    atoms = bulk("Cu", "fcc", a=3.61 * (1.0 + strain), cubic=True).repeat(2)
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses()[:, None] * 2 * temperature * units.kB)
    atoms.set_momenta(momenta - momenta.mean(axis=0))
    dynamics = VelocityVerlet(atoms, timestep=2 * units.fs)
    dynamics.run(20)
    snapshots = []
    for _ in range(count):
        dynamics.run(every)
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                          stress=atoms.get_stress())
        snapshots.append(copy)
    return snapshots


@pytest.fixture(scope="module")
def copper():
    training = emt_md(300, count=60, seed=0)
    fitted = train(untrained_mtp(8, 1, 2.0, 4.5, species=["Cu"]), training, options=TrainOptions(max_iter=20),
                   progress=False).mtp
    hot = emt_md(1500, count=8, seed=1, strain=0.06)
    rng = np.random.default_rng(2)
    rattled = [atoms.copy() for atoms in training[::6]]
    for atoms in rattled:
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
    return fitted, training, hot, rattled


@pytest.mark.parametrize("mode", ["cfg", "nbh"])
def test_grades_separate_training_rattled_and_hot_strained_configurations(copper, mode):
    mtp, training, hot, rattled = copper
    active_set = build_active_set(mtp, training, mode=mode)
    assert active_set.mode == mode
    assert configuration_grades(active_set, site_rows(mtp, training, None)).grades.max() <= 1 + 1e-6
    assert configuration_grades(active_set, site_rows(mtp, rattled, None)).grades.max() < 1.5  # measured 1.37, 1.24
    assert configuration_grades(active_set, site_rows(mtp, hot, None)).grades.min() > 2.0  # measured > 300
    sources = active_set.sources
    active_rows = site_rows(mtp, [training[c] for c in sources[:, 0]], None)
    members = (active_rows.configuration_rows() if mode == "cfg"
               else active_rows.rows[active_rows.atom_starts[:-1] + sources[:, 1]])
    assert active_set.row_grades(members) == pytest.approx(1.0, abs=1e-9)  # active-set members grade exactly 1


@pytest.mark.parametrize("mode", ["cfg", "nbh"])
def test_calculator_reports_the_grades_of_the_library(copper, mode):
    mtp, training, hot, _ = copper
    active_set = build_active_set(mtp, training, mode=mode)
    plain = MTPCalculator(mtp)
    graded = MTPCalculator(mtp, active_set=active_set)
    expected = configuration_grades(active_set, site_rows(mtp, hot[:2], None))
    for c, atoms in enumerate(hot[:2]):
        atoms = atoms.copy()
        atoms.calc = graded
        forces = atoms.get_forces()
        assert graded.results["extrapolation_grade"] == pytest.approx(expected.grades[c], rel=1e-10)
        assert graded.get_property("extrapolation_grade", atoms) == graded.results["extrapolation_grade"]
        if mode == "nbh":
            atom_grades = graded.results["extrapolation_grades"]
            assert atom_grades.shape == (len(atoms),) and atom_grades.max() == graded.results["extrapolation_grade"]
        else:
            assert "extrapolation_grades" not in graded.results
        atoms.calc = plain
        assert np.allclose(atoms.get_forces(), forces, atol=1e-12, rtol=0)
        assert "extrapolation_grade" not in plain.results


def test_stored_active_set_round_trips_and_rejects_another_potential(copper, tmp_path):
    mtp, training, hot, _ = copper
    active_set = build_active_set(mtp, training, mode="nbh")
    path = tmp_path / "Cu.active.npz"
    save_active_set(active_set, path)
    loaded = load_active_set(path, mtp)
    rows = site_rows(mtp, hot, None)
    assert np.array_equal(configuration_grades(loaded, rows).grades, configuration_grades(active_set, rows).grades)
    assert len(active_set.dropped_columns) and np.array_equal(loaded.dropped_rows, active_set.dropped_rows)
    assert MTPCalculator(mtp, active_set=path).active_set.mode == "nbh"
    changed = mtp.copy(moment_coeffs=mtp.moment_coeffs * (1 + 1e-12))  # e.g. retrained
    with pytest.raises(ValueError, match="different potential.*rebuild"):
        load_active_set(path, changed)
    with pytest.raises(ValueError, match="different potential"):
        MTPCalculator(changed, active_set=active_set)
    with pytest.raises(ValueError, match="built with species \\['Cu'\\]"):
        MTPCalculator(mtp.copy(species=("Ag",)), species=["Ag"], active_set=active_set)
    with np.load(path) as data:  # a version-1 file (before the dropped columns) still loads, without them
        header = json.loads(str(data["header"]))
        np.savez(tmp_path / "v1.npz", header=np.array(json.dumps({**header, "version": 1})),
                 **{name: data[name] for name in ("columns", "column_scale", "rows", "inverse", "sources")})
    old = load_active_set(tmp_path / "v1.npz", mtp)
    assert len(old.dropped_columns) == 0 and np.array_equal(old.rows, active_set.rows)
    np.savez(tmp_path / "v3.npz", header=np.array(json.dumps({**header, "version": 3})))
    with pytest.raises(ValueError, match="version 3, this program reads 1 to 2"):
        load_active_set(tmp_path / "v3.npz")
    np.savez(tmp_path / "other.npz", rows=np.eye(2))
    with pytest.raises(ValueError, match="not an active set file"):
        load_active_set(tmp_path / "other.npz")


def test_rows_outside_the_span_of_the_training_rows_extrapolate(copper):
    """A species the data never had, or (with the data of one perfect lattice) any new direction, is invisible to
    MaxVol's coefficients over the determined columns: before the outside-span part of the grade, a pure Pd cell
    graded 0 against copper data and a Cu-only learner relaxed it with a model that had never seen Pd."""
    _, training, _, rattled = copper
    alloy = train(untrained_mtp(8, 2, 2.0, 4.5, species=["Cu", "Pd"]), training, options=TrainOptions(max_iter=2),
                  progress=False).mtp
    active_set = build_active_set(alloy, training, mode="nbh")  # 60 configurations: too few for cfg rows of 75
    assert configuration_grades(active_set, site_rows(alloy, training, None)).grades.max() <= 1 + 1e-6
    assert configuration_grades(active_set, site_rows(alloy, rattled, None)).grades.max() < 1.5
    palladium = bulk("Pd", "fcc", a=3.89)
    mixed = bulk("Cu", "fcc", a=3.7, cubic=True)
    mixed.symbols[0] = "Pd"
    assert configuration_grades(active_set, site_rows(alloy, [palladium, mixed], None)).grades.min() > 1e5
    lattice = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)  # every atom the same row: rank 1
    single = build_active_set(alloy, [lattice], mode="nbh")
    shaken = lattice.copy()
    shaken.positions += np.random.default_rng(3).normal(scale=0.01, size=shaken.positions.shape)
    grades = configuration_grades(single, site_rows(alloy, [lattice, shaken], None)).grades
    assert grades[0] == pytest.approx(1.0) and grades[1] > 100


def test_unknown_elements_are_a_clear_error(copper):
    mtp, training, _, _ = copper
    active_set = build_active_set(mtp, training, mode="cfg")
    gold = bulk("Au", "fcc", a=4.08, cubic=True)
    with pytest.raises(ValueError, match="Au.*not among the species"):
        configuration_grades(active_set, site_rows(mtp, [gold], None))
    gold.calc = MTPCalculator(mtp, active_set=active_set)
    with pytest.raises(ValueError, match="Au.*does not know"):
        gold.get_potential_energy()


def test_calc_grade_and_select_add_commands(copper, tmp_path, capsys):
    mtp, training, hot, rattled = copper
    write_mtp(mtp, tmp_path / "pot.mtp")
    write_cfg(tmp_path / "train.cfg", training, species=["Cu"])
    write_cfg(tmp_path / "candidates.cfg", rattled[:3] + hot[:3] + hot[:1], species=["Cu"])  # hot[0] twice
    pot, train_cfg, candidates = (str(tmp_path / name) for name in ("pot.mtp", "train.cfg", "candidates.cfg"))
    assert main(["calc-grade", pot, train_cfg, candidates, str(tmp_path / "graded.cfg"), "--mode", "nbh",
                 "--save-active-set", str(tmp_path / "pot.active.npz")]) == 0
    graded = read_cfg(tmp_path / "graded.cfg", species=["Cu"])
    grades = np.array([atoms.info["MV_grade"] for atoms in graded])
    assert grades[:3].max() < 1.5 and grades[3:].min() > 2.0
    assert np.allclose([atoms.arrays["nbh_grades"].max() for atoms in graded], grades)
    assert load_active_set(tmp_path / "pot.active.npz", mtp).mode == "nbh"

    assert main(["select-add", pot, train_cfg, candidates, str(tmp_path / "new.cfg"), "--limit", "2"]) == 0
    assert len(read_cfg(tmp_path / "new.cfg")) == 2
    assert main(["select-add", pot, train_cfg, candidates, str(tmp_path / "new.cfg"), "--threshold", "1.1"]) == 0
    selected_grades = [atoms.info["MV_grade"] for atoms in read_cfg(tmp_path / "new.cfg", species=["Cu"])]
    assert 3 <= len(selected_grades) <= 6 and min(selected_grades) > 1.1
    assert len(set(selected_grades)) == len(selected_grades)  # the duplicated hot configuration is taken once
    assert "candidates selected" in capsys.readouterr().out

    assert main(["calc-grade", pot, str(tmp_path / "missing.cfg"), candidates, str(tmp_path / "x.cfg")]) == 2
    assert "error" in capsys.readouterr().err
