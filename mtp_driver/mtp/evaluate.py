"""Energy, site energies, forces and strain derivative of a configuration: the pure entry point."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels import forces_and_virial, site_energies_and_gradients
from .layout import KernelLayout, kernel_layout
from .model import MTP
from .neighbors import NeighborList


class Evaluation(NamedTuple):
    energy: float  # eV
    site_energies: np.ndarray  # (N,) eV
    forces: np.ndarray  # (N, 3) eV/Å
    strain_derivative: np.ndarray  # (3, 3) dE/d(strain) in eV = volume * ASE stress = -MLIP PlusStress


def evaluate(mtp: MTP, types: np.ndarray, neighbor_list: NeighborList,
             layout: KernelLayout | None = None) -> Evaluation:
    """Evaluate a trained `mtp` for atoms of the given type indices over a prepared neighbour list."""
    if not mtp.is_trained:
        raise ValueError("the potential is untrained (no radial_coeffs/moment_coeffs): train it first")
    layout = kernel_layout(mtp) if layout is None else layout
    types = np.ascontiguousarray(types, dtype=np.int64)
    n_atoms = len(types)
    site_energies = np.empty(n_atoms)
    pair_gradients = np.empty((len(neighbor_list.centers), 3))
    site_energies_and_gradients(
        types, neighbor_list.offsets, types[neighbor_list.neighbors], neighbor_list.vectors,
        float(mtp.min_dist), float(mtp.max_dist), float(mtp.scaling), mtp.radial_coeffs, mtp.species_coeffs,
        mtp.moment_coeffs, layout, max(neighbor_list.max_neighbors, 1), site_energies, pair_gradients,
    )
    forces, strain_derivative = forces_and_virial(
        n_atoms, neighbor_list.centers, neighbor_list.neighbors, neighbor_list.vectors, pair_gradients
    )
    return Evaluation(float(site_energies.sum()), site_energies, forces, strain_derivative)

