"""Numba kernels: site energies and their gradients with respect to neighbour vectors.

Conventions: neighbours come as a full list sorted by central atom (CSR: ``offsets[i]`` to
``offsets[i+1]``), ``vectors[p] = r_j - r_i`` in Å. ``pair_gradients[p] = dE_i / d vectors[p]``
in eV/Å; the kernel also sums each site's pairs into its own atom's force and its virial, so what is
left serial is the scatter of -dE_i/d vectors[p] onto the neighbours (`forces_and_virial`).

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
from .atomic import take_next
from .simd import LANES  # atoms whose moment products are contracted together, one SIMD lane each

BLOCK = 32  # atoms per work item, taken by the threads one at a time (a multiple of LANES), but the last
# threads x BLOCK atoms go LANES at a time: the threads then end within a few atoms of each other


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
def radial_function(coeffs, rb_values, rb_derivatives):
    """f_mu(r) and f'_mu(r) of one neighbour from its Chebyshev values; coeffs = radial_coeffs[ti, tj, mu]."""
    value = 0.0
    deriv = 0.0
    for beta in range(rb_values.shape[0]):
        value += coeffs[beta] * rb_values[beta]
        deriv += coeffs[beta] * rb_derivatives[beta]
    return value, deriv


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
        radial[mu], radial_deriv[mu] = radial_function(radial_coeffs[center_type, tj, mu], rb_values, rb_derivatives)
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


@njit(cache=True, fastmath=False, inline="always")
def lane_padded(count):
    """`count` rounded up to a multiple of LANES: a site's neighbour columns."""
    return (count + LANES - 1) // LANES * LANES


@njit(cache=True, fastmath=False, inline="always")
def site_scratch(layout, n_radial, n_rb, columns):
    """Per-thread work arrays of `site_energies_and_gradients` (allocated once per thread and call). A site's
    neighbours are the columns of its arrays (zero-padded to `columns`, a multiple of LANES), kept per lane
    until the lane's adjoints are known."""
    n_mono = layout.monomial_parent.shape[0]
    return (np.zeros((layout.moments_count, LANES)), np.empty((layout.moments_count, LANES)),  # moments, adjoint
            np.empty((n_radial, n_mono)),  # basic moments, then their adjoints, as [mu, monomial]
            np.empty((3, n_radial, n_mono)),  # the adjoints moved to the lowered monomials, per axis
            np.empty((LANES, n_radial, columns)), np.empty((LANES, n_radial, columns)),  # f_mu, f'_mu
            np.empty((LANES, n_mono, columns)),  # u^m
            np.empty((LANES, 4, columns)),  # u and 1/r (0 beyond the cutoff)
            np.empty((LANES, columns, n_rb)), np.empty(n_rb),  # Chebyshev values, derivatives
            np.empty((4, columns)), np.empty((n_radial, columns)))  # gradient parts, dV_i/df_mu


@njit(cache=True, fastmath=False, inline="always")
def site_features(ti, start, count, neighbors, types, vectors, min_dist, max_dist, scaling, radial_coeffs, layout,
                  rb_values, rb_derivatives, radial, radial_deriv, geometry, monomials, dense):
    """Forward pass of one site up to its basic moments dense[mu, monomial], neighbours as SIMD lanes: column
    jj holds f_mu(r), f'_mu(r), u, 1/r and u^m of neighbour jj; a neighbour beyond the cutoff (Verlet skin)
    and the padding columns are zero, so they add nothing."""
    n_radial = radial.shape[0]
    padded = lane_padded(count)
    for jj in range(padded):
        inv_r = 0.0
        if jj < count:
            p = start + jj
            dx, dy, dz = vectors[p, 0], vectors[p, 1], vectors[p, 2]
            r = np.sqrt(dx * dx + dy * dy + dz * dz)
            if r < max_dist:
                inv_r = 1.0 / r
                values = rb_values[jj]
                chebyshev_radial_basis(r, min_dist, max_dist, scaling, values, rb_derivatives)
                tj = types[neighbors[p]]
                for mu in range(n_radial):
                    radial[mu, jj], radial_deriv[mu, jj] = radial_function(radial_coeffs[ti, tj, mu], values,
                                                                           rb_derivatives)
                geometry[0, jj] = dx * inv_r
                geometry[1, jj] = dy * inv_r
                geometry[2, jj] = dz * inv_r
        if inv_r == 0.0:
            radial[:, jj] = 0.0
            radial_deriv[:, jj] = 0.0
            geometry[:3, jj] = 0.0
        geometry[3, jj] = inv_r
    parent, axis, prefix = layout.monomial_parent, layout.monomial_axis, layout.prefix_length
    for c in range(0, padded, LANES):
        simd.store(monomials, 0, c, simd.broadcast(1.0))
    for m in range(1, monomials.shape[0]):
        q, ax = parent[m], axis[m]
        for c in range(0, padded, LANES):
            simd.store(monomials, m, c, simd.multiply(simd.load(monomials, q, c), simd.load(geometry, ax, c)))
    for mu in range(n_radial):
        for m in range(prefix[mu]):
            total = simd.broadcast(0.0)
            for c in range(0, padded, LANES):
                total = simd.add(total, simd.multiply(simd.load(radial, mu, c), simd.load(monomials, m, c)))
            dense[mu, m] = simd.lane_sum(total)


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


@njit(cache=True, fastmath=False, inline="always")
def site_gradient_parts(count, layout, dense, raised, radial, radial_deriv, monomials, parts, values):
    """Per neighbour column jj of one site (after `raise_adjoints`): parts[0] = sum_mu f'_mu V_mu, parts[1:4] =
    sum_mu f_mu grad_u V_mu with V_mu = sum_m A[mu, m] u^m, and values[mu] = V_mu = dV_i/df_mu(r_ij)."""
    prefix, raised_length = layout.prefix_length, layout.raised_length
    for c in range(0, lane_padded(count), LANES):
        radial_part = simd.broadcast(0.0)
        gx = simd.broadcast(0.0)
        gy = simd.broadcast(0.0)
        gz = simd.broadcast(0.0)
        for mu in range(radial.shape[0]):
            value = simd.broadcast(0.0)
            sx = simd.broadcast(0.0)
            sy = simd.broadcast(0.0)
            sz = simd.broadcast(0.0)
            for m in range(raised_length[mu]):
                u = simd.load(monomials, m, c)
                value = simd.add(value, simd.multiply(simd.broadcast(dense[mu, m]), u))
                sx = simd.add(sx, simd.multiply(simd.broadcast(raised[0, mu, m]), u))
                sy = simd.add(sy, simd.multiply(simd.broadcast(raised[1, mu, m]), u))
                sz = simd.add(sz, simd.multiply(simd.broadcast(raised[2, mu, m]), u))
            for m in range(raised_length[mu], prefix[mu]):
                value = simd.add(value, simd.multiply(simd.broadcast(dense[mu, m]), simd.load(monomials, m, c)))
            simd.store(values, mu, c, value)
            radial_part = simd.add(radial_part, simd.multiply(simd.load(radial_deriv, mu, c), value))
            f = simd.load(radial, mu, c)
            gx = simd.add(gx, simd.multiply(f, sx))
            gy = simd.add(gy, simd.multiply(f, sy))
            gz = simd.add(gz, simd.multiply(f, sz))
        simd.store(parts, 0, c, radial_part)
        simd.store(parts, 1, c, gx)
        simd.store(parts, 2, c, gy)
        simd.store(parts, 3, c, gz)


@njit(cache=True, fastmath=False, parallel=True)
def site_energies_and_gradients(types, offsets, neighbors, vectors, min_dist, max_dist, scaling,
                                radial_coeffs, species_coeffs, moment_coeffs, layout, max_neighbors,
                                site_energies, site_forces, site_virials, pair_gradients, site_rows, threads):
    """For the S = len(offsets) - 1 sites (the first atoms; `types` has every atom's, neighbours' too), fill
    site_energies (S,) in eV, pair_gradients (P, 3) = dE_i/d(r_j - r_i) in eV/Å, site_forces (S, 3) = their sum over
    the site's pairs (eV/Å: the force of E_i on atom i), site_virials (S, 3, 3) = the sum of g_a d_b over the site's
    pairs (eV); and site_rows (S, n_parameters) = dV_i/dtheta unless it has no rows (shape (0, 0): not wanted).
    `threads`: Numba's thread count (each allocates its scratch once, then takes the next BLOCK atoms, LANES near
    the end, as it comes free: a thread slowed by the machine takes fewer; the results do not depend on which
    thread computed what)."""
    n_sites = offsets.shape[0] - 1
    n_species = radial_coeffs.shape[0]
    n_radial = radial_coeffs.shape[2]
    n_rb = radial_coeffs.shape[3]
    mapping = layout.mapping
    n_basic = layout.basic_mu.shape[0]
    with_rows = site_rows.shape[0] > 0
    species_start = n_species * n_species * n_radial * n_rb
    moment_start = species_start + n_species
    columns = lane_padded(max_neighbors)
    n_workers = max(1, min(threads, (n_sites + BLOCK - 1) // BLOCK))
    n_blocks = max(0, n_sites - n_workers * BLOCK) // BLOCK  # then items of LANES atoms from tail_start
    tail_start = n_blocks * BLOCK
    n_items = n_blocks + (n_sites - tail_start + LANES - 1) // LANES
    taken = np.zeros(1, dtype=np.int64)  # items handed out so far
    for _ in prange(n_workers):  # scratch once per thread: per item, its page faults cost 10 % at level 24
        (moments, adjoint, dense, raised, radial, radial_deriv, monomials, geometry, rb_values, rb_derivatives,
         parts, values) = site_scratch(layout, n_radial, n_rb, columns)
        while True:
            item = take_next(taken)
            if item >= n_items:
                break
            item_start = item * BLOCK if item < n_blocks else tail_start + (item - n_blocks) * LANES
            item_stop = min(n_sites, item_start + (BLOCK if item < n_blocks else LANES))
            for first in range(item_start, item_stop, LANES):
                lanes = min(LANES, n_sites - first)
                for w in range(lanes):  # unused lanes of a last short group hold finite values nothing reads
                    i = first + w
                    site_features(types[i], offsets[i], offsets[i + 1] - offsets[i], neighbors, types, vectors, min_dist,
                                  max_dist, scaling, radial_coeffs, layout, rb_values[w], rb_derivatives, radial[w],
                                  radial_deriv[w], geometry[w], monomials[w], dense)
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
                    count = offsets[i + 1] - start
                    raise_adjoints(adjoint, w, layout, dense, raised)
                    site_gradient_parts(count, layout, dense, raised, radial[w], radial_deriv[w], monomials[w], parts,
                                        values)
                    fx = fy = fz = 0.0
                    w00 = w01 = w02 = w10 = w11 = w12 = w20 = w21 = w22 = 0.0
                    for jj in range(count):
                        p = start + jj
                        ux, uy, uz, ir = geometry[w, 0, jj], geometry[w, 1, jj], geometry[w, 2, jj], geometry[w, 3, jj]
                        # d/dd of f(r) u^m = f'(r) u^m u + f(r)/r (grad_u u^m - deg(m) u^m u), and
                        # sum_m deg(m) A_m u^m = u . grad_u (sum_m A_m u^m) for homogeneous monomials
                        along = parts[0, jj] - ir * (parts[1, jj] * ux + parts[2, jj] * uy + parts[3, jj] * uz)
                        gx = along * ux + parts[1, jj] * ir
                        gy = along * uy + parts[2, jj] * ir
                        gz = along * uz + parts[3, jj] * ir
                        pair_gradients[p, 0] = gx
                        pair_gradients[p, 1] = gy
                        pair_gradients[p, 2] = gz
                        dx, dy, dz = vectors[p, 0], vectors[p, 1], vectors[p, 2]
                        fx += gx
                        fy += gy
                        fz += gz
                        w00 += gx * dx
                        w01 += gx * dy
                        w02 += gx * dz
                        w10 += gy * dx
                        w11 += gy * dy
                        w12 += gy * dz
                        w20 += gz * dx
                        w21 += gz * dy
                        w22 += gz * dz
                    site_forces[i, 0] = fx
                    site_forces[i, 1] = fy
                    site_forces[i, 2] = fz
                    virial = site_virials[i]
                    virial[0, 0], virial[0, 1], virial[0, 2] = w00, w01, w02
                    virial[1, 0], virial[1, 1], virial[1, 2] = w10, w11, w12
                    virial[2, 0], virial[2, 1], virial[2, 2] = w20, w21, w22
                    if with_rows:
                        row = site_rows[i]
                        row[:] = 0.0
                        row[species_start + ti] = 1.0
                        for s in range(mapping.shape[0]):
                            row[moment_start + s] = moments[mapping[s], w]
                        for jj in range(count):
                            if geometry[w, 3, jj] == 0.0:
                                continue
                            pair_row = ((ti * n_species + types[neighbors[start + jj]]) * n_radial) * n_rb
                            for mu in range(n_radial):  # values[mu, jj] = dV_i/df_mu(r_ij)
                                for beta in range(n_rb):
                                    row[pair_row + mu * n_rb + beta] += values[mu, jj] * rb_values[w, jj, beta]


@njit(cache=True, fastmath=False)
def forces_and_virial(n_atoms, neighbors, pair_gradients, site_forces, site_virials):
    """Forces F = -dE/dr (N, 3) in eV/Å and strain derivative W_ab = sum_p g_a d_b (3, 3) in eV = V * stress (ASE
    sign) from the kernel's outputs: each site's own force, then -g of each pair on its neighbour, in pair order;
    W summed over the sites in order. One thread (52k pairs take 0.06 ms), so the sums never depend on the threads."""
    forces = np.zeros((n_atoms, 3))
    forces[:site_forces.shape[0]] = site_forces
    for p in range(neighbors.shape[0]):
        j = neighbors[p]
        forces[j, 0] -= pair_gradients[p, 0]
        forces[j, 1] -= pair_gradients[p, 1]
        forces[j, 2] -= pair_gradients[p, 2]
    strain_derivative = np.zeros((3, 3))
    for i in range(site_virials.shape[0]):
        for a in range(3):
            for b in range(3):
                strain_derivative[a, b] += site_virials[i, a, b]
    return forces, strain_derivative
