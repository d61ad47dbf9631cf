"""Full neighbour lists in CSR form for the kernels, built with vesin."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import vesin
from numba import njit

from mtp_driver.geometry import check_geometry


class NeighborList(NamedTuple):
    centers: np.ndarray  # (P,) int64, sorted
    neighbors: np.ndarray  # (P,) int64
    vectors: np.ndarray  # (P, 3) r_j - r_i + shift, Å
    offsets: np.ndarray  # (N + 1,) pairs of atom i are offsets[i]:offsets[i+1]

    @property
    def max_neighbors(self) -> int:
        return int(np.diff(self.offsets).max()) if len(self.offsets) > 1 else 0

    def distances(self) -> np.ndarray:
        return np.sqrt(np.einsum("pa,pa->p", self.vectors, self.vectors))


def build_neighbor_list(positions, cell, pbc, cutoff: float) -> NeighborList:
    """All pairs (i, j, image) with |r_j - r_i + shift| < cutoff, every periodic image included
    (cells smaller than twice the cutoff too); `pbc` is one bool or three. Raises `UnphysicalCell`
    for a structure vesin would crash, hang or run out of memory on (`mtp_driver.geometry.check_geometry`)."""
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    box = np.array(cell, dtype=np.float64).reshape(3, 3)
    box[~periodic] = 0.0  # vesin ignores the box along open directions only when they are zero
    check_geometry(positions, box, periodic, cutoff)
    # vesin's own sorting costs more than the whole unsorted search; a counting sort is O(pairs)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=False)
    centers, neighbors, vectors = calculator.compute(
        positions, box, [bool(p) for p in periodic], quantities="ijD", copy=False
    )
    return NeighborList(*sort_by_center(len(positions), centers, neighbors, vectors))


@njit(cache=True, fastmath=False)
def sort_by_center(n_atoms, centers, neighbors, vectors):
    """Counting sort of pairs by central atom (stable): sorted arrays and CSR offsets."""
    offsets = np.zeros(n_atoms + 1, dtype=np.int64)
    for p in range(centers.shape[0]):
        offsets[centers[p] + 1] += 1
    for i in range(n_atoms):
        offsets[i + 1] += offsets[i]
    fill = offsets[:-1].copy()
    sorted_centers = np.empty(centers.shape[0], dtype=np.int64)
    sorted_neighbors = np.empty(centers.shape[0], dtype=np.int64)
    sorted_vectors = np.empty((centers.shape[0], 3))
    for p in range(centers.shape[0]):
        q = fill[centers[p]]
        fill[centers[p]] += 1
        sorted_centers[q] = centers[p]
        sorted_neighbors[q] = neighbors[p]
        for a in range(3):
            sorted_vectors[q, a] = vectors[p, a]
    return sorted_centers, sorted_neighbors, sorted_vectors, offsets
