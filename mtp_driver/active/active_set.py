"""The active set: the rows of the training data that span the most volume, and their inverse.

Rows are parameter gradients (see `rows.py`). Two kinds, as in MLIP:

* ``"cfg"``: one row per configuration, (dE/dtheta) / N;
* ``"nbh"``: one row per atom (neighbourhood), dV_i/dtheta.

A configuration-mode active set needs at least as many configurations as parameters. With fewer
(always so at the start of on-the-fly learning) `build_active_set` uses neighbourhood rows instead
(``mode`` then says ``"nbh"`` and ``requested_mode`` says ``"cfg"``): every atom is a row, so a few
configurations already give thousands, and a configuration's grade is the largest grade of its atoms.
MLIP instead keeps placeholder rows, which inflates the grades of ordinary configurations.

Some directions in parameter space are never determined by data: scaling a radial function up and
the coefficients of the basis functions that use it down leaves every energy unchanged, so the rows
satisfy exact linear relations (11 of them for the 125-parameter Li potential of Zuo et al.). The
columns kept are those of a column-pivoted QR of the (column-normalised) training rows whose pivot
exceeds `RANK_TOLERANCE` of the first; the grade is defined on them. A row must also satisfy the
relations of the dropped columns: one that does not (a species or species pair the data has never
seen, or a new direction while the data are still few, e.g. one perfect lattice) lies outside
the span of the training rows, where MaxVol's coefficients see nothing. Its grade is then its
relative residual in the dropped columns over `OUTSIDE_TOLERANCE` (a new species: 1e6).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.linalg

from mtp_driver.mtp.layout import KernelLayout
from mtp_driver.mtp.model import MTP

from .coefficients import max_abs_products
from .fingerprint import potential_fingerprint
from .maxvol import SWAP_THRESHOLD, maxvol
from .rows import SiteRows, parameter_columns, site_rows

MODES = ("cfg", "nbh")
RANK_TOLERANCE = 1e-9  # relative pivot size below which a parameter direction counts as undetermined
OUTSIDE_TOLERANCE = 1e-6  # relative residual in the dropped columns that grades 1 (exact relations leave ~1e-13)


@dataclass(eq=False)
class ActiveSet:
    """A MaxVol active set for one potential (identified by its fingerprint)."""

    mode: str  # "cfg" or "nbh": what a row is
    parameters: str  # "all" or "linear": which parameters were considered
    columns: np.ndarray  # (n,) indices into the flat parameter vector that the data determine
    column_scale: np.ndarray  # (n,) rows are multiplied by these (1 / column norms of the training rows)
    rows: np.ndarray  # (n, n) the active rows, scaled
    inverse: np.ndarray  # (n, n) inverse of `rows`
    sources: np.ndarray  # (n, 2) int64: (training configuration, atom or -1 in cfg mode) of each row
    fingerprint: str  # of the potential the rows were computed with
    parameter_count: int  # of the potential (length of a full row)
    species: tuple[str, ...] | None = None
    requested_mode: str | None = None  # the mode asked for, when another one was used
    # parameter columns considered but not determined by the data, and the active rows' raw values there
    dropped_columns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dropped_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    _projection: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.columns)

    @property
    def projection(self) -> np.ndarray:
        """(parameter_count, n): full rows times this are the coefficients over the active rows."""
        if self._projection is None:
            projection = np.zeros((self.parameter_count, self.size))
            projection[self.columns] = self.column_scale[:, None] * self.inverse
            self._projection = projection
        return self._projection

    def row_grades(self, rows: np.ndarray) -> np.ndarray:
        """Extrapolation grade max_j |(b A^-1)_j| of each full parameter row b (dimensionless), or its part
        outside the training rows' span (see the module notes) if larger."""
        rows = np.ascontiguousarray(np.atleast_2d(rows), dtype=np.float64)
        grades = np.empty(len(rows))
        max_abs_products(rows, self.projection, self.dropped_columns, np.ascontiguousarray(self.dropped_rows),
                         1.0 / OUTSIDE_TOLERANCE, grades)
        return grades

    def check_potential(self, mtp: MTP) -> None:
        """Raise ValueError if `mtp` is not the potential this active set was built for."""
        if potential_fingerprint(mtp) != self.fingerprint:
            raise ValueError("the active set was built for a different potential (its parameter fingerprint "
                             "differs, e.g. after retraining): rebuild it from the training set")


def build_active_set(mtp: MTP, images: Sequence, species: Sequence[str] | None = None, mode: str = "cfg",
                     parameters: str = "all", layout: KernelLayout | None = None) -> ActiveSet:
    """MaxVol active set of the training configurations `images` for `mtp` (see the module notes)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    columns = parameter_columns(mtp, parameters)
    if not len(images):
        raise ValueError("an active set needs at least one training configuration")
    species = mtp.species if species is None else species
    rows = site_rows(mtp, images, species, layout)
    requested_mode = None
    if mode == "cfg" and len(images) < len(columns):
        warnings.warn(f"{len(images)} configurations for {len(columns)} parameters: the active set uses "
                      "neighbourhood rows (mode 'nbh') instead", stacklevel=2)
        mode, requested_mode = "nbh", "cfg"
    candidate_rows, sources = _rows_of_mode(rows, mode)
    kept, scale = determined_columns(candidate_rows[:, columns])
    dropped = np.setdiff1d(columns, columns[kept]).astype(np.int64)
    columns = columns[kept]
    scaled = candidate_rows[:, columns] * scale
    result = maxvol(scaled, threshold=SWAP_THRESHOLD)
    return ActiveSet(mode=mode, parameters=parameters, columns=columns, column_scale=scale,
                     rows=scaled[result.selected], inverse=result.inverse, sources=sources[result.selected],
                     fingerprint=potential_fingerprint(mtp), parameter_count=mtp.parameter_count,
                     species=None if species is None else tuple(species), requested_mode=requested_mode,
                     dropped_columns=dropped, dropped_rows=candidate_rows[result.selected][:, dropped])


def _rows_of_mode(rows: SiteRows, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of this mode and their (configuration, atom) sources."""
    counts = np.diff(rows.atom_starts)
    configurations = np.repeat(np.arange(len(counts)), counts)
    if mode == "cfg":
        return rows.configuration_rows(), np.column_stack([np.arange(len(counts)), np.full(len(counts), -1)])
    atoms = np.arange(len(configurations)) - rows.atom_starts[configurations]
    return rows.rows, np.column_stack([configurations, atoms])


def determined_columns(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns of `matrix` that its rows determine, and 1 / their norms; the others are linear
    combinations of these up to `RANK_TOLERANCE` (or zero: a species absent from the data)."""
    norms = np.linalg.norm(matrix, axis=0)
    nonzero = np.flatnonzero(norms > 0.0)
    if not len(nonzero):
        raise ValueError("every parameter row is zero: the configurations have no neighbours within the cutoff")
    normalised = matrix[:, nonzero] / norms[nonzero]
    triangular, pivots = scipy.linalg.qr(normalised, mode="r", pivoting=True)
    diagonal = np.abs(np.diag(triangular))
    rank = int(np.count_nonzero(diagonal > RANK_TOLERANCE * diagonal[0]))
    kept = nonzero[np.sort(pivots[:rank])]
    return kept, 1.0 / norms[kept]
