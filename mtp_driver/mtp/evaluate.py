"""Energy, site energies, forces and strain derivative of a configuration: the pure entry point."""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .kernels import forces_and_virial, site_energies_and_gradients
from .layout import KernelLayout, kernel_layout
from .model import MTP
from .neighbors import NeighborList


class Evaluation(NamedTuple):
    energy: float  # eV
    site_energies: np.ndarray  # (S,) eV
    forces: np.ndarray  # (N, 3) eV/Å
    strain_derivative: np.ndarray  # (3, 3) dE/d(strain) in eV = volume * ASE stress = -MLIP PlusStress
    site_virials: np.ndarray  # (S, 3, 3) eV: each site's share of strain_derivative (its pairs' g d^T)


def evaluate(mtp: MTP, types: np.ndarray, neighbor_list: NeighborList,
             layout: KernelLayout | None = None, site_rows: np.ndarray | None = None) -> Evaluation:
    """Evaluate a trained `mtp` for atoms of the given type indices over a prepared neighbour list.

    With `site_rows`, an (S, mtp.parameter_count) float64 array, the same kernel pass also fills it
    with dV_i/dtheta of every site (see `kernels`), for extrapolation grades.

    The sites are the first S = len(neighbor_list.offsets) - 1 of the N = len(types) atoms: all of them for a
    whole structure; a domain's owned atoms (`SkinNeighborList.update(..., centers=)`) for a decomposed system, whose ghost
    copies then get forces (N, 3) that belong to their originals."""
    if not mtp.is_trained:
        raise ValueError("the potential is untrained (no radial_coeffs/moment_coeffs): train it first")
    layout = kernel_layout(mtp) if layout is None else layout
    types = np.ascontiguousarray(types, dtype=np.int64)
    n_atoms = len(types)
    n_sites = len(neighbor_list.offsets) - 1
    site_energies = np.empty(n_sites)
    site_forces = np.empty((n_sites, 3))
    site_virials = np.empty((n_sites, 3, 3))
    pair_gradients = np.empty((len(neighbor_list.neighbors), 3))
    arguments = (types, neighbor_list.offsets, neighbor_list.neighbors, neighbor_list.vectors,
                 float(mtp.min_dist), float(mtp.max_dist), float(mtp.scaling), mtp.radial_coeffs, mtp.species_coeffs,
                 mtp.moment_coeffs, layout, max(neighbor_list.max_neighbors, 1), site_energies, site_forces, site_virials,
                 pair_gradients)
    if site_rows is None:
        site_rows = np.empty((0, 0))
    elif site_rows.shape != (n_sites, mtp.parameter_count) or site_rows.dtype != np.float64:
        raise ValueError(f"site_rows must be a float64 array of shape {(n_sites, mtp.parameter_count)}")
    site_energies_and_gradients(*arguments, site_rows, numba.get_num_threads())
    forces, strain_derivative = forces_and_virial(n_atoms, neighbor_list.neighbors, pair_gradients, site_forces,
                                                  site_virials)
    return Evaluation(float(site_energies.sum()), site_energies, forces, strain_derivative, site_virials)
