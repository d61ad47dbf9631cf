"""The generated MTP basis: MLIP's sizes at every level, the very functions of MLIP's own tables,
rotation invariance and well-formed tables. Evaluated with a plain NumPy reference below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtp_driver.io import read_mtp, write_mtp
from mtp_driver.mtp.basis import generate_basis, untrained_mtp
from mtp_driver.mtp.model import basis_level

FITTED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlearn_zuo2020" / "fitted_mtp"

LEVELS = list(range(2, 29, 2))
SCALAR_COUNTS = dict(zip(LEVELS, [1, 2, 5, 9, 16, 29, 52, 92, 163, 288, 500, 864, 1464, 2445]))
RADIAL_FUNCS_COUNTS = dict(zip(LEVELS, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 6, 6]))
MLIP_FILES = {"Li": 16, "Cu": 20, "Mo": 20, "Ni": 20, "Si": 24, "Ge": 24}


def random_neighbourhoods(rng, samples=3, neighbours=9, radial_funcs=6):
    """Unit vectors (S, N, 3) and arbitrary values of the radial functions (S, K, N)."""
    vectors = rng.normal(size=(samples, neighbours, 3))
    unit_vectors = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    return unit_vectors, rng.normal(size=(samples, radial_funcs, neighbours))


def scalar_values(basic, times, mapping, moments_count, unit_vectors, radial_values) -> np.ndarray:
    """Scalar basis functions of MLIP-format tables on S neighbourhoods at once: (n_scalars, S)."""
    mu, a, b, c = basic.T
    x, y, z = (unit_vectors[:, None, :, axis] for axis in range(3))  # (S, 1, N)
    monomial = x ** a[:, None] * y ** b[:, None] * z ** c[:, None]  # (S, n_basic, N)
    moments = np.zeros((moments_count, len(unit_vectors)))
    moments[: len(basic)] = (radial_values[:, mu, :] * monomial).sum(axis=-1).T
    p, q, mult, k = times.T
    # Row order equals evaluation layer by layer when no row reads a moment that a later row writes.
    last_write = np.full(moments_count, -1)
    np.maximum.at(last_write, k, np.arange(len(k)))
    assert np.all(last_write[p] < np.arange(len(k))) and np.all(last_write[q] < np.arange(len(k)))
    depth = np.zeros(moments_count, dtype=np.int64)
    while True:
        previous = depth.copy()
        np.maximum.at(depth, k, 1 + np.maximum(depth[p], depth[q]))
        if np.array_equal(depth, previous):
            break
    for layer in range(1, depth.max() + 1):
        rows = depth[k] == layer
        np.add.at(moments, k[rows], mult[rows, None] * moments[p[rows]] * moments[q[rows]])
    return moments[mapping]


def generated_values(level, unit_vectors, radial_values):
    basis = generate_basis(level)
    return scalar_values(basis.alpha_index_basic, basis.alpha_index_times, basis.alpha_moment_mapping,
                         basis.alpha_moments_count, unit_vectors, radial_values)


@pytest.mark.parametrize("level", LEVELS)
def test_sizes_match_mlip(level):
    basis = generate_basis(level)
    assert len(basis.alpha_moment_mapping) == SCALAR_COUNTS[level]
    assert basis.radial_funcs_count == RADIAL_FUNCS_COUNTS[level]
    assert basis_level(basis.alpha_index_basic, basis.alpha_index_times, basis.alpha_moment_mapping) == level


@pytest.mark.parametrize(("level", "basic_count"), [(16, 130), (24, 581)])
def test_basic_moment_counts(level, basic_count):
    assert len(generate_basis(level).alpha_index_basic) == basic_count


@pytest.mark.parametrize("level", LEVELS)
def test_tables_are_well_formed(level):
    basis = generate_basis(level)
    basic, times, mapping = basis.alpha_index_basic, basis.alpha_index_times, basis.alpha_moment_mapping
    n_basic, count = len(basic), basis.alpha_moments_count
    assert basic[:, 0].max() == basis.radial_funcs_count - 1 and basic.min() >= 0
    assert len(np.unique(basic, axis=0)) == n_basic
    p, q, mult, k = times.T
    assert np.all(k > p) and np.all(k > q), "a product must come after both of its factors"
    assert np.all(k >= n_basic), "products only write non-basic moments"
    assert np.all(mult >= 1)
    assert set(k.tolist()) == set(range(n_basic, count)), "every non-basic moment is computed"
    assert np.all((0 <= mapping) & (mapping < count)) and len(set(mapping.tolist())) == len(mapping)


@pytest.mark.parametrize("level", LEVELS)
def test_every_basis_function_is_rotation_invariant(level):
    rng = np.random.default_rng(level)
    unit_vectors, radial_values = random_neighbourhoods(rng)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    values = generated_values(level, unit_vectors, radial_values)
    rotated = generated_values(level, unit_vectors @ rotation.T, radial_values)
    np.testing.assert_allclose(rotated, values, rtol=1e-10, atol=1e-10 * np.abs(values).max())


def matching(values: np.ndarray, reference: np.ndarray, rtol: float) -> list[int]:
    """For each row of `values`, the rows of `reference` equal to it in every sample within rtol."""
    scale = np.abs(values).max(axis=1)
    distance = np.abs(values[:, None, :] - reference[None, :, :]).max(axis=2)
    return [np.flatnonzero(row <= rtol * s).tolist() for row, s in zip(distance, scale)]


@pytest.mark.parametrize("element", MLIP_FILES)
def test_generated_basis_spans_the_functions_of_mlip_tables(element):
    """Each generated function equals exactly one of MLIP's, and all of MLIP's are matched."""
    mlip = read_mtp(FITTED / f"{element}.mtp")
    level = MLIP_FILES[element]
    assert mlip.level == level
    unit_vectors, radial_values = random_neighbourhoods(np.random.default_rng(7))
    ours = generated_values(level, unit_vectors, radial_values)
    theirs = scalar_values(mlip.alpha_index_basic, mlip.alpha_index_times, mlip.alpha_moment_mapping,
                           mlip.alpha_moments_count, unit_vectors, radial_values)
    matches = matching(ours, theirs, rtol=1e-10)
    assert all(len(found) == 1 for found in matches), "every generated function equals exactly one of MLIP's"
    assert sorted(found[0] for found in matches) == list(range(len(theirs))), "a permutation of MLIP's functions"


def test_distinct_functions_differ_clearly():
    """The matching above is meaningful: no two generated functions are close to each other."""
    unit_vectors, radial_values = random_neighbourhoods(np.random.default_rng(3))
    values = generated_values(24, unit_vectors, radial_values)
    assert all(found == [i] for i, found in enumerate(matching(values, values, rtol=1e-6)))


@pytest.mark.parametrize(("level", "species_count", "parameters"), [
    (16, 1, 1 * 4 * 8 + 1 + 92),  # S^2 K R + S + scalars
    (20, 2, 4 * 5 * 8 + 2 + 288),
    (28, 3, 9 * 6 * 8 + 3 + 2445),
])
def test_untrained_mtp(level, species_count, parameters):
    species = ["Cu", "Ag", "Au"][:species_count]
    mtp = untrained_mtp(level, species_count, 2.0, 5.0, species=species)
    assert mtp.parameter_count == parameters
    assert not mtp.is_trained and mtp.radial_coeffs is None and mtp.moment_coeffs is None
    assert (mtp.level, mtp.species, mtp.min_dist, mtp.max_dist, mtp.radial_basis_size) == (
        level, tuple(species), 2.0, 5.0, 8)
    np.testing.assert_array_equal(mtp.alpha_index_times, generate_basis(level).alpha_index_times)


def test_untrained_mtp_survives_a_file_round_trip(tmp_path):
    mtp = untrained_mtp(12, 2, 1.5, 4.5, radial_basis_size=6)
    write_mtp(mtp, tmp_path / "untrained.mtp")
    again = read_mtp(tmp_path / "untrained.mtp")
    for name in ("alpha_index_basic", "alpha_index_times", "alpha_moment_mapping"):
        np.testing.assert_array_equal(getattr(again, name), getattr(mtp, name))
    assert (again.alpha_moments_count, again.radial_funcs_count, again.level) == (
        mtp.alpha_moments_count, mtp.radial_funcs_count, 12)


def test_generation_is_cached_and_shared_tables_are_read_only():
    basis = generate_basis(20)
    assert generate_basis(20) is basis
    with pytest.raises(ValueError):
        basis.alpha_index_times[0, 0] = 0


@pytest.mark.parametrize("level", [0, 7, 30])
def test_unsupported_levels_are_refused(level):
    with pytest.raises(ValueError, match="level"):
        generate_basis(level)
