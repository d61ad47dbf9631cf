"""Numba kernels for training: derivatives of energies, forces and virials with respect to the
MTP parameters.

Same conventions and layout as `kernels.py` (full CSR neighbour lists, ``vectors[p] = r_j - r_i``).
The flat parameter vector is ``[radial_coeffs.ravel(), species_coeffs, moment_coeffs]`` (MLIP's
order); `parameter_offsets` gives the start of each block.

* `loss_gradient`: the gradient of ``sum_i a_i E_i + sum_p dE_i/dd_p . w_p`` over all parameters,
  for per-atom weights ``a`` and per-pair directions ``w``. A squared-error loss on energies,
  forces and virials has exactly this gradient once ``a`` and ``w`` are set from the residuals
  (the force and virial residuals become a displacement field of the pair vectors), so one pass
  that is forward mode along ``w`` and then reverse mode over the parameters gives it all.
* `linear_design`: energies, forces and virials are linear in the species and moment
  coefficients; this kernel writes that design matrix per configuration (forward mode over the
  3 x neighbours directions of each site, vectorised over the directions).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import simd
from .kernels import (LANES, backpropagate_contraction_lanes, contract_moment_lanes, contract_moments,
                      neighbour_features)


def parameter_offsets(species_count: int, radial_funcs_count: int, radial_basis_size: int,
                      scalar_count: int) -> tuple[int, int, int]:
    """Starts of the species and moment blocks and the total length of the flat parameter vector."""
    species_start = species_count * species_count * radial_funcs_count * radial_basis_size
    moment_start = species_start + species_count
    return species_start, moment_start, moment_start + scalar_count


@njit(cache=True, fastmath=False, inline="always")
def contract_tangent_lanes(moments, tangents, layout):
    """Forward derivative of the products, LANES atoms at once (as `kernels.contract_moment_lanes`):
    dM_k = sum of mult * (dM_p M_q + M_p dM_q)."""
    start, left, right, mult = layout.product_start, layout.product_left, layout.product_right, layout.product_mult
    targets = layout.product_targets
    one = np.uint64(1)
    for k in range(np.uint64(targets.shape[0])):
        total = simd.broadcast(0.0)
        for t in range(start[k], start[k + one]):
            a, b = left[t], right[t]
            both = simd.add(simd.multiply(simd.load_row(tangents, a), simd.load_row(moments, b)),
                            simd.multiply(simd.load_row(moments, a), simd.load_row(tangents, b)))
            total = simd.add(total, simd.multiply(simd.broadcast(mult[t]), both))
        simd.store_row(tangents, targets[k], total)


@njit(cache=True, fastmath=False, inline="always")
def backpropagate_tangent_lanes(moments, tangents, adjoint, second_adjoint, layout):
    """Reverse pass through the tangent products, LANES atoms at once. With ``adjoint`` = dE/dM already
    complete, adds to ``second_adjoint`` the derivative of sum_k adjoint_k dM_k with respect to the moments."""
    start, left, right, mult = layout.product_start, layout.product_left, layout.product_right, layout.product_mult
    targets = layout.product_targets
    n_targets = np.uint64(targets.shape[0])
    one = np.uint64(1)
    for kk in range(n_targets):
        k = n_targets - one - kk
        g = simd.load_row(adjoint, targets[k])
        h = simd.load_row(second_adjoint, targets[k])
        for t in range(start[k], start[k + one]):
            c = simd.broadcast(mult[t])
            a, b = left[t], right[t]  # separate read-modify-writes: a == b for squares
            to_left = simd.add(simd.multiply(h, simd.load_row(moments, b)),
                               simd.multiply(g, simd.load_row(tangents, b)))
            simd.store_row(second_adjoint, a, simd.add(simd.load_row(second_adjoint, a), simd.multiply(c, to_left)))
            to_right = simd.add(simd.multiply(h, simd.load_row(moments, a)),
                                simd.multiply(g, simd.load_row(tangents, a)))
            simd.store_row(second_adjoint, b, simd.add(simd.load_row(second_adjoint, b), simd.multiply(c, to_right)))


@njit(cache=True, fastmath={"reassoc", "contract"})
def monomial_weights(second_adjoint, adjoint, monomials, monomial_tangents, length):
    """Dot products over the first `length` monomials of one neighbour. Reassociation lets them
    vectorise (as in kernels.monomial_contractions); the gradient needs no bitwise rounding."""
    second = 0.0
    first = 0.0
    first_tangent = 0.0
    for m in range(length):
        second += second_adjoint[m] * monomials[m]
        first += adjoint[m] * monomials[m]
        first_tangent += adjoint[m] * monomial_tangents[m]
    return second, first, first_tangent


@njit(cache=True, fastmath=False, parallel=True)
def loss_gradient(types, offsets, neighbor_types, vectors, min_dist, max_dist, scaling, radial_coeffs,
                  moment_coeffs, layout, max_neighbors, block_starts, energy_weights, pair_directions,
                  gradients):
    """gradients[b] = d/d(parameters) of sum over the atoms i of block b of
    ``energy_weights[i] * E_i + sum_p dE_i/d vectors[p] . pair_directions[p]``.

    Blocks are atom ranges ``block_starts[b]:block_starts[b+1]``; one row per block keeps the sum
    independent of the thread count. ``gradients`` has shape (n_blocks, n_parameters)."""
    n_species = radial_coeffs.shape[0]
    n_radial = radial_coeffs.shape[2]
    n_rb = radial_coeffs.shape[3]
    n_basic = layout.basic_mu.shape[0]
    n_mono = layout.monomial_parent.shape[0]
    basic_mu, basic_mono, prefix = layout.basic_mu, layout.basic_monomial, layout.prefix_length
    parent, axis, mapping = layout.monomial_parent, layout.monomial_axis, layout.mapping
    n_scalar = mapping.shape[0]
    species_start = n_species * n_species * n_radial * n_rb
    moment_start = species_start + n_species
    for block in prange(block_starts.shape[0] - 1):
        grad = gradients[block]
        grad[:] = 0.0
        # lanes of a last short group keep earlier, finite values that nothing reads
        moments = np.zeros((layout.moments_count, LANES))
        tangents = np.zeros((layout.moments_count, LANES))
        adjoint = np.empty((layout.moments_count, LANES))
        second_adjoint = np.empty((layout.moments_count, LANES))
        dense = np.empty((n_radial, n_mono))  # basic moments, then their second adjoints
        dense_tangent = np.empty((n_radial, n_mono))  # basic tangents, then their adjoints
        rb_values = np.empty((LANES, max_neighbors, n_rb))
        rb_derivatives = np.empty((LANES, max_neighbors, n_rb))
        monomials = np.empty((LANES, max_neighbors, n_mono))
        monomial_tangents = np.empty((LANES, max_neighbors, n_mono))
        inv_r = np.empty((LANES, max_neighbors))
        r_tangent = np.empty((LANES, max_neighbors))
        units = np.empty((LANES, max_neighbors, 3))
        unit_tangent = np.empty(3)
        radial = np.empty(n_radial)
        radial_deriv = np.empty(n_radial)
        end = block_starts[block + 1]
        for first in range(block_starts[block], end, LANES):
            lanes = min(LANES, end - first)
            for w in range(lanes):
                i = first + w
                ti = types[i]
                start = offsets[i]
                dense[:, :] = 0.0
                dense_tangent[:, :] = 0.0
                for jj in range(offsets[i + 1] - start):
                    p = start + jj
                    inv_r[w, jj] = neighbour_features(p, ti, neighbor_types, vectors, min_dist, max_dist, scaling,
                                                      radial_coeffs, layout, rb_values[w, jj], rb_derivatives[w, jj],
                                                      radial, radial_deriv, monomials[w, jj], units[w, jj])
                    if inv_r[w, jj] == 0.0:
                        continue
                    u = units[w, jj]
                    # d r = u . w and d u = (w - u (u . w)) / r along the pair direction w
                    rt = u[0] * pair_directions[p, 0] + u[1] * pair_directions[p, 1] + u[2] * pair_directions[p, 2]
                    r_tangent[w, jj] = rt
                    for ax in range(3):
                        unit_tangent[ax] = (pair_directions[p, ax] - u[ax] * rt) * inv_r[w, jj]
                    mono = monomials[w, jj]
                    mono_t = monomial_tangents[w, jj]
                    mono_t[0] = 0.0
                    for m in range(1, n_mono):
                        mono_t[m] = mono_t[parent[m]] * u[axis[m]] + mono[parent[m]] * unit_tangent[axis[m]]
                    for mu in range(n_radial):
                        f = radial[mu]
                        ft = radial_deriv[mu] * rt
                        for m in range(prefix[mu]):
                            dense[mu, m] += f * mono[m]
                            dense_tangent[mu, m] += ft * mono[m] + f * mono_t[m]
                for b in range(n_basic):
                    moments[b, w] = dense[basic_mu[b], basic_mono[b]]
                    tangents[b, w] = dense_tangent[basic_mu[b], basic_mono[b]]
            contract_moment_lanes(moments, layout)
            contract_tangent_lanes(moments, tangents, layout)
            adjoint[:, :] = 0.0
            second_adjoint[:, :] = 0.0
            for w in range(lanes):
                i = first + w
                a = energy_weights[i]
                grad[species_start + types[i]] += a
                for s in range(n_scalar):
                    grad[moment_start + s] += a * moments[mapping[s], w] + tangents[mapping[s], w]
                    adjoint[mapping[s], w] += moment_coeffs[s]
            backpropagate_contraction_lanes(moments, adjoint, layout)
            backpropagate_tangent_lanes(moments, tangents, adjoint, second_adjoint, layout)
            for w in range(lanes):
                i = first + w
                ti = types[i]
                start = offsets[i]
                a = energy_weights[i]
                # basic moments: d/dM of (a E + dE) is a * adjoint + second_adjoint; d/d(dM) is adjoint
                # (zeroed first: a prefix monomial that is no basic moment of mu must weigh nothing)
                dense[:, :] = 0.0
                dense_tangent[:, :] = 0.0
                for b in range(n_basic):
                    dense[basic_mu[b], basic_mono[b]] = a * adjoint[b, w] + second_adjoint[b, w]
                    dense_tangent[basic_mu[b], basic_mono[b]] = adjoint[b, w]
                for jj in range(offsets[i + 1] - start):
                    if inv_r[w, jj] == 0.0:
                        continue
                    tj = neighbor_types[start + jj]
                    pair_start = ((ti * n_species + tj) * n_radial) * n_rb
                    for mu in range(n_radial):
                        # M = sum f u^m and dM = sum (f' dr u^m + f du^m), f = sum_beta c_beta Q_beta
                        second, first_order, first_tangent = monomial_weights(
                            dense[mu], dense_tangent[mu], monomials[w, jj], monomial_tangents[w, jj], prefix[mu])
                        with_value = second + first_tangent
                        with_derivative = first_order * r_tangent[w, jj]
                        row = pair_start + mu * n_rb
                        for beta in range(n_rb):
                            grad[row + beta] += (rb_values[w, jj, beta] * with_value
                                                 + rb_derivatives[w, jj, beta] * with_derivative)


@njit(cache=True, fastmath=False, parallel=True)
def linear_design(types, offsets, neighbors, neighbor_types, vectors, min_dist, max_dist, scaling, radial_coeffs,
                  layout, max_neighbors, atom_starts, first_config, energy_rows, force_rows, virial_rows):
    """Design matrix of configurations first_config .. first_config + len(energy_rows) - 1 of a batch.

    Columns: species (S) then moment coefficients. ``energy_rows[c]``: E = row . coefficients;
    ``force_rows[3 (i - a0) + x]``: force component x of atom i, with a0 the first atom of
    first_config; ``virial_rows[c, 3 x + y]``: strain derivative W_xy = sum_p dE/dd_px d_py."""
    n_species = radial_coeffs.shape[0]
    n_radial = radial_coeffs.shape[2]
    n_rb = radial_coeffs.shape[3]
    n_basic = layout.basic_mu.shape[0]
    n_mono = layout.monomial_parent.shape[0]
    basic_mu, basic_mono, prefix = layout.basic_mu, layout.basic_monomial, layout.prefix_length
    degree, mapping = layout.monomial_degree, layout.mapping
    raise_monomial, raise_power = layout.raise_monomial, layout.raise_power
    start_k, left, right, mult = layout.product_start, layout.product_left, layout.product_right, layout.product_mult
    targets = layout.product_targets
    n_targets = np.uint64(targets.shape[0])
    one = np.uint64(1)
    n_scalar = mapping.shape[0]
    first_atom = atom_starts[first_config]
    energy_rows[:, :] = 0.0
    force_rows[:, :] = 0.0
    virial_rows[:, :, :] = 0.0
    for local in prange(energy_rows.shape[0]):
        c = first_config + local
        moments = np.empty(layout.moments_count)
        dense = np.empty((n_radial, n_mono))
        # derivative of every moment along each (neighbour, axis) direction, directions contiguous
        tangents = np.empty((layout.moments_count, 3 * max_neighbors))
        radial = np.empty((max_neighbors, n_radial))
        radial_deriv = np.empty((max_neighbors, n_radial))
        monomials = np.empty((max_neighbors, n_mono))
        monomial_grad = np.empty((3, n_mono))
        inv_r = np.empty(max_neighbors)
        units = np.empty((max_neighbors, 3))
        rb_values = np.empty(n_rb)
        rb_derivatives = np.empty(n_rb)
        site_gradients = np.empty((3 * max_neighbors, n_scalar))
        own = np.empty((3, n_scalar))
        for i in range(atom_starts[c], atom_starts[c + 1]):
            ti = types[i]
            start = offsets[i]
            count = offsets[i + 1] - start
            n_dir = 3 * count
            dense[:, :] = 0.0
            for jj in range(count):
                inv_r[jj] = neighbour_features(start + jj, ti, neighbor_types, vectors, min_dist, max_dist,
                                               scaling, radial_coeffs, layout, rb_values, rb_derivatives,
                                               radial[jj], radial_deriv[jj], monomials[jj], units[jj])
                if inv_r[jj] == 0.0:
                    continue
                for mu in range(n_radial):
                    f = radial[jj, mu]
                    for m in range(prefix[mu]):
                        dense[mu, m] += f * monomials[jj, m]
            for b in range(n_basic):
                moments[b] = dense[basic_mu[b], basic_mono[b]]
            contract_moments(moments, layout)
            energy_rows[local, ti] += 1.0
            for s in range(n_scalar):
                energy_rows[local, n_species + s] += moments[mapping[s]]
            # basic moments: d/dd of f(r) u^m = f'(r) u^m u + f(r)/r (grad_u u^m - deg(m) u^m u)
            for jj in range(count):
                if inv_r[jj] == 0.0:  # beyond the cutoff: no monomials were computed
                    for b in range(n_basic):
                        tangents[b, 3 * jj: 3 * jj + 3] = 0.0
                    continue
                mono = monomials[jj]
                monomial_grad[:, :] = 0.0
                for ax in range(3):
                    for m in range(n_mono):  # a monomial without raise writes 0 to entry 0 (d(1)/du = 0)
                        monomial_grad[ax, raise_monomial[ax, m]] = raise_power[ax, m] * mono[m]
                for b in range(n_basic):
                    mu = basic_mu[b]
                    m = basic_mono[b]
                    f_over_r = radial[jj, mu] * inv_r[jj]
                    along = radial_deriv[jj, mu] * mono[m] - f_over_r * degree[m] * mono[m]
                    for ax in range(3):
                        tangents[b, 3 * jj + ax] = along * units[jj, ax] + f_over_r * monomial_grad[ax, m]
            for k in range(n_targets):
                row = tangents[targets[k]]
                row[:n_dir] = 0.0
                for t in range(start_k[k], start_k[k + one]):
                    weight_left = mult[t] * moments[right[t]]
                    weight_right = mult[t] * moments[left[t]]
                    left_row = tangents[left[t]]
                    right_row = tangents[right[t]]
                    for d in range(n_dir):
                        row[d] += weight_left * left_row[d] + weight_right * right_row[d]
            # basis function gradients by direction, contiguous over the basis functions
            for s in range(n_scalar):
                row = tangents[mapping[s]]
                for d in range(n_dir):
                    site_gradients[d, s] = row[d]
            # F_i += dE/dd_p, F_j -= dE/dd_p, W_xy += dE/dd_px d_py (as kernels.forces_and_virial)
            own[:, :] = 0.0
            for jj in range(count):
                p = start + jj
                row_j = 3 * (neighbors[p] - first_atom)
                for ax in range(3):
                    g = site_gradients[3 * jj + ax]
                    force_j = force_rows[row_j + ax, n_species:]
                    for s in range(n_scalar):
                        own[ax, s] += g[s]
                        force_j[s] -= g[s]
                    for y in range(3):
                        d_y = vectors[p, y]
                        virial = virial_rows[local, 3 * ax + y, n_species:]
                        for s in range(n_scalar):
                            virial[s] += g[s] * d_y
            for ax in range(3):
                force_i = force_rows[3 * (i - first_atom) + ax, n_species:]
                for s in range(n_scalar):
                    force_i[s] += own[ax, s]
