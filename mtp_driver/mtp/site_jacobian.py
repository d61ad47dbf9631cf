"""Site energies, their pair gradients and their parameter Jacobian in one pass (for extrapolation grades).

The row of atom i is ``dV_i/dtheta`` over the flat parameter vector
``[radial_coeffs.ravel(), species_coeffs, moment_coeffs]`` (MLIP's order, see
`parameter_gradients.parameter_offsets`):

* species coefficients: 1 at the atom's own type (dimensionless);
* moment coefficients: the basis function values ``B_s(i) = M_mapping[s](i)`` (dimensionless);
* radial coefficient ``c[a, b, mu, beta]`` (a = type of i): ``sum over neighbours j of type b of
  Q_beta(r_ij) * sum_m (dV_i/dM_basic[mu, m]) u_ij^m`` in eV, where ``dV_i/dM`` is the adjoint that the
  force pass computes anyway. The grade costs only this extra contraction per neighbour.

`evaluate.evaluate(..., site_rows=array)` runs this kernel instead of the plain one.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels import BLOCK, backpropagate_contractions, contract_moments, monomial_contractions, neighbour_features


@njit(cache=True, fastmath={"reassoc", "contract"})
def prefix_dot(adjoint, monomials, length):
    """sum_m adjoint[m] monomials[m] over the first `length` monomials. Reassociation lets it
    vectorise (as kernels.monomial_contractions); the rows need no bitwise rounding."""
    total = 0.0
    for m in range(length):
        total += adjoint[m] * monomials[m]
    return total


@njit(cache=True, fastmath=False, parallel=True)
def site_energies_gradients_and_rows(types, offsets, neighbor_types, vectors, min_dist, max_dist, scaling,
                                     radial_coeffs, species_coeffs, moment_coeffs, layout, max_neighbors,
                                     site_energies, pair_gradients, site_rows):
    """As `kernels.site_energies_and_gradients`, and also site_rows (N, n_parameters) = dV_i/dtheta."""
    n_atoms = types.shape[0]
    n_species = radial_coeffs.shape[0]
    n_radial = radial_coeffs.shape[2]
    n_rb = radial_coeffs.shape[3]
    n_basic = layout.basic_mu.shape[0]
    n_mono = layout.monomial_parent.shape[0]
    basic_mu, basic_mono, prefix = layout.basic_mu, layout.basic_monomial, layout.prefix_length
    degree, mapping = layout.monomial_degree, layout.mapping
    d_mono, d_lower, d_power = layout.derivative_monomial, layout.derivative_lower, layout.derivative_power
    species_start = n_species * n_species * n_radial * n_rb
    moment_start = species_start + n_species
    n_blocks = (n_atoms + BLOCK - 1) // BLOCK
    for block in prange(n_blocks):
        moments = np.empty(layout.moments_count)
        adjoint = np.empty(layout.moments_count)
        dense = np.empty((n_radial, n_mono))  # basic moments, then their adjoints, as [mu, monomial]
        radial = np.empty((max_neighbors, n_radial))
        radial_deriv = np.empty((max_neighbors, n_radial))
        monomials = np.empty((max_neighbors, n_mono))
        inv_r = np.empty(max_neighbors)
        units = np.empty((max_neighbors, 3))
        rb_values = np.empty((max_neighbors, n_rb))  # kept per neighbour: the radial rows need them
        rb_derivatives = np.empty(n_rb)
        weight = np.empty(n_mono)
        weight_deriv = np.empty(n_mono)
        for i in range(block * BLOCK, min(n_atoms, (block + 1) * BLOCK)):
            ti = types[i]
            start = offsets[i]
            count = offsets[i + 1] - start
            row = site_rows[i]
            row[:] = 0.0
            dense[:, :] = 0.0
            for jj in range(count):
                inv_r[jj] = neighbour_features(start + jj, ti, neighbor_types, vectors, min_dist, max_dist,
                                               scaling, radial_coeffs, layout, rb_values[jj], rb_derivatives,
                                               radial[jj], radial_deriv[jj], monomials[jj], units[jj])
                if inv_r[jj] == 0.0:  # beyond the cutoff: its monomials were not computed
                    continue
                for mu in range(n_radial):
                    f = radial[jj, mu]
                    for m in range(prefix[mu]):
                        dense[mu, m] += f * monomials[jj, m]
            for b in range(n_basic):
                moments[b] = dense[basic_mu[b], basic_mono[b]]
            contract_moments(moments, layout)
            energy = species_coeffs[ti]
            row[species_start + ti] = 1.0
            adjoint[:] = 0.0
            for s in range(mapping.shape[0]):
                energy += moment_coeffs[s] * moments[mapping[s]]
                row[moment_start + s] = moments[mapping[s]]
                adjoint[mapping[s]] += moment_coeffs[s]
            site_energies[i] = energy
            backpropagate_contractions(moments, adjoint, layout)
            # prefix monomials that are no basic moment of mu must weigh nothing in the radial rows
            dense[:, :] = 0.0
            for b in range(n_basic):
                dense[basic_mu[b], basic_mono[b]] = adjoint[b]
            for jj in range(count):
                p = start + jj
                if inv_r[jj] == 0.0:
                    pair_gradients[p, :] = 0.0
                    continue
                pair_start = ((ti * n_species + neighbor_types[p]) * n_radial) * n_rb
                weight[:] = 0.0
                weight_deriv[:] = 0.0
                for mu in range(n_radial):
                    f = radial[jj, mu]
                    fd = radial_deriv[jj, mu]
                    for m in range(prefix[mu]):
                        weight[m] += dense[mu, m] * f
                        weight_deriv[m] += dense[mu, m] * fd
                    along_mu = prefix_dot(dense[mu], monomials[jj], prefix[mu])  # dV_i/df_mu(r_ij)
                    for beta in range(n_rb):
                        row[pair_start + mu * n_rb + beta] += along_mu * rb_values[jj, beta]
                radial_part, degree_part, gx, gy, gz = monomial_contractions(
                    weight, weight_deriv, monomials[jj], degree, d_mono, d_lower, d_power)
                along = radial_part - inv_r[jj] * degree_part
                pair_gradients[p, 0] = along * units[jj, 0] + gx * inv_r[jj]
                pair_gradients[p, 1] = along * units[jj, 1] + gy * inv_r[jj]
                pair_gradients[p, 2] = along * units[jj, 2] + gz * inv_r[jj]
