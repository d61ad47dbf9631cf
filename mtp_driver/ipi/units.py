"""The one place where units change: i-PI's atomic units on the wire, ASE units everywhere else.

Wire: cell h in Bohr with lattice vectors as columns, positions in Bohr, energy and virial in
Hartree, forces in Hartree/Bohr. Inside: Å, eV, eV/Å, ASE cell (lattice vectors as rows).
"""

from __future__ import annotations

import numpy as np
from ase.units import Bohr, Hartree

FORCE_TO_WIRE = Bohr / Hartree


def geometry_from_wire(h: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3,3) column-vector cell and (N,3) positions in Bohr -> ASE cell and positions in Å."""
    return h.reshape(3, 3).T * Bohr, positions.reshape(-1, 3) * Bohr


def results_to_wire(
    energy: float, forces: np.ndarray, virial: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """eV, eV/Å, eV -> Hartree, Hartree/Bohr, Hartree; the virial transposed as i-PI lays it out."""
    return (
        float(energy) / Hartree,
        np.ascontiguousarray(forces, dtype=np.float64) * FORCE_TO_WIRE,
        np.ascontiguousarray(np.asarray(virial, dtype=np.float64).T) / Hartree,
    )
