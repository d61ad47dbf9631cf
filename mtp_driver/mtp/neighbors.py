"""Full neighbour lists in CSR form for the kernels, built with vesin; `SkinNeighborList` reuses one while
atoms move little (MD steps, relaxation steps)."""

from __future__ import annotations

import threading
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


class _SkinPairs(NamedTuple):
    """Pairs within cutoff + skin of the structure at `positions` (sorted by centre), with their cell shifts."""

    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    centers: np.ndarray
    neighbors: np.ndarray
    shifts: np.ndarray  # (P, 3) float: r_j - r_i + shifts @ cell
    offsets: np.ndarray


class SkinNeighborList:
    """Neighbour lists of one cutoff for a sequence of structures, from pairs found within cutoff + skin and
    reused while the cell and periodicity are the same and no atom has moved more than skin / 2 since they
    were found (then no pair can have come within the cutoff unseen). A reused list is the pairs within the
    cutoff at the new positions, in the same order: the same list a new search gives, up to the order of
    the pairs. Safe to share between threads (one consistent set of pairs is read per update)."""

    def __init__(self, cutoff: float, skin: float = 0.3):
        if skin < 0:
            raise ValueError("the skin must be >= 0 Å")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self._local = threading.local()
        self.searches = 0  # vesin searches made, all threads (for tests and benchmarks)

    def update(self, positions, cell, pbc) -> NeighborList:
        """The neighbour list of this structure (Å), like `build_neighbor_list(positions, cell, pbc, cutoff)`."""
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        cell = np.array(cell, dtype=np.float64).reshape(3, 3)
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        pairs = getattr(self._local, "pairs", None)
        if self.skin == 0.0 or pairs is None or not self._still_valid(pairs, positions, cell, pbc):
            pairs = self._search(positions, cell, pbc)
            self._local.pairs = pairs
        return NeighborList(*pairs_within(positions, pairs.cell, pairs.centers, pairs.neighbors, pairs.shifts,
                                          pairs.offsets, self.cutoff))

    def _still_valid(self, pairs: _SkinPairs, positions, cell, pbc) -> bool:
        if positions.shape != pairs.positions.shape or not (np.array_equal(cell, pairs.cell)
                                                             and np.array_equal(pbc, pairs.pbc)):
            return False
        moved = np.einsum("ia,ia->i", positions - pairs.positions, positions - pairs.positions).max(initial=0.0)
        return bool(moved < (0.5 * self.skin) ** 2)  # False for NaN positions: a new search refuses them

    def _search(self, positions, cell, pbc) -> _SkinPairs:
        box = cell.copy()
        box[~pbc] = 0.0  # vesin ignores the box along open directions only when they are zero
        check_geometry(positions, box, pbc, self.cutoff + self.skin)
        calculator = vesin.NeighborList(cutoff=self.cutoff + self.skin, full_list=True, sorted=False)
        centers, neighbors, shifts = calculator.compute(positions, box, [bool(p) for p in pbc], quantities="ijS",
                                                        copy=False)
        self.searches += 1
        centers, neighbors, shifts, offsets = sort_by_center(len(positions), centers, neighbors,
                                                             shifts.astype(np.float64))
        return _SkinPairs(positions.copy(), cell.copy(), pbc.copy(), centers, neighbors, shifts, offsets)


@njit(cache=True, fastmath=False)
def pairs_within(positions, cell, centers, neighbors, shifts, offsets, cutoff):
    """The pairs closer than `cutoff` at these positions, their vectors r_j - r_i + shift @ cell, CSR offsets."""
    n_atoms = offsets.shape[0] - 1
    kept_centers = np.empty(centers.shape[0], dtype=np.int64)
    kept_neighbors = np.empty(centers.shape[0], dtype=np.int64)
    vectors = np.empty((centers.shape[0], 3))
    kept_offsets = np.zeros(n_atoms + 1, dtype=np.int64)
    cutoff_squared = cutoff * cutoff
    q = 0
    for i in range(n_atoms):
        for p in range(offsets[i], offsets[i + 1]):
            j = neighbors[p]
            length_squared = 0.0
            for a in range(3):
                d = positions[j, a] - positions[i, a] + (shifts[p, 0] * cell[0, a] + shifts[p, 1] * cell[1, a]
                                                         + shifts[p, 2] * cell[2, a])
                vectors[q, a] = d
                length_squared += d * d
            if length_squared < cutoff_squared:
                kept_centers[q] = i
                kept_neighbors[q] = j
                q += 1
        kept_offsets[i + 1] = q
    return kept_centers[:q], kept_neighbors[:q], vectors[:q], kept_offsets


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
