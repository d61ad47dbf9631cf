"""MPI reductions (mpi4py) that give every rank, and every rank count, bit-identical sums.

Each rank holds whole configurations (grouped in shards). Sums are formed per configuration (or
per shard) locally, gathered into one array indexed by configuration (each entry is nonzero on
exactly one rank, so the MPI sum is exact), and then summed in configuration order on every
rank. The optimiser therefore takes the same path on 1 or n ranks.
"""

from __future__ import annotations

import numpy as np


def world():
    """MPI_COMM_WORLD when mpi4py is installed and more than one process runs, else None (serial)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


class Reducer:
    """Reductions over the ranks of `comm` (None: a single process)."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1

    def by_item(self, local_values: np.ndarray, local_items: np.ndarray, item_count: int) -> np.ndarray:
        """Array (item_count, ...) holding each rank's rows at its items (every item on one rank)."""
        local_values = np.asarray(local_values, dtype=np.float64)
        gathered = np.zeros((item_count,) + local_values.shape[1:])
        gathered[local_items] = local_values
        if self.comm is not None:
            from mpi4py import MPI

            self.comm.Allreduce(MPI.IN_PLACE, gathered, op=MPI.SUM)
        return gathered

    def sum_by_item(self, local_values: np.ndarray, local_items: np.ndarray, item_count: int) -> np.ndarray:
        """Sum over all items of all ranks, in item order: the same bits for any rank count."""
        return self.by_item(local_values, local_items, item_count).sum(axis=0)

    def minimum(self, value: float) -> float:
        if self.comm is None:
            return float(value)
        from mpi4py import MPI

        return float(self.comm.allreduce(float(value), op=MPI.MIN))
