"""The training loss: analytic gradients against finite differences, the linear design against
the model, and the data conversions the loss relies on."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import SHARED
from mtp_driver.calculator import MTPCalculator
from mtp_driver.fit import LossWeights
from mtp_driver.fit.dataset import make_batch
from mtp_driver.fit.linear import LinearLeastSquares, _folded, _square, least_squares
from mtp_driver.fit.loss import Objective, parameters_of, predict, radial_penalty, with_parameters
from mtp_driver.fit.mlearn import read_mlearn
from mtp_driver.fit.parallel import Reducer
from mtp_driver.mtp.basis import untrained_mtp

SPECIES = ("Mo", "Nb")


def random_potential(level=10, seed=0):
    rng = np.random.default_rng(seed)
    mtp = untrained_mtp(level, len(SPECIES), 2.0, 4.5, species=SPECIES)
    S, K, R = mtp.species_count, mtp.radial_funcs_count, mtp.radial_basis_size
    return mtp.copy(radial_coeffs=rng.normal(size=(S, S, K, R)), species_coeffs=rng.normal(size=S),
                    moment_coeffs=0.01 * rng.normal(size=mtp.alpha_scalar_moments), scaling=0.1)


def labelled_alloys(count=3, seed=1):
    """Rattled binary bcc cells with random labels (the loss does not care where labels come from)."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(count):
        atoms = bulk("Mo", "bcc", a=3.15, cubic=True).repeat((2, 2, 1 + k % 2))
        atoms.set_chemical_symbols(rng.choice(SPECIES, len(atoms)))
        atoms.positions += rng.normal(scale=0.15, size=atoms.positions.shape)
        atoms.calc = SinglePointCalculator(atoms, energy=3 * rng.normal(), forces=rng.normal(size=(len(atoms), 3)),
                                           stress=0.01 * rng.normal(size=6))
        images.append(atoms)
    images[1].calc.results.pop("stress")  # a configuration without a stress label
    return images


def finite_difference(objective, x, i, step):
    """Fourth-order central difference of the loss along parameter i."""
    h = step * max(1.0, abs(x[i]))

    def loss(shift):
        shifted = x.copy()
        shifted[i] += shift
        return objective(shifted, gradient=False).loss

    return (8 * (loss(h) - loss(-h)) - (loss(2 * h) - loss(-2 * h))) / (12 * h)


@pytest.mark.parametrize("weighting", ["vibrations", "molecules", "structures"])
def test_loss_gradient_equals_finite_differences(weighting):
    mtp = random_potential()
    images = labelled_alloys()
    batch = make_batch(images, SPECIES, mtp.max_dist)
    objective = Objective(mtp, batch, LossWeights(1.0, 0.5, 0.3, weighting), len(images), penalty_weight=1e-3)
    x = parameters_of(mtp)
    evaluation = objective(x)
    assert all(evaluation.terms > 0)  # energy, force, stress and penalty all contribute
    gradient = evaluation.gradient
    # every radial coefficient of one species pair, and a spread of the others
    checked = list(range(0, 2 * mtp.radial_basis_size)) + list(range(0, len(x), 7)) + [len(x) - 1]
    for i in checked:
        numeric = finite_difference(objective, x, i, 1e-4)
        assert abs(numeric - gradient[i]) <= 1e-6 * abs(gradient[i]) + 1e-9 * np.abs(gradient).max(), i


def test_penalty_gradient_and_minimum():
    mtp = random_potential()
    value, gradient = radial_penalty(mtp, 0.5)
    h = 1e-6
    for index in [(0, 0, 0, 0), (1, 0, 2, 5), (1, 1, 1, 7)]:
        plus, minus = mtp.copy(), mtp.copy()
        plus.radial_coeffs[index] += h
        minus.radial_coeffs[index] -= h
        numeric = (radial_penalty(plus, 0.5)[0] - radial_penalty(minus, 0.5)[0]) / (2 * h)
        assert abs(numeric - gradient[index]) < 1e-6 * max(1.0, abs(gradient[index]))
    # orthonormal radial vectors (over species pairs and basis functions) have no penalty
    K, R = mtp.radial_funcs_count, mtp.radial_basis_size
    vectors = np.linalg.qr(np.random.default_rng(3).normal(size=(4 * R, K)))[0].T.reshape(K, 2, 2, R)
    assert radial_penalty(mtp.copy(radial_coeffs=np.moveaxis(vectors, 0, 2).copy()), 1.0)[0] < 1e-28


def test_predictions_equal_calculator():
    mtp = random_potential()
    images = labelled_alloys()
    batch = make_batch(images, SPECIES, mtp.max_dist)
    energy, forces, virial = predict(mtp, batch)
    calculator = MTPCalculator(mtp)
    for c, atoms in enumerate(images):
        atoms = atoms.copy()
        atoms.calc = calculator
        assert energy[c] == pytest.approx(atoms.get_potential_energy(), rel=1e-13)
        own = slice(batch.atom_starts[c], batch.atom_starts[c + 1])
        np.testing.assert_allclose(forces[own], atoms.get_forces(), rtol=0, atol=1e-12)
        stress = atoms.get_stress(voigt=False) * atoms.get_volume()
        np.testing.assert_allclose(0.5 * (virial[c] + virial[c].T), stress, rtol=0, atol=1e-12)


def test_linear_step_is_the_exact_least_squares_minimum():
    mtp = random_potential()
    images = labelled_alloys(count=4)
    batch = make_batch(images, SPECIES, mtp.max_dist)
    objective = Objective(mtp, batch, LossWeights(1.0, 0.5, 0.3), len(images), penalty_weight=0.0)
    x = parameters_of(mtp)
    linear = slice(len(x) - mtp.species_count - mtp.alpha_scalar_moments, len(x))
    shards = np.array([0, 0, 1, 1])
    problem = least_squares(mtp, objective.layout, batch, objective.config_weights, shards, 2, Reducer())
    before = objective(x)
    assert problem.loss(x[linear]) == pytest.approx(before.loss, rel=1e-10)
    x[linear] = problem.solve()
    after = objective(x)
    assert after.loss < 0.1 * before.loss
    assert np.abs(after.gradient[linear]).max() < 1e-7 * np.abs(before.gradient[linear]).max()


def test_linear_solve_keeps_the_precision_normal_equations_lose():
    """A design with singular values from 1 down to 1e-8 and two exactly dependent columns, folded
    in row blocks like the shards: the solve reaches the true least-squares minimum, which the
    normal equations (condition number 1e16) cannot resolve."""
    rng = np.random.default_rng(3)
    rows, columns = 400, 30
    left = np.linalg.qr(rng.normal(size=(rows, columns - 2)))[0]
    right = np.linalg.qr(rng.normal(size=(columns - 2, columns - 2)))[0]
    design = (left * np.logspace(0, -8, columns - 2)) @ right
    design = np.column_stack([design, design[:, :1] * 2.0, design[:, 1:2] - design[:, 2:3]])
    target = design @ rng.normal(size=columns) + 1e-9 * rng.normal(size=rows)
    factor = np.zeros((0, columns + 1))
    for block in np.array_split(np.arange(rows), 7):
        factor = _folded(factor, [(design[block], target[block])])
    problem = LinearLeastSquares(_square(factor, columns + 1))
    best = np.linalg.lstsq(design, target, rcond=None)[0]
    minimum = float(np.sum((design @ best - target) ** 2))
    assert problem.loss(best) == pytest.approx(minimum, rel=1e-9)
    solution = problem.solve(ridge=0.0)
    assert float(np.sum((design @ solution - target) ** 2)) == pytest.approx(minimum, rel=1e-6)
    gram_solution = np.linalg.solve(design.T @ design + 1e-10 * np.eye(columns), design.T @ target)
    assert float(np.sum((design @ gram_solution - target) ** 2)) > 2.0 * minimum


def test_with_parameters_round_trip():
    mtp = random_potential()
    copy = with_parameters(mtp, parameters_of(mtp))
    for name in ("radial_coeffs", "species_coeffs", "moment_coeffs"):
        np.testing.assert_array_equal(getattr(copy, name), getattr(mtp, name))


@pytest.mark.parametrize("element", ["Mo", "Li"])
def test_mlearn_stress_order_and_sign(shared_data, element):
    """A sheared Elastic cell: the shear stress sits in the component of the strain, and the
    compressed cells (negative strain) are under compression (negative ASE stress)."""
    images = read_mlearn(SHARED / "mlearn_zuo2020" / element / "training.json.xz")
    assert all(atoms.calc.results["energy"] < 0 for atoms in images)
    checked = 0
    for atoms in images:
        if atoms.info["group"] != "Elastic" or len(atoms) < 2:
            continue
        shear = np.abs(atoms.cell.array - np.diag(np.diag(atoms.cell.array)))
        if shear.max() < 1e-3:
            continue
        a, b = np.unravel_index(np.argmax(shear + shear.T), (3, 3))
        voigt = {(1, 2): 3, (2, 1): 3, (0, 2): 4, (2, 0): 4, (0, 1): 5, (1, 0): 5}[(a, b)]
        stress = np.abs(atoms.get_stress()[3:])
        assert np.argmax(stress) + 3 == voigt
        checked += 1
    assert checked >= 3
