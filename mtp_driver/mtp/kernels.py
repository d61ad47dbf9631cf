"""Numba kernels: site energies and their gradients with respect to neighbour vectors.

Conventions: neighbours come as a full list sorted by central atom (CSR: ``offsets[i]`` to
``offsets[i+1]``), ``vectors[p] = r_j - r_i`` in Å. ``pair_gradients[p] = dE_i / d vectors[p]``
in eV/Å, from which forces and the virial follow by a scatter (`forces_and_virial`).

Optionally the same pass fills the parameter Jacobian of the site energies (for extrapolation
grades): the row of atom i is ``dV_i/dtheta`` over the flat parameter vector
``[radial_coeffs.ravel(), species_coeffs, moment_coeffs]`` (MLIP's order, see
`parameter_gradients.parameter_offsets`):

* species coefficients: 1 at the atom's own type (dimensionless);
* moment coefficients: the basis function values ``B_s(i) = M_mapping[s](i)`` (dimensionless);
* radial coefficient ``c[a, b, mu, beta]`` (a = type of i): ``sum over neighbours j of type b of
  Q_beta(r_ij) * sum_m (dV_i/dM_basic[mu, m]) u_ij^m`` in eV, where ``dV_i/dM`` is the adjoint that the
  force pass computes anyway, so the row costs one more multiply-add per Chebyshev polynomial.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import simd
from .simd import LANES  # atoms whose moment products are contracted together, one SIMD lane each

BLOCK = 32  # atoms per parallel work item: amortises scratch allocation (a multiple of LANES)


@njit(cache=True, fastmath=False, inline="always")
def chebyshev_radial_basis(r, min_dist, max_dist, scaling, values, derivatives):
    """MLIP's RBChebyshev: scaling * T_beta(xi) * (r - max_dist)^2 and d/dr, by the Chebyshev recursion
    applied to the products (as MLIP does, so rounding follows MLIP)."""
    size = values.shape[0]
    ksi_per_r = 2.0 / (max_dist - min_dist)
    ksi = (2.0 * r - (min_dist + max_dist)) / (max_dist - min_dist)
    cut = r - max_dist
    values[0] = scaling * (cut * cut)
    derivatives[0] = scaling * (2.0 * cut)
    if size > 1:
        values[1] = scaling * (ksi * cut * cut)
        derivatives[1] = scaling * (ksi_per_r * cut * cut + 2.0 * ksi * cut)
    for k in range(2, size):
        values[k] = 2.0 * ksi * values[k - 1] - values[k - 2]
        derivatives[k] = 2.0 * (ksi_per_r * values[k - 1] + ksi * derivatives[k - 1]) - derivatives[k - 2]


@njit(cache=True, fastmath=False, inline="always")
def neighbour_features(p, center_type, neighbor_types, vectors, min_dist, max_dist, scaling, radial_coeffs,
                       layout, rb_values, rb_derivatives, radial, radial_deriv, monomials, unit):
    """Radial functions f_mu(r), f'_mu(r) and unit-vector monomials of one neighbour; returns 1/r,
    or 0 beyond the cutoff (then nothing is computed)."""
    dx, dy, dz = vectors[p, 0], vectors[p, 1], vectors[p, 2]
    r = np.sqrt(dx * dx + dy * dy + dz * dz)
    n_radial = radial.shape[0]
    if r >= max_dist:
        return 0.0
    chebyshev_radial_basis(r, min_dist, max_dist, scaling, rb_values, rb_derivatives)
    tj = neighbor_types[p]
    for mu in range(n_radial):
        value = 0.0
        deriv = 0.0
        for beta in range(rb_values.shape[0]):
            c = radial_coeffs[center_type, tj, mu, beta]
            value += c * rb_values[beta]
            deriv += c * rb_derivatives[beta]
        radial[mu] = value
        radial_deriv[mu] = deriv
    inv_r = 1.0 / r
    unit[0] = dx * inv_r
    unit[1] = dy * inv_r
    unit[2] = dz * inv_r
    parent = layout.monomial_parent
    axis = layout.monomial_axis
    monomials[0] = 1.0
    for m in range(1, monomials.shape[0]):
        monomials[m] = monomials[parent[m]] * unit[axis[m]]
    return inv_r


@njit(cache=True, fastmath=False, inline="always")
def contract_moments(moments, layout):
    """Product moments in evaluation order: M_k = sum over its terms of mult * M_p * M_q."""
    start, left, right, mult = layout.product_start, layout.product_left, layout.product_right, layout.product_mult
    targets = layout.product_targets
    one = np.uint64(1)
    for k in range(np.uint64(targets.shape[0])):
        total = 0.0
        for t in range(start[k], start[k + one]):
            total += mult[t] * moments[left[t]] * moments[right[t]]
        moments[targets[k]] = total


@njit(cache=True, fastmath=False, inline="always")
def contract_moment_lanes(moments, layout):
    """`contract_moments` for LANES atoms at once, moments[k, lane]: the index tables are read once
    for all lanes, and each lane rounds exactly as the one-atom version (which the training design
    matrix keeps: it is vectorised over the neighbour directions instead)."""
    start, left, right, mult = layout.product_start, layout.product_left, layout.product_right, layout.product_mult
    targets = layout.product_targets
    one = np.uint64(1)
    for k in range(np.uint64(targets.shape[0])):
        total = simd.broadcast(0.0)
        for t in range(start[k], start[k + one]):
            term = simd.multiply(simd.multiply(simd.broadcast(mult[t]), simd.load_row(moments, left[t])),
                                 simd.load_row(moments, right[t]))
            total = simd.add(total, term)
        simd.store_row(moments, targets[k], total)


@njit(cache=True, fastmath=False, inline="always")
def backpropagate_contraction_lanes(moments, adjoint, layout):
    """Reverse pass through the products, LANES atoms at once (see `contract_moment_lanes`): adjoint of
    each factor from the adjoint of its product."""
    start, left, right, mult = layout.product_start, layout.product_left, layout.product_right, layout.product_mult
    targets = layout.product_targets
    n_targets = np.uint64(targets.shape[0])
    one = np.uint64(1)
    for kk in range(n_targets):
        k = n_targets - one - kk
        g = simd.load_row(adjoint, targets[k])
        for t in range(start[k], start[k + one]):
            gm = simd.multiply(g, simd.broadcast(mult[t]))
            a, b = left[t], right[t]  # separate read-modify-writes: a == b for squares
            simd.store_row(adjoint, a, simd.add(simd.load_row(adjoint, a),
                                                simd.multiply(gm, simd.load_row(moments, b))))
            simd.store_row(adjoint, b, simd.add(simd.load_row(adjoint, b),
                                                simd.multiply(gm, simd.load_row(moments, a))))


@njit(cache=True, fastmath={"reassoc", "contract"})
def monomial_sums(adjoint, raised_x, raised_y, raised_z, monomials, length, raised_length):
    """For one radial function and one neighbour: sum_m A[m] u^m and its derivatives along the unit-vector
    components, sum_m A[m] d(u^m)/du_x = sum_l raised_x[l] u^l (and y, z). Reassociation (measured: same
    values to 1e-14 relative) lets these dot products vectorise."""
    value = 0.0
    gx = 0.0
    gy = 0.0
    gz = 0.0
    for m in range(raised_length):
        u = monomials[m]
        value += adjoint[m] * u
        gx += raised_x[m] * u
        gy += raised_y[m] * u
        gz += raised_z[m] * u
    for m in range(raised_length, length):
        value += adjoint[m] * monomials[m]
    return value, gx, gy, gz


@njit(cache=True, fastmath=False, inline="always")
def site_scratch(layout, n_radial, n_rb, max_neighbors):
    """Per-thread work arrays of `site_energies_and_gradients` (allocated once per block of atoms); the
    neighbour features are kept per lane until the lane's adjoints are known."""
    n_mono = layout.monomial_parent.shape[0]
    return (np.zeros((layout.moments_count, LANES)), np.empty((layout.moments_count, LANES)),  # moments, adjoint
            np.empty((n_radial, n_mono)),  # basic moments, then their adjoints, as [mu, monomial]
            np.empty((3, n_radial, n_mono)),  # the adjoints moved to the lowered monomials, per axis
            np.empty((LANES, max_neighbors, n_radial)), np.empty((LANES, max_neighbors, n_radial)),  # f_mu, f'_mu
            np.empty((LANES, max_neighbors, n_mono)),  # u^m
            np.empty((LANES, max_neighbors)), np.empty((LANES, max_neighbors, 3)),  # 1/r, u
            np.empty((LANES, max_neighbors, n_rb)), np.empty(n_rb))  # Chebyshev values, derivatives


@njit(cache=True, fastmath=False, inline="always")
def site_basic_moments(ti, start, count, neighbor_types, vectors, min_dist, max_dist, scaling, radial_coeffs,
                       layout, rb_values, rb_derivatives, radial, radial_deriv, monomials, units, inv_r, dense):
    """Forward pass of one site up to the basic moments, dense[mu, monomial]; keeps the neighbour features."""
    prefix = layout.prefix_length
    dense[:, :] = 0.0
    for jj in range(count):
        inv_r[jj] = neighbour_features(start + jj, ti, neighbor_types, vectors, min_dist, max_dist, scaling,
                                       radial_coeffs, layout, rb_values[jj], rb_derivatives, radial[jj],
                                       radial_deriv[jj], monomials[jj], units[jj])
        if inv_r[jj] == 0.0:  # beyond the cutoff (Verlet skin): its monomials were not computed
            continue
        for mu in range(radial.shape[1]):
            f = radial[jj, mu]
            for m in range(prefix[mu]):
                dense[mu, m] += f * monomials[jj, m]


@njit(cache=True, fastmath=False, inline="always")
def raise_adjoints(adjoint, lane, layout, dense, raised):
    """Basic-moment adjoints of one lane into dense[mu, monomial] (prefix monomials that are no basic moment
    of mu weigh nothing) and, per axis, raised[ax, mu, l] = power * dense[mu, l + e_ax]: the derivative
    d(u^m)/du_ax = power * u^(m - e_ax) moved onto the lower monomial, so gradients are dense dot products."""
    dense[:, :] = 0.0
    for b in range(layout.basic_mu.shape[0]):
        dense[layout.basic_mu[b], layout.basic_monomial[b]] = adjoint[b, lane]
    for ax in range(3):
        for mu in range(dense.shape[0]):
            for m in range(layout.raised_length[mu]):
                raised[ax, mu, m] = layout.raise_power[ax, m] * dense[mu, layout.raise_monomial[ax, m]]


@njit(cache=True, fastmath=False, parallel=True)
def site_energies_and_gradients(types, offsets, neighbor_types, vectors, min_dist, max_dist, scaling,
                                radial_coeffs, species_coeffs, moment_coeffs, layout, max_neighbors,
                                site_energies, pair_gradients, site_rows):
    """Fill site_energies (N,) in eV and pair_gradients (P, 3) = dE_i/d(r_j - r_i) in eV/Å; and site_rows
    (N, n_parameters) = dV_i/dtheta unless it has no rows (shape (0, 0): not wanted)."""
    n_atoms = types.shape[0]
    n_species = radial_coeffs.shape[0]
    n_radial = radial_coeffs.shape[2]
    n_rb = radial_coeffs.shape[3]
    prefix, raised_length, mapping = layout.prefix_length, layout.raised_length, layout.mapping
    n_basic = layout.basic_mu.shape[0]
    with_rows = site_rows.shape[0] > 0
    species_start = n_species * n_species * n_radial * n_rb
    moment_start = species_start + n_species
    n_blocks = (n_atoms + BLOCK - 1) // BLOCK
    for block in prange(n_blocks):
        (moments, adjoint, dense, raised, radial, radial_deriv, monomials, inv_r, units, rb_values,
         rb_derivatives) = site_scratch(layout, n_radial, n_rb, max_neighbors)
        for first in range(block * BLOCK, min(n_atoms, (block + 1) * BLOCK), LANES):
            lanes = min(LANES, n_atoms - first)
            for w in range(lanes):  # unused lanes of a last short group hold finite values nothing reads
                i = first + w
                site_basic_moments(types[i], offsets[i], offsets[i + 1] - offsets[i], neighbor_types, vectors,
                                   min_dist, max_dist, scaling, radial_coeffs, layout, rb_values[w], rb_derivatives,
                                   radial[w], radial_deriv[w], monomials[w], units[w], inv_r[w], dense)
                for b in range(n_basic):
                    moments[b, w] = dense[layout.basic_mu[b], layout.basic_monomial[b]]
            contract_moment_lanes(moments, layout)
            adjoint[:, :] = 0.0
            for w in range(lanes):
                i = first + w
                energy = species_coeffs[types[i]]
                for s in range(mapping.shape[0]):
                    energy += moment_coeffs[s] * moments[mapping[s], w]
                    adjoint[mapping[s], w] += moment_coeffs[s]
                site_energies[i] = energy
            backpropagate_contraction_lanes(moments, adjoint, layout)
            for w in range(lanes):
                i = first + w
                ti = types[i]
                start = offsets[i]
                if with_rows:
                    row = site_rows[i]
                    row[:] = 0.0
                    row[species_start + ti] = 1.0
                    for s in range(mapping.shape[0]):
                        row[moment_start + s] = moments[mapping[s], w]
                raise_adjoints(adjoint, w, layout, dense, raised)
                for jj in range(offsets[i + 1] - start):
                    p = start + jj
                    ir = inv_r[w, jj]
                    if ir == 0.0:
                        pair_gradients[p, 0] = 0.0
                        pair_gradients[p, 1] = 0.0
                        pair_gradients[p, 2] = 0.0
                        continue
                    # d/dd of f(r) u^m = f'(r) u^m u + f(r)/r (grad_u u^m - deg(m) u^m u), and
                    # sum_m deg(m) A_m u^m = u . grad_u (sum_m A_m u^m) for homogeneous monomials
                    radial_part = 0.0
                    gx = 0.0
                    gy = 0.0
                    gz = 0.0
                    pair_row = ((ti * n_species + neighbor_types[p]) * n_radial) * n_rb
                    for mu in range(n_radial):
                        value, sx, sy, sz = monomial_sums(dense[mu], raised[0, mu], raised[1, mu], raised[2, mu],
                                                          monomials[w, jj], prefix[mu], raised_length[mu])
                        f = radial[w, jj, mu]
                        radial_part += radial_deriv[w, jj, mu] * value
                        gx += f * sx
                        gy += f * sy
                        gz += f * sz
                        if with_rows:  # value = dV_i/df_mu(r_ij)
                            for beta in range(n_rb):
                                row[pair_row + mu * n_rb + beta] += value * rb_values[w, jj, beta]
                    ux = units[w, jj, 0]
                    uy = units[w, jj, 1]
                    uz = units[w, jj, 2]
                    along = radial_part - ir * (gx * ux + gy * uy + gz * uz)
                    pair_gradients[p, 0] = along * ux + gx * ir
                    pair_gradients[p, 1] = along * uy + gy * ir
                    pair_gradients[p, 2] = along * uz + gz * ir


@njit(cache=True, fastmath=False)
def forces_and_virial(n_atoms, centers, neighbors, vectors, pair_gradients):
    """Forces F = -dE/dr (eV/Å) and the strain derivative W_ab = sum_p g_a d_b (eV) = V * stress (ASE sign)."""
    forces = np.zeros((n_atoms, 3))
    strain_derivative = np.zeros((3, 3))
    for p in range(centers.shape[0]):
        i = centers[p]
        j = neighbors[p]
        for a in range(3):
            g = pair_gradients[p, a]
            forces[i, a] += g
            forces[j, a] -= g
            for b in range(3):
                strain_derivative[a, b] += g * vectors[p, b]
    return forces, strain_derivative
