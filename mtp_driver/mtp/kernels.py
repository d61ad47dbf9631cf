"""Numba kernels: site energies and their gradients with respect to neighbour vectors.

Conventions: neighbours come as a full list sorted by central atom (CSR: ``offsets[i]`` to
``offsets[i+1]``), ``vectors[p] = r_j - r_i`` in Å. ``pair_gradients[p] = dE_i / d vectors[p]``
in eV/Å, from which forces and the virial follow by a scatter (`forces_and_virial`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK = 32  # atoms per parallel work item: amortises scratch allocation


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
def backpropagate_contractions(moments, adjoint, layout):
    """Reverse pass through the products: adjoint of each factor from the adjoint of its product."""
    start, left, right, mult = layout.product_start, layout.product_left, layout.product_right, layout.product_mult
    targets = layout.product_targets
    n_targets = np.uint64(targets.shape[0])
    one = np.uint64(1)
    for kk in range(n_targets):
        k = n_targets - one - kk
        g = adjoint[targets[k]]
        if g == 0.0:
            continue
        for t in range(start[k], start[k + one]):
            gm = g * mult[t]
            adjoint[left[t]] += gm * moments[right[t]]
            adjoint[right[t]] += gm * moments[left[t]]


@njit(cache=True, fastmath={"reassoc", "contract"})
def monomial_contractions(weight, weight_deriv, mono, degree, d_mono, d_lower, d_power):
    """Sums over monomials for one neighbour. Reassociation (measured: same values to 1e-15
    relative) lets these dot products vectorise."""
    radial_part = 0.0
    degree_part = 0.0
    for m in range(mono.shape[0]):
        radial_part += weight_deriv[m] * mono[m]
        degree_part += weight[m] * degree[m] * mono[m]
    gx = 0.0
    gy = 0.0
    gz = 0.0
    for t in range(d_mono.shape[1]):
        gx += weight[d_mono[0, t]] * d_power[0, t] * mono[d_lower[0, t]]
        gy += weight[d_mono[1, t]] * d_power[1, t] * mono[d_lower[1, t]]
        gz += weight[d_mono[2, t]] * d_power[2, t] * mono[d_lower[2, t]]
    return radial_part, degree_part, gx, gy, gz


@njit(cache=True, fastmath=False, inline="always")
def site_scratch(layout, n_radial, n_rb, max_neighbors):
    """Per-thread work arrays of the site kernels (allocated once per block of atoms)."""
    n_mono = layout.monomial_parent.shape[0]
    return (np.empty(layout.moments_count), np.empty(layout.moments_count),  # moments, adjoint
            np.empty((n_radial, n_mono)),  # basic moments, then their adjoints, as [mu, monomial]
            np.empty((max_neighbors, n_radial)), np.empty((max_neighbors, n_radial)),  # f_mu, f'_mu
            np.empty((max_neighbors, n_mono)), np.empty(max_neighbors), np.empty((max_neighbors, 3)),  # u^m, 1/r, u
            np.empty((max_neighbors, n_rb)), np.empty(n_rb),  # Chebyshev values (kept per neighbour), derivatives
            np.empty(n_mono), np.empty(n_mono))  # monomial weights of one pair


@njit(cache=True, fastmath=False, inline="always")
def site_moments(ti, start, count, neighbor_types, vectors, min_dist, max_dist, scaling, radial_coeffs, layout,
                 rb_values, rb_derivatives, radial, radial_deriv, monomials, units, inv_r, dense, moments):
    """Forward pass of one site: neighbour features, basic moments (in `dense`) and all moments."""
    n_radial = radial_coeffs.shape[2]
    prefix = layout.prefix_length
    dense[:, :] = 0.0
    for jj in range(count):
        inv_r[jj] = neighbour_features(start + jj, ti, neighbor_types, vectors, min_dist, max_dist, scaling,
                                       radial_coeffs, layout, rb_values[jj], rb_derivatives, radial[jj],
                                       radial_deriv[jj], monomials[jj], units[jj])
        if inv_r[jj] == 0.0:  # beyond the cutoff (Verlet skin): its monomials were not computed
            continue
        for mu in range(n_radial):
            f = radial[jj, mu]
            for m in range(prefix[mu]):
                dense[mu, m] += f * monomials[jj, m]
    for b in range(layout.basic_mu.shape[0]):
        moments[b] = dense[layout.basic_mu[b], layout.basic_monomial[b]]
    contract_moments(moments, layout)


@njit(cache=True, fastmath=False, inline="always")
def basic_adjoints(adjoint, layout, dense):
    """Adjoints of the basic moments into `dense` [mu, monomial]; prefix monomials that are no basic
    moment of mu weigh nothing."""
    dense[:, :] = 0.0
    for b in range(layout.basic_mu.shape[0]):
        dense[layout.basic_mu[b], layout.basic_monomial[b]] = adjoint[b]


@njit(cache=True, fastmath=False, inline="always")
def pair_gradient(p, jj, dense, radial, radial_deriv, monomials, units, inv_r, layout, weight, weight_deriv,
                  pair_gradients):
    """pair_gradients[p] = dE_i/d(r_j - r_i) of neighbour jj from the basic-moment adjoints in `dense`."""
    if inv_r[jj] == 0.0:
        pair_gradients[p, 0] = 0.0
        pair_gradients[p, 1] = 0.0
        pair_gradients[p, 2] = 0.0
        return
    prefix = layout.prefix_length
    weight[:] = 0.0
    weight_deriv[:] = 0.0
    for mu in range(radial.shape[1]):
        f = radial[jj, mu]
        fd = radial_deriv[jj, mu]
        for m in range(prefix[mu]):
            weight[m] += dense[mu, m] * f
            weight_deriv[m] += dense[mu, m] * fd
    # d/dd of f(r) u^abc = f'(r) u^abc u + f(r)/r (grad_u u^abc - (a+b+c) u^abc u)
    radial_part, degree_part, gx, gy, gz = monomial_contractions(
        weight, weight_deriv, monomials[jj], layout.monomial_degree, layout.derivative_monomial,
        layout.derivative_lower, layout.derivative_power)
    along = radial_part - inv_r[jj] * degree_part
    pair_gradients[p, 0] = along * units[jj, 0] + gx * inv_r[jj]
    pair_gradients[p, 1] = along * units[jj, 1] + gy * inv_r[jj]
    pair_gradients[p, 2] = along * units[jj, 2] + gz * inv_r[jj]


@njit(cache=True, fastmath=False, parallel=True)
def site_energies_and_gradients(types, offsets, neighbor_types, vectors, min_dist, max_dist, scaling,
                                radial_coeffs, species_coeffs, moment_coeffs, layout, max_neighbors,
                                site_energies, pair_gradients):
    """Fill site_energies (N,) in eV and pair_gradients (P, 3) = dE_i/d(r_j - r_i) in eV/Å."""
    n_atoms = types.shape[0]
    mapping = layout.mapping
    n_blocks = (n_atoms + BLOCK - 1) // BLOCK
    for block in prange(n_blocks):
        (moments, adjoint, dense, radial, radial_deriv, monomials, inv_r, units, rb_values, rb_derivatives,
         weight, weight_deriv) = site_scratch(layout, radial_coeffs.shape[2], radial_coeffs.shape[3], max_neighbors)
        for i in range(block * BLOCK, min(n_atoms, (block + 1) * BLOCK)):
            ti = types[i]
            start = offsets[i]
            count = offsets[i + 1] - start
            site_moments(ti, start, count, neighbor_types, vectors, min_dist, max_dist, scaling, radial_coeffs,
                         layout, rb_values, rb_derivatives, radial, radial_deriv, monomials, units, inv_r, dense,
                         moments)
            energy = species_coeffs[ti]
            adjoint[:] = 0.0
            for s in range(mapping.shape[0]):
                energy += moment_coeffs[s] * moments[mapping[s]]
                adjoint[mapping[s]] += moment_coeffs[s]
            site_energies[i] = energy
            backpropagate_contractions(moments, adjoint, layout)
            basic_adjoints(adjoint, layout, dense)
            for jj in range(count):
                pair_gradient(start + jj, jj, dense, radial, radial_deriv, monomials, units, inv_r, layout, weight,
                              weight_deriv, pair_gradients)


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
