"""Screening: many relaxations with one potential (`relax`, the learner shared by walkers), the hull
(`hull`) and its verification with the reference, EMT Cu-Pd."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

import mtp_driver
from mtp_driver.calculator import MTPCalculator, MTPPotential
from mtp_driver.learn.journal import JournalReader
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp
from mtp_driver.screen.hull import build_hull
from mtp_driver.screen.relax import RelaxStore, Stopped, relax_all
from mtp_driver.screen.settings import RelaxSettings
from mtp_driver.screen.walkers import WalkerPotential, relax_in_processes

pytestmark = pytest.mark.timeout(600)
CU_MTP = Path(mtp_driver.__file__).parent / "data" / "Cu_zuo2020.mtp"  # Zuo et al.'s fitted Cu MTP


def cupd(seed: int, pd: int, a: float = 3.75, scale: float = 0.04):
    """A rattled 4-atom fcc cell with `pd` Pd atoms."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.symbols[list(range(pd))] = "Pd"
    atoms.positions += np.random.default_rng(seed).normal(scale=scale, size=atoms.positions.shape)
    atoms.info["name"] = f"cupd-{seed}-{pd}"
    return atoms


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "mtp_driver.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"mtp-driver {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("walkers", ["threads", pytest.param("processes", marks=pytest.mark.processes)])
def test_relaxations_keep_order_and_info_and_mark_unphysical_ones(tmp_path, walkers):
    potential = MTPPotential(MTPCalculator(CU_MTP, species=["Cu"]), "cu")
    structures = [bulk("Cu", "fcc", a=3.6 + 0.02 * k, cubic=True).repeat(2) for k in range(4)]
    for k, atoms in enumerate(structures):
        atoms.rattle(0.05, seed=k)
        atoms.info["name"] = f"s{k}"
    structures[2].positions[1] = structures[2].positions[0] + [0.3, 0.0, 0.0]  # atoms on top of each other
    settings = RelaxSettings(fmax=0.005, relax_cell=True)
    if walkers == "threads":
        relaxed = relax_all(structures, potential, settings, walkers=2)
    else:  # the same relaxations, each in a walker process that loads the potential itself: the same numbers
        relaxed = relax_in_processes(structures, WalkerPotential(str(CU_MTP), ("Cu",)), settings, walkers=2)
        alone = relax_all(structures, potential, settings)
        for ours, theirs in zip(relaxed, alone):
            np.testing.assert_allclose(ours.positions, theirs.positions, rtol=0, atol=1e-10)
    assert [atoms.info["name"] for atoms in relaxed] == ["s0", "s1", "s2", "s3"]
    assert [atoms.info["relax_status"] for atoms in relaxed] == ["converged", "converged", "unphysical", "converged"]
    assert "apart" in relaxed[2].info["relax_reason"] or "close" in relaxed[2].info["relax_reason"]
    for k in (0, 1, 3):  # every relaxation reaches the same fcc minimum; forces and stress at fmax
        atoms = relaxed[k]
        assert np.abs(atoms.get_forces()).max() < 0.005
        assert abs(atoms.cell.lengths()[0] - relaxed[0].cell.lengths()[0]) < 1e-3
        assert atoms.get_potential_energy() == pytest.approx(potential.compute(
            atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)[0], abs=1e-10)


@pytest.mark.parametrize("walkers", ["threads", pytest.param("processes", marks=pytest.mark.processes)])
def test_a_stopped_screening_resumes_with_the_finished_relaxations_and_no_repeated_reference_call(tmp_path, walkers):
    """Walkers share one learner; a stop (as from Ctrl-C) after a few relaxations, then the same run again: the
    finished relaxations are read back, not redone, and no structure is computed twice by the reference. Walker
    processes ask the learner through its server; a structure with atoms on top of each other comes back from it
    as unphysical, as from a thread walker."""
    structures = [cupd(seed, pd) for seed in range(3) for pd in range(5)]
    structures[-1].positions[1] = structures[-1].positions[0] + [0.3, 0.0, 0.0]

    def relax(learner, **options):
        if walkers == "threads":
            return relax_all(structures, learner, settings, walkers=2, **options)
        return relax_in_processes(structures, WalkerPotential(None, ("Cu", "Pd")), settings, 2, learner=learner,
                                  **options)

    settings = RelaxSettings(fmax=0.02, relax_cell=True)
    learn = LearnSettings(species=("Cu", "Pd"), refit_iterations=0, hold_fit_iterations=30)
    store = RelaxStore(tmp_path / "out.partial", dict(test=1))
    learner = Learner(untrained_mtp(6, 2, 2.0, 5.0, species=["Cu", "Pd"]), tmp_path / "run", learn)
    stop = threading.Event()

    def stop_after_four(relaxed):
        if len(store.finished()) >= 4:
            stop.set()

    with pytest.raises(Stopped):
        relax(learner, store=store, progress=stop_after_four, stop=stop)
    learner.close(final_refit=False)
    finished = store.finished()
    assert 4 <= len(finished) < len(structures)
    learner = Learner(untrained_mtp(6, 2, 2.0, 5.0, species=["Cu", "Pd"]), tmp_path / "run", learn)
    relaxed = relax(learner, store=RelaxStore(tmp_path / "out.partial", dict(test=1)))
    learner.close(final_refit=False)
    for index, atoms in finished.items():  # read back as stored, not relaxed again
        np.testing.assert_array_equal(relaxed[index].positions, atoms.positions)
    assert [atoms.info["relax_status"] for atoms in relaxed] == ["converged"] * 14 + ["unphysical"]
    keys = [event["key"] for event in JournalReader(tmp_path / "run").events() if event["event"] == "reference"]
    assert keys and len(keys) == len(set(keys))
    with pytest.raises(ValueError, match="another input or other settings"):
        RelaxStore(tmp_path / "out.partial", dict(test=2))


@pytest.mark.parametrize("cell_filter", ["frechet", "unit"])
def test_both_cell_filters_reach_emts_own_minimum_under_pressure(cell_filter):
    """`relax_all` with EMT as the potential against ASE's loop with the same filter, at 5 GPa: the same enthalpy
    minimum (the filters differ in their cell coordinates, not in the minimum)."""
    from ase.filters import UnitCellFilter

    from mtp_driver.potential import ASECalculatorPotential

    settings = RelaxSettings(fmax=0.005, relax_cell=True, pressure=5.0, cell_filter=cell_filter, max_steps=300)
    structures = [cupd(seed, pd) for seed, pd in ((0, 1), (1, 2))]
    relaxed = relax_all(structures, ASECalculatorPotential(EMT()), settings)
    for atoms, ours in zip(structures, relaxed):
        atoms = atoms.copy()
        atoms.calc = EMT()
        ase_filter = {"frechet": FrechetCellFilter, "unit": UnitCellFilter}[cell_filter]
        BFGS(ase_filter(atoms, scalar_pressure=5.0 * units.GPa), logfile=None).run(fmax=0.005, steps=300)
        assert ours.info["relax_status"] == "converged"
        assert ours.get_volume() == pytest.approx(atoms.get_volume(), rel=1e-3)
        assert ours.get_stress()[:3] / units.GPa == pytest.approx([-5.0] * 3, abs=0.1)  # balances the pressure
        assert ours.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-3)


def emt_relaxed(atoms, fmax):
    atoms = atoms.copy()
    atoms.calc = EMT()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=500)
    return atoms


@pytest.mark.processes
def test_relax_learn_then_hull_verify_gives_emts_hull(tmp_path):
    """The command line end to end: relax 10 Cu-Pd cells learning from EMT (2 walker processes), then the hull
    verified with EMT: the verified formation energies are EMT's relaxed ones and the hull's compositions are EMT's."""
    structures = [cupd(seed, pd) for seed in range(2) for pd in range(5)]
    ase.io.write(tmp_path / "in.extxyz", structures)
    cli("init", 6, "--species", "Cu,Pd", "--min-dist", 2.0, "--max-dist", 5.0, "-o", tmp_path / "u.mtp")
    out = cli("relax", tmp_path / "u.mtp", tmp_path / "in.extxyz", tmp_path / "out.extxyz", "--species", "Cu,Pd",
              "--relax-cell", "--fmax", 0.02, "--learn", tmp_path / "run", "--walkers", 2, "--processes", "--no-progress",
              "--hold-fit-iterations", 30, "--refit-iterations", 50, "--validation-share", 0.2)
    summary = json.loads(out.stdout.split(": ", 1)[1])
    assert summary["converged"] == 10 and summary["reference_calls"] > 0
    assert not (tmp_path / "out.extxyz.partial").exists()
    relaxed = ase.io.read(tmp_path / "out.extxyz", index=":")
    assert [atoms.info["name"] for atoms in relaxed] == [atoms.info["name"] for atoms in structures]

    cli("hull", tmp_path / "out.extxyz", "--species", "Cu,Pd", "--verify", tmp_path / "run", "--window", 1e6,
        "--error", 1.0, "--relax-cell", "--fmax", 0.02, "--output", tmp_path / "verified.extxyz",
        "--table", tmp_path / "hull.csv", "--plot", tmp_path / "hull.png")
    verified = ase.io.read(tmp_path / "verified.extxyz", index=":")
    truth = [emt_relaxed(atoms, 0.02) for atoms in structures]
    ours, theirs = build_hull(verified, ["Cu", "Pd"]), build_hull(truth, ["Cu", "Pd"])
    assert all(atoms.info["verified"] for atoms in verified)  # a window of 1e6 x 1 meV/atom takes every one
    for mine, exact in zip(ours.points, theirs.points):  # the reference's own minimum, up to fmax
        assert abs(mine.formation_energy - exact.formation_energy) < 1e-3
    vertices = [sorted({round(p.fractions["Pd"], 3) for p in hull.on_hull()}) for hull in (ours, theirs)]
    assert vertices[0] == vertices[1]  # (two equal structures at one composition may both be on the hull)
    assert (tmp_path / "hull.png").stat().st_size > 0 and len((tmp_path / "hull.csv").read_text().splitlines()) == 11


@pytest.mark.processes
def test_bad_inputs_are_refused_with_what_is_wrong(tmp_path):
    (tmp_path / "empty.extxyz").write_text("")
    result = cli("relax", CU_MTP, tmp_path / "empty.extxyz", tmp_path / "out.extxyz", "--species", "Cu", check=False)
    assert result.returncode == 2 and "empty.extxyz" in result.stderr
    ase.io.write(tmp_path / "pd.extxyz", [bulk("Cu", cubic=True), cupd(0, 2)])
    result = cli("relax", CU_MTP, tmp_path / "pd.extxyz", tmp_path / "out.extxyz", "--species", "Cu", check=False)
    assert result.returncode == 2 and "structure 1" in result.stderr and "Pd" in result.stderr
    copper = bulk("Cu", cubic=True)
    copper.calc = EMT()
    copper.get_potential_energy()
    ase.io.write(tmp_path / "cu.extxyz", [copper])
    result = cli("hull", tmp_path / "cu.extxyz", "--species", "Cu,Pd", check=False)
    assert result.returncode == 2 and "no converged structure of pure Pd" in result.stderr


def test_derivative_structures_are_the_known_enumeration_at_vegards_volume():
    pytest.importorskip("icet")
    from collections import Counter

    from mtp_driver.screen.candidates import derivative_structures, perturbed

    structures = derivative_structures("fcc", ["Cu", "Pd"], 4)
    assert Counter(len(atoms) for atoms in structures) == {1: 2, 2: 2, 3: 6, 4: 19}  # Hart & Forcade 2008, fcc binary
    volume = {element: bulk(element).get_volume() / len(bulk(element)) for element in ("Cu", "Pd")}
    for atoms in structures:
        symbols = atoms.get_chemical_symbols()
        assert atoms.get_volume() == pytest.approx(sum(volume[s] for s in symbols), rel=1e-10)
    moved = perturbed(structures, rattle=0.02, strain=0.02, seed=1)
    assert all(a.get_chemical_symbols() == b.get_chemical_symbols() and not np.allclose(a.cell, b.cell)
               for a, b in zip(structures, moved))


def test_random_crystals_have_the_composition_a_space_group_no_close_contacts_and_vegards_volume(tmp_path):
    pytest.importorskip("pyxtal")
    from ase.spacegroup import Spacegroup
    from ase.spacegroup.symmetrize import check_symmetry

    from mtp_driver.screen.candidates import random_crystals

    structures = random_crystals(["Cu", "Pd"], [2, 2], 6, seed=1)
    volume = {element: bulk(element).get_volume() / len(bulk(element)) for element in ("Cu", "Pd")}
    assert [atoms.info["candidate"] for atoms in structures] == [f"random-{k}" for k in range(6)]
    for atoms in structures:
        assert sorted(atoms.get_chemical_symbols()) == ["Cu", "Cu", "Pd", "Pd"]
        assert atoms.get_volume() == pytest.approx(2 * volume["Cu"] + 2 * volume["Pd"], rel=1e-10)
        distances = atoms.get_all_distances(mic=True)
        assert distances[distances > 0].min() > 1.8  # Å; pyxtal's default tolerances gave 1.4
        # the group drawn or a supergroup (a few atoms in a low group's Wyckoff positions often have more symmetry)
        assert len(check_symmetry(atoms, 1e-3).rotations) >= Spacegroup(int(atoms.info["space_group"])).nsymop
    cli("candidates", tmp_path / "random.extxyz", "--species", "Cu,Pd", "--random", 3, "--counts", "1,3")
    written = ase.io.read(tmp_path / "random.extxyz", index=":")
    assert len(written) == 3 and all(atoms.get_chemical_formula() == "CuPd3" for atoms in written)
