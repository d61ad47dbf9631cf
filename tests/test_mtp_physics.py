"""Forces and stress are derivatives of the energy; the energy has the symmetries of physics."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import FITTED, QUATERNARY
from mtp_driver import MTPCalculator
from mtp_driver.calculator import CloseContactError
from mtp_driver.io.mtp_file import read_mtp

SPECIES = ["Nb", "Mo", "Ta", "W"]


@pytest.fixture(scope="module")
def calculator(shared_data):
    return MTPCalculator(QUATERNARY, species=SPECIES)


def alloy(seed=0, repeat=(2, 2, 2), triclinic=True, rattle=0.12):
    """A rattled 4-species bcc alloy; triclinic by a shear of the cell."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Mo", "bcc", a=3.2, cubic=True).repeat(repeat)
    atoms.set_chemical_symbols(rng.choice(SPECIES, len(atoms)))
    if triclinic:
        cell = atoms.cell.array.copy()
        cell[1] += 0.3 * cell[0] / np.linalg.norm(cell[0])
        cell[2] += [0.2, -0.25, 0.0]
        atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    return atoms


def energy(atoms, calculator):
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy()


def test_forces_are_minus_energy_gradient(calculator):
    atoms = alloy(seed=1)
    atoms.calc = calculator
    forces = atoms.get_forces()
    h = 1e-5
    for i in (0, 5, 11):
        for a in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, a] += h
            minus.positions[i, a] -= h
            numeric = -(energy(plus, calculator) - energy(minus, calculator)) / (2 * h)
            assert abs(numeric - forces[i, a]) < 2e-8  # eV/Å; finite-difference error is ~1e-9


def test_stress_is_strain_derivative(calculator):
    atoms = alloy(seed=2)
    atoms.calc = calculator
    stress = atoms.get_stress(voigt=False)
    volume = atoms.get_volume()
    h = 1e-6
    for a, b in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        values = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[a, b] += sign * h / 2
            strain[b, a] += sign * h / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            values.append(energy(strained, calculator))
        numeric = (values[0] - values[1]) / (2 * h) / volume
        assert abs(numeric - stress[a, b]) < 2e-9  # eV/Å³; finite-difference error is ~2e-10


def test_rotation_translation_permutation(calculator):
    atoms = alloy(seed=3)
    atoms.calc = calculator
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    site0 = atoms.get_potential_energies()

    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rotation.T)
    rotated.positions = atoms.positions @ rotation.T
    rotated.calc = calculator
    assert abs(rotated.get_potential_energy() - e0) < 1e-9 * len(atoms)
    assert np.allclose(rotated.get_forces(), f0 @ rotation.T, atol=1e-9)
    assert np.allclose(rotated.get_stress(voigt=False), rotation @ s0 @ rotation.T, atol=1e-10)

    shifted = atoms.copy()
    shifted.positions += [7.3, -2.1, 40.0]  # far outside the cell: images must be found anyway
    shifted.calc = calculator
    assert abs(shifted.get_potential_energy() - e0) < 1e-9 * len(atoms)
    assert np.allclose(shifted.get_forces(), f0, atol=1e-9)

    order = np.random.default_rng(1).permutation(len(atoms))
    permuted = atoms[order]
    permuted.calc = calculator
    assert np.allclose(permuted.get_potential_energies(), site0[order], atol=1e-10)
    assert np.allclose(permuted.get_forces(), f0[order], atol=1e-9)


def test_small_cell_equals_supercell(calculator):
    """A cell smaller than twice the cutoff (every image inside the cutoff counted) equals its supercell."""
    small = alloy(seed=4, repeat=(1, 1, 1))  # 2 atoms, 3.2 Å edges < 2 x 4.7 Å cutoff
    small.calc = calculator
    big = small.repeat((3, 2, 4))
    big.calc = calculator
    n = len(small)
    assert abs(big.get_potential_energy() / len(big) - small.get_potential_energy() / n) < 1e-12
    assert np.allclose(big.get_forces()[:n], small.get_forces(), atol=1e-10)
    assert np.allclose(big.get_stress(), small.get_stress(), atol=1e-12)


def test_open_and_mixed_boundaries(calculator):
    """Clusters (no periodicity) and slabs (periodic in x, y) give finite-difference-consistent forces."""
    cluster = alloy(seed=5, triclinic=False)
    cluster.pbc = False
    slab = alloy(seed=6, triclinic=False)
    slab.pbc = (True, True, False)
    for atoms in (cluster, slab):
        atoms.calc = calculator
        forces = atoms.get_forces()
        surface_atom = int(np.argmax(atoms.positions[:, 2]))
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[surface_atom, 2] += 1e-5
        minus.positions[surface_atom, 2] -= 1e-5
        numeric = -(energy(plus, calculator) - energy(minus, calculator)) / 2e-5
        assert abs(numeric - forces[surface_atom, 2]) < 1e-6
    # the cluster has fewer neighbours at the surface than the periodic crystal
    periodic = cluster.copy()
    periodic.pbc = True
    assert abs(energy(periodic, calculator) - cluster.get_potential_energy()) > 1.0
    assert np.allclose(cluster.get_forces().sum(axis=0), 0.0, atol=1e-9)


def test_single_species_calculator_matches_level16_file(shared_data):
    """The Li potential (level 16, one species) on a bcc crystal: zero forces by symmetry."""
    atoms = bulk("Li", "bcc", a=3.43, cubic=True).repeat(3)
    atoms.calc = MTPCalculator(FITTED / "Li.mtp", species=["Li"])
    assert np.abs(atoms.get_forces()).max() < 1e-10
    assert -2.0 < atoms.get_potential_energy() / len(atoms) < -1.5


def test_bad_inputs_give_clear_errors(calculator, shared_data):
    atoms = alloy(seed=7)
    foreign = atoms.copy()
    foreign[3].symbol = "Cu"
    foreign.calc = calculator
    with pytest.raises(ValueError, match=r"contains \['Cu'\].*species are"):
        foreign.get_potential_energy()

    broken = atoms.copy()
    broken.positions[2, 1] = np.nan
    broken.calc = calculator
    with pytest.raises(ValueError, match=r"non-finite positions for atoms \[2\]"):
        broken.get_potential_energy()

    crowded = atoms.copy()
    crowded.positions[1] = crowded.positions[0] + [0.5, 0.0, 0.0]
    crowded.calc = calculator
    with pytest.raises(CloseContactError, match="atoms 0 and 1 are 0.5000 Å apart"):
        crowded.get_potential_energy()

    with pytest.raises(ValueError, match="say which element"):
        MTPCalculator(QUATERNARY)
    with pytest.raises(ValueError, match="4 types"):
        MTPCalculator(QUATERNARY, species=["Nb", "Mo"])
    untrained = read_mtp(QUATERNARY).copy(radial_coeffs=None, moment_coeffs=None)
    with pytest.raises(ValueError, match="untrained"):
        MTPCalculator(untrained, species=SPECIES)

    molecule = Atoms("Mo2", positions=[[0, 0, 0], [0, 0, 2.5]])
    molecule.calc = calculator
    molecule.get_potential_energy()
    with pytest.raises(Exception, match="stress needs a periodic cell"):
        molecule.get_stress()


def test_generated_two_species_basis_forces_and_stress():
    """Kernels on our own generated tables (level 12, 2 species, random coefficients)."""
    from mtp_driver.mtp.basis import untrained_mtp

    rng = np.random.default_rng(3)
    base = untrained_mtp(12, 2, 2.0, 5.0, species=["Cu", "Ag"])
    mtp = base.copy(
        radial_coeffs=rng.normal(scale=0.05, size=(2, 2, base.radial_funcs_count, 8)),
        species_coeffs=np.array([-3.5, -2.8]),
        moment_coeffs=rng.normal(scale=0.1, size=base.alpha_scalar_moments),
    )
    calculator = MTPCalculator(mtp)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    atoms.symbols[rng.permutation(len(atoms))[:7]] = "Ag"
    atoms.rattle(0.1, seed=2)
    atoms.calc = calculator
    forces, stress = atoms.get_forces(), atoms.get_stress(voigt=False)
    for i, a in [(0, 0), (3, 2), (9, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, a] += 1e-5
        minus.positions[i, a] -= 1e-5
        numeric = -(energy(plus, calculator) - energy(minus, calculator)) / 2e-5
        assert abs(numeric - forces[i, a]) < 2e-8 * max(1.0, abs(forces[i, a]))
    values = []
    for sign in (1, -1):
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array @ (np.eye(3) + np.diag([sign * 1e-6, 0, 0])), scale_atoms=True)
        values.append(energy(strained, calculator))
    numeric = (values[0] - values[1]) / 2e-6 / atoms.get_volume()
    assert abs(numeric - stress[0, 0]) < 1e-7 * max(1.0, abs(stress[0, 0]))


def test_pairs_beyond_cutoff_in_the_list_change_nothing(calculator):
    """A neighbour list built with a longer cutoff (as a Verlet list would be) gives the same result."""
    from mtp_driver.mtp.evaluate import evaluate
    from mtp_driver.mtp.neighbors import build_neighbor_list

    atoms = alloy(seed=9)
    types = calculator.types_of(atoms)
    args = (atoms.positions, atoms.cell.array, atoms.pbc)
    exact = evaluate(calculator.mtp, types, build_neighbor_list(*args, calculator.mtp.max_dist), calculator.layout)
    longer = evaluate(calculator.mtp, types, build_neighbor_list(*args, calculator.mtp.max_dist + 1.5),
                      calculator.layout)
    assert abs(exact.energy - longer.energy) < 1e-10
    assert np.abs(exact.forces - longer.forces).max() < 1e-11


def test_a_reused_skin_list_gives_the_results_of_a_new_search():
    """Along an MD run the calculator's skin list is searched again only when an atom moved more than
    skin / 2 or the cell changed, and every step's results equal those of a calculator searching every time."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from mtp_driver.mtp.neighbors import SkinNeighborList

    atoms = alloy(seed=4)
    skin, fresh = MTPCalculator(QUATERNARY, species=SPECIES), MTPCalculator(QUATERNARY, species=SPECIES, skin=0.0)
    thermal = np.sqrt(atoms.get_masses()[:, None] * units.kB * 2000)  # momenta of 2000 K
    atoms.set_momenta(np.random.default_rng(1).normal(size=(len(atoms), 3)) * thermal)
    atoms.calc = skin
    dynamics = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    moved = 0.0
    start = atoms.positions.copy()
    for _ in range(30):
        dynamics.run(1)
        expected = fresh.evaluate(atoms.positions, atoms.cell.array, atoms.pbc, fresh.types_of(atoms))
        assert abs(atoms.get_potential_energy() - expected.energy) < 1e-10
        assert np.abs(atoms.get_forces() - expected.forces).max() < 1e-11
        assert np.abs(atoms.get_stress() - expected.stress).max() < 1e-12
        moved = max(moved, np.linalg.norm(atoms.positions - start, axis=1).max())
    assert moved > 0.3, "the run must move atoms beyond the skin to test a new search"
    assert 2 <= skin.neighbor_lists.searches < 15, skin.neighbor_lists.searches

    from mtp_driver.mtp.neighbors import closest_pair

    lists = SkinNeighborList(5.0, skin=0.3)
    lists.update(atoms.positions, atoms.cell.array, atoms.pbc)
    lists.update(atoms.positions + 0.086, atoms.cell.array, atoms.pbc)  # every atom moved 0.149 Å: reused
    assert lists.searches == 1
    shifted = atoms.positions.copy()
    shifted[3] += [0.0, 0.0, 0.151]  # one atom moved more than skin / 2
    found = lists.update(shifted, atoms.cell.array, atoms.pbc)
    assert lists.searches == 2
    jiggled = shifted + np.random.default_rng(5).uniform(-0.05, 0.05, shifted.shape)  # reused, pairs cross the cutoff
    for pairs in (found, lists.update(jiggled, atoms.cell.array, atoms.pbc),  # the filter's closest pair:
                  SkinNeighborList(5.0).update(shifted[:1], np.zeros((3, 3)), False)):  # the first of equals
        assert pairs.closest is not None and pairs.closest_pair() == closest_pair(pairs.vectors)
    lists.update(shifted, atoms.cell.array * 1.0001, atoms.pbc)  # another cell
    lists.update(shifted, atoms.cell.array * 1.0001, [True, True, False])  # another periodicity
    assert lists.searches == 4


@pytest.mark.parametrize("atoms, centres, box", [(400, 400, 18.0), (900, 300, 25.0), (300, 120, 1e4), (0, 0, 1.0)])
def test_an_open_structures_pairs_are_vesins(atoms, centres, box):
    """Our cell list for open structures (molecules, a domain's owned atoms among ghosts) lists exactly vesin's
    pairs of the first `centres` atoms, sorted by centre; a sparse cloud (bins enlarged) too."""
    from mtp_driver.mtp.neighbors import _sorted_pairs, open_pairs, pair_centers

    positions = np.random.default_rng(atoms).uniform(0.0, box, size=(atoms, 3))
    neighbors, offsets = open_pairs(positions, centres, 5.3)
    expected_neighbors, _, expected_offsets = _sorted_pairs(positions, np.zeros((3, 3)), False, 5.3, "ijS")
    stop = expected_offsets[centres]
    np.testing.assert_array_equal(offsets, expected_offsets[:centres + 1])
    centers, expected_centers = pair_centers(offsets), pair_centers(expected_offsets)
    assert sorted(zip(centers, neighbors)) == sorted(zip(expected_centers[:stop], expected_neighbors[:stop]))
    if atoms and box < 100:
        assert len(centers) > 10 * centres, "the test needs a dense structure"


@pytest.mark.parametrize("atoms, cell", [
    (500, [[18.0, 0.0, 0.0], [0.0, 19.0, 0.0], [0.0, 0.0, 20.0]]),
    (400, [[16.0, 0.0, 0.0], [5.0, 15.0, 0.0], [-4.0, 6.0, 17.0]]),  # triclinic: bins along the faces' normals
    (60, [[7.0, 0.0, 0.0], [1.0, 6.5, 0.0], [0.5, 0.5, 11.0]]),  # one and two bins: several images of one bin
    (5, [[40.0, 0.0, 0.0], [0.0, 40.0, 0.0], [0.0, 0.0, 40.0]]),  # sparse: bins merged
])
def test_a_periodic_cells_pairs_are_vesins(atoms, cell):
    """Our periodic cell list lists exactly vesin's pairs (i, j, image), sorted by centre, for atoms anywhere
    (outside the cell too) in orthogonal and triclinic cells, down to cells one cutoff thick."""
    from mtp_driver.mtp.neighbors import _sorted_pairs, pair_centers, periodic_grid, periodic_pairs

    cell = np.array(cell)
    rng = np.random.default_rng(atoms)
    positions = rng.uniform(-0.5, 1.5, size=(atoms, 3)) @ cell
    bins = periodic_grid(cell, atoms, 5.3)
    assert bins.min() >= 1
    neighbors, shift_vectors, offsets = periodic_pairs(positions, cell, bins, 5.3)
    expected_neighbors, shifts, expected_offsets = _sorted_pairs(positions, cell, True, 5.3, "ijS")
    np.testing.assert_array_equal(offsets, expected_offsets)
    centers = expected_centers = pair_centers(offsets)
    images = np.rint(shift_vectors @ np.linalg.inv(cell)).astype(int)
    np.testing.assert_allclose(images @ cell, shift_vectors, atol=1e-9)
    assert sorted(zip(centers, neighbors, map(tuple, images))) == \
        sorted(zip(expected_centers, expected_neighbors, map(tuple, shifts)))
    assert len(centers) > 5 * atoms or atoms < 10, "the test needs a dense structure"
    assert periodic_grid(np.diag([30.0, 30.0, 5.0]), 100, 5.3).min() == 0  # thinner than the cutoff: vesin's


def test_results_do_not_depend_on_the_threads(calculator):
    """The threads take blocks of atoms as they come free, so which thread computes which atom changes from
    call to call: energies, forces and stress are bit-for-bit those of one thread, every time."""
    import numba

    threads = numba.get_num_threads()
    if threads < 2:
        pytest.skip("Numba has one thread here: nothing to compare")
    atoms = alloy(seed=7, repeat=(5, 5, 4))  # 200 atoms: several blocks per thread
    atoms.calc = calculator
    try:
        numba.set_num_threads(1)
        serial = (atoms.get_potential_energy(), atoms.get_forces().copy(), atoms.get_stress().copy())
    finally:
        numba.set_num_threads(threads)
    for _ in range(5):
        calculator.reset()
        assert atoms.get_potential_energy() == serial[0]
        assert np.array_equal(atoms.get_forces(), serial[1]) and np.array_equal(atoms.get_stress(), serial[2])


def test_forces_and_strain_are_the_sums_of_the_pair_gradients(calculator):
    """The kernel's site sums and the scatter give F_i = sum_p g_p - sum_q g_q (pairs p from i, q to i) and
    W = sum_p g_p d_p^T of the kernel's own pair gradients g (to the rounding of such sums)."""
    import numba

    from mtp_driver.mtp.kernels import forces_and_virial, site_energies_and_gradients
    from mtp_driver.mtp.neighbors import build_neighbor_list

    mtp = calculator.mtp
    atoms = alloy(seed=3, repeat=(3, 3, 3))
    pairs = build_neighbor_list(atoms.positions, atoms.cell.array, True, mtp.max_dist)
    types = calculator.types_of(atoms)
    n_atoms, n_pairs = len(atoms), len(pairs.neighbors)
    site_energies, site_forces, site_virials = np.empty(n_atoms), np.empty((n_atoms, 3)), np.empty((n_atoms, 3, 3))
    gradients = np.empty((n_pairs, 3))
    site_energies_and_gradients(types, pairs.offsets, pairs.neighbors, pairs.vectors, float(mtp.min_dist),
                                float(mtp.max_dist), float(mtp.scaling), mtp.radial_coeffs, mtp.species_coeffs,
                                mtp.moment_coeffs, calculator.layout, pairs.max_neighbors, site_energies, site_forces,
                                site_virials, gradients, np.empty((0, 0)), numba.get_num_threads())
    forces, strain = forces_and_virial(n_atoms, pairs.neighbors, gradients, site_forces, site_virials)
    expected = np.zeros((n_atoms, 3))
    np.add.at(expected, pairs.centers, gradients)
    np.add.at(expected, pairs.neighbors, -gradients)
    force_scale = np.zeros((n_atoms, 3))  # the rounding of sums of this size
    np.add.at(force_scale, pairs.centers, np.abs(gradients))
    np.add.at(force_scale, pairs.neighbors, np.abs(gradients))
    assert np.all(np.abs(forces - expected) <= 1e-14 * force_scale)
    strain_scale = np.abs(gradients).T @ np.abs(pairs.vectors)
    assert np.all(np.abs(strain - gradients.T @ pairs.vectors) <= 1e-14 * strain_scale)
    assert np.abs(forces).max() > 0.1 and np.abs(strain).max() > 0.1  # a rattled alloy: nothing vanishes
