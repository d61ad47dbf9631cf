"""Rows for the active set: per-atom parameter rows dV_i/dtheta of configurations, and their columns."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from mtp_driver.io.species import atom_types
from mtp_driver.mtp.evaluate import evaluate
from mtp_driver.mtp.layout import KernelLayout, kernel_layout
from mtp_driver.mtp.model import MTP
from mtp_driver.mtp.neighbors import build_neighbor_list
from mtp_driver.mtp.parameter_gradients import parameter_offsets

PARAMETER_CHOICES = ("all", "linear")


class SiteRows(NamedTuple):
    """Per-atom rows of several configurations, concatenated: configuration c owns rows
    atom_starts[c]:atom_starts[c+1]."""

    rows: np.ndarray  # (N, n_parameters): species/moment columns dimensionless, radial columns eV
    atom_starts: np.ndarray  # (C + 1,)

    def configuration_rows(self) -> np.ndarray:
        """(C, n_parameters): MLIP's configuration row (dE/dtheta) / N, the mean of the atom rows."""
        counts = np.diff(self.atom_starts)
        return np.add.reduceat(self.rows, self.atom_starts[:-1], axis=0) / counts[:, None]


def parameter_columns(mtp: MTP, parameters: str) -> np.ndarray:
    """Indices into the flat parameter vector: "all" (MLIP's default) or "linear" (species and moment
    coefficients only, in which the energy is linear)."""
    if parameters not in PARAMETER_CHOICES:
        raise ValueError(f"parameters must be one of {PARAMETER_CHOICES}, got {parameters!r}")
    species_start, _, total = parameter_offsets(mtp.species_count, mtp.radial_funcs_count, mtp.radial_basis_size,
                                                mtp.alpha_scalar_moments)
    return np.arange(0 if parameters == "all" else species_start, total)


def site_rows(mtp: MTP, images: Sequence, species: Sequence[str] | None,
              layout: KernelLayout | None = None) -> SiteRows:
    """dV_i/dtheta for every atom of every configuration (one kernel call per configuration).
    Types come from the MLIP types of `.cfg` input, else from `species` (default: the potential's)."""
    species = mtp.species if species is None else species
    layout = kernel_layout(mtp) if layout is None else layout
    blocks = []
    for atoms in images:
        if len(atoms) == 0:
            raise ValueError("a configuration has no atoms: it has no extrapolation grade")
        neighbor_list = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, mtp.max_dist)
        rows = np.empty((len(atoms), mtp.parameter_count))
        evaluate(mtp, atom_types(atoms, species), neighbor_list, layout, site_rows=rows)
        blocks.append(rows)
    atom_starts = np.concatenate([[0], np.cumsum([len(b) for b in blocks])]).astype(np.int64)
    rows = np.concatenate(blocks) if blocks else np.zeros((0, mtp.parameter_count))
    return SiteRows(rows, atom_starts)
