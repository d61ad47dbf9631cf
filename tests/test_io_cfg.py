"""Reading and writing MLIP `.cfg` files: values, exact round trips, ASE conventions, malformed input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from mtp_driver.io import MLIPFormatError, iter_cfg, read_cfg, write_cfg
from mtp_driver.io.cfg import MLIP_TYPE_ARRAY, PLUS_STRESS_RESULT

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE = DATA / "mlip2_reference"
REFERENCE_CFGS = sorted(REFERENCE.glob("**/*.cfg"))
MO10 = DATA / "mlearn_zuo2020" / "mlip_cfg_example" / "Mo10_train.cfg"
NBMOTAW = ["Nb", "Mo", "Ta", "W"]

needs_data = pytest.mark.skipif(not REFERENCE.exists(), reason="shared data not found")


def same_bits(a, b) -> bool:
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def assert_same_configuration(a: Atoms, b: Atoms):
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    assert same_bits(a.positions, b.positions)
    assert same_bits(a.cell.array, b.cell.array)
    assert a.pbc.tolist() == b.pbc.tolist()
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        assert same_bits(a.arrays[name], b.arrays[name]), name
    assert a.info == b.info
    results_a = a.calc.results if a.calc else {}
    results_b = b.calc.results if b.calc else {}
    assert sorted(results_a) == sorted(results_b)
    for name in results_a:
        assert same_bits(results_a[name], results_b[name]), name


@needs_data
@pytest.mark.parametrize("path", REFERENCE_CFGS, ids=lambda p: p.name)
def test_reference_files_round_trip_exactly(path, tmp_path):
    images = read_cfg(path)
    first, second = tmp_path / "first.cfg", tmp_path / "second.cfg"
    write_cfg(first, images)
    again = read_cfg(first)
    assert len(again) == len(images)
    for a, b in zip(images, again):
        assert_same_configuration(a, b)
    write_cfg(second, again)
    assert first.read_text() == second.read_text()


@needs_data
def test_reference_values_are_read_as_written_in_the_text():
    images = read_cfg(REFERENCE / "Li.test.mlip2.cfg")
    assert len(images) == 29
    first = images[0]
    assert len(first) == 53 and first.pbc.all()
    assert np.array_equal(first.cell.array, np.diag([10.280451] * 3))
    assert first.positions[0].tolist() == [10.064490, 9.968984, 9.951435]
    assert first.arrays[MLIP_TYPE_ARRAY].tolist() == [0] * 53
    assert first.get_chemical_symbols() == ["X"] * 53
    assert first.get_forces()[0].tolist() == [0.221744, 0.170286, 0.104982]
    assert first.get_forces()[21].tolist() == [0.154015, -0.151534, -0.231846]
    assert first.get_potential_energy() == -98.372195256703
    assert first.get_potential_energy(force_consistent=True) == -98.372195256703
    plus_stress = [3.10661, 2.24497, 1.55331, -0.08638, 0.64137, -1.29261]  # xx yy zz yz xz xy
    assert first.calc.results[PLUS_STRESS_RESULT].tolist() == plus_stress
    # MLIP's PlusStress is -volume * stress in ASE's convention, same Voigt order.
    assert np.allclose(first.get_stress(), -np.array(plus_stress) / 10.280451**3, rtol=1e-15, atol=0)
    assert images[1].get_potential_energy() == -98.256892758133


@needs_data
def test_species_map_types_to_symbols_and_back(tmp_path):
    named = read_cfg(REFERENCE / "NbMo_Test.mlip2.cfg", species=NBMOTAW)
    plain = read_cfg(REFERENCE / "NbMo_Test.mlip2.cfg")
    assert named[0].get_chemical_symbols() == ["Nb"] * 4 + ["Mo"] * 4
    assert MLIP_TYPE_ARRAY not in named[0].arrays
    assert named[0].get_potential_energy() == -83.713613986604
    assert named[0].get_forces()[6].tolist() == [0.656746, 0.0, -0.0]
    assert named[0].calc.results[PLUS_STRESS_RESULT].tolist() == [-12.99287, -13.14764, -13.39990, 0.0, 0.0, -0.0]
    path = tmp_path / "named.cfg"
    write_cfg(path, named, species=NBMOTAW)
    for a, b in zip(plain, read_cfg(path)):
        assert a.arrays[MLIP_TYPE_ARRAY].tolist() == b.arrays[MLIP_TYPE_ARRAY].tolist()
        assert same_bits(a.get_forces(), b.get_forces())


@needs_data
def test_grades_are_features_in_info():
    graded = read_cfg(REFERENCE / "grades" / "Li.candidates.mlip2_graded.cfg")
    assert graded[0].info == {"MV_grade": 0.602810}
    assert graded[1].info == {"MV_grade": 38.013545}
    assert all(atoms.calc is None for atoms in graded)


HANDMADE = """\
BEGIN_CFG
 Size
    3
 Supercell
    4.0 0.0 0.0
    0.5 4.0 0.0
    0.0 0.3 5.0
 AtomData:  type direct_z direct_x direct_y id fz fx fy site_en nbh_grades
    1 0.5 0.0 0.0 1 0.3 0.1 0.2 -3.25 1.5
    0 0.25 0.5 0.5 2 -0.3 -0.1 -0.2 -3.5 0.25
    1 0.75 0.1 0.9 3 0.0 0.0 0.0 -3.0 3.0
 Energy
    -9.75
 PlusStress:  xy xz yz zz yy xx
    0.6 0.5 0.4 0.3 0.2 0.1
 Feature   EFS_by\tVASP
 Feature   note\tfirst line
 Feature   note\tsecond line
 Feature   step\t42
 Feature   MV_grade\t1.25
END_CFG

BEGIN_CFG
 Size
    2
 Supercell
    3.0 0.0 0.0
 AtomData:  id cartes_x cartes_y cartes_z
    1 0.0 0.0 0.0
    2 1.5 0.0 0.0
 PlusStress:  xx yy zz yz xz xy
    1.0 0.0 0.0 0.0 0.0 0.0
END_CFG

BEGIN_CFG
 Size
    1
 AtomData:  id type cartes_x cartes_y cartes_z
    1 1 0.1 0.2 0.3
END_CFG
"""


def test_columns_in_any_order_stress_features_and_partial_periodicity(tmp_path):
    path = tmp_path / "handmade.cfg"
    path.write_text(HANDMADE)
    first, chain, molecule = read_cfg(path, species=["Cu", "Ag"])
    assert first.get_chemical_symbols() == ["Ag", "Cu", "Ag"]
    assert np.allclose(first.get_scaled_positions(wrap=False)[2], [0.1, 0.9, 0.75])
    assert first.get_forces()[0].tolist() == [0.1, 0.2, 0.3]
    assert first.arrays["site_en"].tolist() == [-3.25, -3.5, -3.0]
    assert first.arrays["nbh_grades"].tolist() == [1.5, 0.25, 3.0]
    assert first.calc.results[PLUS_STRESS_RESULT].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert np.allclose(first.get_stress(), -np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) / 80.0, rtol=1e-15, atol=0)
    assert first.info == {"EFS_by": "VASP", "note": "first line\nsecond line", "step": 42, "MV_grade": 1.25}
    # One lattice vector: periodic along it only; the virial has no volume to become a stress.
    assert chain.pbc.tolist() == [True, False, False] and chain.cell.array[1:].tolist() == [[0.0] * 3] * 2
    assert chain.get_chemical_symbols() == ["Cu", "Cu"]  # no type column: type 0
    assert "stress" not in chain.calc.results and chain.calc.results[PLUS_STRESS_RESULT][0] == 1.0
    assert not molecule.pbc.any() and molecule.calc is None

    copy = tmp_path / "copy.cfg"
    write_cfg(copy, [first, chain, molecule], species=["Cu", "Ag"])
    text = copy.read_text()
    assert "Feature   note\tfirst line\n Feature   note\tsecond line\n" in text
    assert text.count(" Supercell") == 2 and "direct_x" not in text
    for a, b in zip([first, chain, molecule], read_cfg(copy, species=["Cu", "Ag"])):
        assert_same_configuration(a, b)


def test_ase_atoms_with_a_calculator_become_plus_stress(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    stress = np.array([0.01, 0.02, 0.03, -0.004, 0.005, -0.006])
    forces = np.random.default_rng(0).normal(size=(4, 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-14.5, forces=forces, stress=stress)
    atoms.info["config_type"] = "rattled"
    path = tmp_path / "cu.cfg"
    write_cfg(path, atoms, species=["Cu"])
    text = path.read_text()
    plus_line = text.split(" PlusStress:  xx yy zz yz xz xy\n")[1].splitlines()[0]
    assert np.allclose([float(v) for v in plus_line.split()], -stress * atoms.get_volume(), rtol=1e-15)
    (back,) = read_cfg(path, species=["Cu"])
    assert same_bits(back.positions, atoms.positions) and same_bits(back.get_forces(), forces)
    assert np.allclose(back.get_stress(), stress, rtol=1e-14, atol=0)
    assert back.get_potential_energy() == -14.5 and back.info == {"config_type": "rattled"}


def test_write_refuses_unknown_symbols_and_missing_types(tmp_path):
    atoms = bulk("Cu") + Atoms("Zn", positions=[[1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"\['Zn'\] are not in species"):
        write_cfg(tmp_path / "x.cfg", atoms, species=["Cu"])
    with pytest.raises(ValueError, match="no species given"):
        write_cfg(tmp_path / "x.cfg", atoms)
    with pytest.raises(ValueError, match="not chemical symbols"):
        write_cfg(tmp_path / "x.cfg", atoms, species=["Cu", "Zz"])
    assert list(tmp_path.iterdir()) == []


def test_unwritable_info_and_arrays_are_skipped_with_a_warning(tmp_path):
    atoms = bulk("Cu")
    atoms.info["matrix"] = np.eye(3)
    atoms.new_array("vectors", np.zeros((1, 3)))
    with pytest.warns(UserWarning) as caught:
        write_cfg(tmp_path / "x.cfg", atoms, species=["Cu"])
    messages = " ".join(str(w.message) for w in caught)
    assert "atoms.info['matrix']" in messages and "atoms.arrays['vectors']" in messages
    (back,) = read_cfg(tmp_path / "x.cfg", species=["Cu"])
    assert back.info == {} and "vectors" not in back.arrays


@needs_data
def test_deprecated_stress_field_is_skipped_with_one_warning():
    with pytest.warns(UserWarning, match="deprecated 'Stress:'") as caught:
        images = read_cfg(MO10)
    assert len(caught) == 1
    assert len(images) == 100 and len(images[0]) == 54
    assert images[0].get_potential_energy() == -581.6806102
    assert "stress" not in images[0].calc.results


def test_iter_cfg_yields_before_reading_the_rest(tmp_path):
    path = tmp_path / "two.cfg"
    good = HANDMADE.split("BEGIN_CFG")[3]
    path.write_text(f"BEGIN_CFG{good}BEGIN_CFG\n Size\n    1\n Colour\nEND_CFG\n")
    configurations = iter_cfg(path, species=["Cu", "Ag"])
    assert len(next(configurations)) == 1
    with pytest.raises(MLIPFormatError, match="unknown key 'Colour'"):
        next(configurations)


# --- malformed files: one MLIPFormatError naming the file and the line ---------------------------

GOOD = """\
BEGIN_CFG
 Size
    2
 Supercell
    3.0 0.0 0.0
    0.0 3.0 0.0
    0.0 0.0 3.0
 AtomData:  id type cartes_x cartes_y cartes_z fx fy fz
    1 0 0.0 0.0 0.0 0.1 0.2 0.3
    2 1 1.5 1.5 1.5 -0.1 -0.2 -0.3
 Energy
    -7.5
 PlusStress:  xx yy zz yz xz xy
    0.1 0.2 0.3 0.0 0.0 0.0
 Feature   MV_grade\t1.5
END_CFG
"""
GOOD_LINES = GOOD.splitlines()


def replaced(line: int, new_text: str) -> str:
    lines = list(GOOD_LINES)
    lines[line - 1] = new_text
    return "\n".join(lines) + "\n"


MALFORMED = {
    "truncated: no END_CFG": ("\n".join(GOOD_LINES[:-1]) + "\n", 15),
    "truncated: end of file inside AtomData": ("\n".join(GOOD_LINES[:9]) + "\n", 9),
    "Size larger than the atom lines": (replaced(3, "    3"), 11),
    "Size smaller than the atom lines": (replaced(3, "    1"), 10),
    "missing column on one line": (replaced(10, "    2 1 1.5 1.5 -0.1 -0.2 -0.3"), 10),
    "non-numeric position": (replaced(10, "    2 1 1.5 abc 1.5 -0.1 -0.2 -0.3"), 10),
    "non-numeric Size": (replaced(3, "    two"), 3),
    "fractional type": (replaced(10, "    2 1.0 1.5 1.5 1.5 -0.1 -0.2 -0.3"), 10),
    "NaN force": (replaced(9, "    1 0 0.0 0.0 0.0 nan 0.2 0.3"), 9),
    "infinite energy": (replaced(12, "    inf"), 12),
    "NaN lattice": (replaced(6, "    0.0 NaN 0.0"), 6),
    "NaN PlusStress": (replaced(14, "    0.1 0.2 0.3 0.0 nan 0.0"), 14),
    "short PlusStress": (replaced(14, "    0.1 0.2 0.3 0.0 0.0"), 14),
    "PlusStress component missing": (replaced(13, " PlusStress:  xx yy zz yz xz"), 13),
    "type outside species": (replaced(10, "    2 2 1.5 1.5 1.5 -0.1 -0.2 -0.3"), 10),
    "negative type": (replaced(10, "    2 -1 1.5 1.5 1.5 -0.1 -0.2 -0.3"), 10),
    "ids out of order": (replaced(10, "    3 1 1.5 1.5 1.5 -0.1 -0.2 -0.3"), 10),
    "unknown key": (replaced(11, " Enrgy"), 11),
    "repeated key": (replaced(15, " Energy"), 15),
    "only two position columns": (replaced(8, " AtomData:  id type cartes_x cartes_y fx fy fz q"), 8),
    "fractional without cell": ("\n".join(GOOD_LINES[:3] + [" AtomData:  id type direct_x direct_y direct_z"] + ["    1 0 0.0 0.0 0.0", "    2 0 0.5 0.5 0.5", "END_CFG"]) + "\n", 4),
    "AtomData before Size": ("\n".join(GOOD_LINES[:1] + GOOD_LINES[7:]) + "\n", 2),
    "no AtomData": ("BEGIN_CFG\n Size\n    0\nEND_CFG\n", 4),
    "garbage before BEGIN_CFG": ("hello\n" + GOOD, 1),
    "lattice row with two numbers": (replaced(6, "    0.0 3.0"), 6),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_names_file_and_line(case, tmp_path):
    text, line = MALFORMED[case]
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(MLIPFormatError) as raised:
        read_cfg(path, species=["Nb", "Mo"])
    assert (raised.value.path, raised.value.line) == (str(path), line), str(raised.value)
    assert str(raised.value).startswith(f"{path}, line {line}: ")


def test_the_good_template_reads(tmp_path):
    path = tmp_path / "good.cfg"
    path.write_text(GOOD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (atoms,) = read_cfg(path, species=["Nb", "Mo"])
    assert atoms.get_chemical_symbols() == ["Nb", "Mo"] and atoms.info == {"MV_grade": 1.5}
