"""Parameter rows dV_i/dtheta of the grade kernel: against finite differences and the plain kernel."""

import numpy as np
import pytest
from ase.build import bulk

from test_fit_gradients import SPECIES, random_potential
from mtp_driver.fit.loss import parameters_of, with_parameters
from mtp_driver.mtp.evaluate import evaluate
from mtp_driver.mtp.neighbors import build_neighbor_list


def rattled_alloy(seed=1):
    rng = np.random.default_rng(seed)
    atoms = bulk("Mo", "bcc", a=3.15, cubic=True).repeat((2, 2, 2))
    atoms.set_chemical_symbols(rng.choice(SPECIES, len(atoms)))
    atoms.positions += rng.normal(scale=0.15, size=atoms.positions.shape)
    return atoms, (atoms.numbers == 41).astype(np.int64)  # Nb is type 1


def test_site_rows_equal_finite_differences_of_site_energies():
    mtp = random_potential(level=8)
    atoms, types = rattled_alloy()
    neighbor_list = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, mtp.max_dist)
    rows = np.empty((len(atoms), mtp.parameter_count))
    evaluate(mtp, types, neighbor_list, site_rows=rows)
    flat = parameters_of(mtp)
    assert rows.shape == (len(atoms), len(flat))
    rng = np.random.default_rng(2)
    checked = np.concatenate([rng.choice(mtp.radial_coeffs.size, 12, replace=False),
                              mtp.radial_coeffs.size + np.arange(2),
                              mtp.radial_coeffs.size + 2 + rng.choice(mtp.alpha_scalar_moments, 6, replace=False)])
    for k in checked:
        h = 1e-5 * max(1.0, abs(flat[k]))
        site = []
        for sign in (1, -1):
            shifted = flat.copy()
            shifted[k] += sign * h
            site.append(evaluate(with_parameters(mtp, shifted), types, neighbor_list).site_energies)
        numeric = (site[0] - site[1]) / (2 * h)
        assert np.allclose(rows[:, k], numeric, rtol=1e-6, atol=1e-8), k


def test_energy_and_forces_are_those_of_the_plain_kernel():
    mtp = random_potential(level=10, seed=3)
    atoms, types = rattled_alloy(seed=4)
    neighbor_list = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, mtp.max_dist)
    plain = evaluate(mtp, types, neighbor_list)
    rows = np.empty((len(atoms), mtp.parameter_count))
    with_rows = evaluate(mtp, types, neighbor_list, site_rows=rows)
    assert with_rows.energy == pytest.approx(plain.energy, abs=1e-12)
    assert np.allclose(with_rows.forces, plain.forces, atol=1e-12, rtol=0)
    assert np.allclose(with_rows.strain_derivative, plain.strain_derivative, atol=1e-11, rtol=0)
    # linear in the species and moment coefficients: V_i = row_i . theta on those columns
    linear = rows[:, mtp.radial_coeffs.size:] @ np.concatenate([mtp.species_coeffs, mtp.moment_coeffs])
    assert np.allclose(linear, plain.site_energies, atol=1e-10)
