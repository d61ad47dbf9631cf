"""Full neighbour lists in CSR form for the kernels, built with vesin."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import vesin


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
    (cells smaller than twice the cutoff too); `pbc` is one bool or three."""
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    box = np.array(cell, dtype=np.float64).reshape(3, 3)
    box[~periodic] = 0.0  # vesin ignores the box along open directions only when they are zero
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    centers, neighbors, vectors = calculator.compute(positions, box, [bool(p) for p in periodic], quantities="ijD")
    centers = centers.astype(np.int64)
    offsets = np.searchsorted(centers, np.arange(len(positions) + 1)).astype(np.int64)
    return NeighborList(centers, neighbors.astype(np.int64), np.ascontiguousarray(vectors), offsets)
