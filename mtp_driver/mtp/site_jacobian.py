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

from .kernels import (BLOCK, backpropagate_contractions, basic_adjoints, pair_gradient, site_moments,
                      site_scratch)


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
    prefix, mapping = layout.prefix_length, layout.mapping
    species_start = n_species * n_species * n_radial * n_rb
    moment_start = species_start + n_species
    n_blocks = (n_atoms + BLOCK - 1) // BLOCK
    for block in prange(n_blocks):
        (moments, adjoint, dense, radial, radial_deriv, monomials, inv_r, units, rb_values, rb_derivatives,
         weight, weight_deriv) = site_scratch(layout, n_radial, n_rb, max_neighbors)
        for i in range(block * BLOCK, min(n_atoms, (block + 1) * BLOCK)):
            ti = types[i]
            start = offsets[i]
            count = offsets[i + 1] - start
            row = site_rows[i]
            row[:] = 0.0
            site_moments(ti, start, count, neighbor_types, vectors, min_dist, max_dist, scaling, radial_coeffs,
                         layout, rb_values, rb_derivatives, radial, radial_deriv, monomials, units, inv_r, dense,
                         moments)
            energy = species_coeffs[ti]
            row[species_start + ti] = 1.0
            adjoint[:] = 0.0
            for s in range(mapping.shape[0]):
                energy += moment_coeffs[s] * moments[mapping[s]]
                row[moment_start + s] = moments[mapping[s]]
                adjoint[mapping[s]] += moment_coeffs[s]
            site_energies[i] = energy
            backpropagate_contractions(moments, adjoint, layout)
            basic_adjoints(adjoint, layout, dense)
            for jj in range(count):
                p = start + jj
                pair_gradient(p, jj, dense, radial, radial_deriv, monomials, units, inv_r, layout, weight,
                              weight_deriv, pair_gradients)
                if inv_r[jj] == 0.0:
                    continue
                pair_start = ((ti * n_species + neighbor_types[p]) * n_radial) * n_rb
                for mu in range(n_radial):
                    along_mu = prefix_dot(dense[mu], monomials[jj], prefix[mu])  # dV_i/df_mu(r_ij)
                    for beta in range(n_rb):
                        row[pair_start + mu * n_rb + beta] += along_mu * rb_values[jj, beta]
