"""The linear step: for fixed radial coefficients, energies, forces and virials are linear in the
species and moment coefficients, so the loss is an exact weighted least-squares problem.

The problem is kept as the triangular factor R of the QR decomposition of the weighted
[design | target] matrix, not as normal equations: MTP basis functions are nearly dependent
(singular values of the column-scaled design span 1e-8 and several are exactly zero), and the
normal equations square that condition number past double precision (on the mlearn Cu set a
ridge large enough for Cholesky cost 0.7 % of the loss). Each shard of configurations is folded
into its own R piece by piece (the same shards on any number of ranks, so the result is
bit-identical); the shards' factors are then stacked in shard order and factorised once more.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

from mtp_driver.mtp.model import MTP
from mtp_driver.mtp.parameter_gradients import linear_design

from .dataset import Batch
from .parallel import Reducer

DESIGN_BYTES = 64 * 2**20  # design matrix held at once: bounds memory, keeps the LAPACK calls large
RCOND = 1e-12  # singular values below this fraction of the largest are numerically zero (dependent basis functions)


class LinearLeastSquares(NamedTuple):
    """Data loss as a function of the linear coefficients x: |R x - z|^2 + residual, with
    factor = [[R, z], [0, sqrt(residual)]] (upper triangular, n + 1 square)."""

    factor: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        """The Gram matrix R^T R (half the Hessian of the loss in x)."""
        r = self.factor[:-1, :-1]
        return r.T @ r

    def loss(self, coefficients: np.ndarray) -> float:
        misfit = self.factor[:-1, :-1] @ coefficients - self.factor[:-1, -1]
        return float(misfit @ misfit + self.factor[-1, -1] ** 2)

    def solve(self, ridge: float = 0.0) -> np.ndarray:
        """The minimiser, from the SVD of R with unit column norms: singular values below
        RCOND x the largest are dropped, the others damped by a ridge (relative to the largest squared)."""
        r, z = self.factor[:-1, :-1], self.factor[:-1, -1]
        norms = np.linalg.norm(r, axis=0)
        scale = np.where(norms > 0.0, norms, 1.0)
        u, s, vt = scipy.linalg.svd(r / scale, full_matrices=False, lapack_driver="gesvd")
        kept = s > RCOND * s[0] if len(s) and s[0] > 0 else np.zeros(len(s), dtype=bool)
        filtered = s[kept] / (s[kept] ** 2 + ridge * s[0] ** 2)
        return (vt[kept].T @ (filtered * (u[:, kept].T @ z))) / scale


def least_squares(mtp: MTP, layout, batch: Batch, config_weights: np.ndarray, shard_of_config: np.ndarray,
                  shard_count: int, reducer: Reducer) -> LinearLeastSquares:
    """The weighted least-squares problem of the linear coefficients over all ranks' configurations.

    `config_weights` (C, 3) are the energy, force and virial weights of the loss; configuration c
    of the batch belongs to shard shard_of_config[c] (non-decreasing within the batch). Each
    shard is folded in pieces that do not depend on the other shards of the rank, so its factor
    is the same for any number of ranks; one kernel call covers as many pieces as fit in memory."""
    n_linear = mtp.species_count + mtp.alpha_scalar_moments
    max_rows = DESIGN_BYTES // (8 * n_linear)
    rows = 3 * batch.atom_counts + 10
    shards, shard_starts = np.unique(shard_of_config, return_index=True)
    shard_stops = np.append(shard_starts[1:], batch.size)
    pieces = [(shard, piece) for shard, (first, stop) in enumerate(zip(shard_starts, shard_stops))
              for piece in _runs(rows, first, stop, max_rows)]
    factors = [np.zeros((0, n_linear + 1)) for _ in shards]
    for call in _group(pieces, rows, max_rows):
        first, stop = call[0][1][0], call[-1][1][1]
        blocks = _weighted_blocks(mtp, layout, batch, config_weights, first, stop)
        for shard, (piece_first, piece_stop) in call:
            factors[shard] = _folded(factors[shard], _piece_rows(blocks, batch, first, piece_first, piece_stop))
    local = np.zeros((len(shards), (n_linear + 1) ** 2))
    for shard, factor in enumerate(factors):
        local[shard] = _square(factor, n_linear + 1).ravel()
    # each shard lives on one rank, so gathering by shard gives the same stack on every rank
    stacked = reducer.by_item(local, shards, shard_count).reshape(shard_count * (n_linear + 1), n_linear + 1)
    return LinearLeastSquares(_square(_triangular(stacked), n_linear + 1))


def _folded(factor: np.ndarray, blocks) -> np.ndarray:
    """The R factor of `factor` stacked on the [design | target] rows of `blocks`."""
    count = factor.shape[0] + sum(len(target) for _, target in blocks)
    stacked = np.empty((count, factor.shape[1]), order="F")
    stacked[: factor.shape[0]] = factor
    row = factor.shape[0]
    for design, target in blocks:
        stacked[row: row + len(target), :-1] = design
        stacked[row: row + len(target), -1] = target
        row += len(target)
    return _triangular(stacked)


def _triangular(matrix: np.ndarray) -> np.ndarray:
    if matrix.shape[0] == 0:
        return matrix
    return scipy.linalg.qr(matrix, mode="r", overwrite_a=True, check_finite=False)[0]


def _square(factor: np.ndarray, size: int) -> np.ndarray:
    """An R factor padded with zero rows (fewer rows than columns) or cut (QR of a tall matrix) to size x size."""
    square = np.zeros((size, size))
    rows = min(size, factor.shape[0])
    square[:rows] = factor[:rows]
    return square


def _runs(rows: np.ndarray, first: int, stop: int, max_rows: int):
    """Configurations first..stop-1 cut into consecutive runs of at most max_rows rows (or one configuration)."""
    start, held = first, 0
    for c in range(first, stop):
        if held and held + rows[c] > max_rows:
            yield start, c
            start, held = c, 0
        held += rows[c]
    if stop > first:
        yield start, stop


def _group(pieces: list, rows: np.ndarray, max_rows: int):
    """Consecutive pieces together, at most max_rows rows per group (or one piece)."""
    group, held = [], 0
    for shard, (first, stop) in pieces:
        size = int(rows[first:stop].sum())
        if group and held + size > max_rows:
            yield group
            group, held = [], 0
        group.append((shard, (first, stop)))
        held += size
    if group:
        yield group


def _weighted_blocks(mtp: MTP, layout, batch: Batch, config_weights: np.ndarray, first: int, stop: int):
    """Energy, force and virial design rows of configurations first..stop-1 with their targets,
    all times the square roots of the weights."""
    n_linear = mtp.species_count + mtp.alpha_scalar_moments
    count = stop - first
    atoms = slice(batch.atom_starts[first], batch.atom_starts[stop])
    energy_rows = np.empty((count, n_linear))
    force_rows = np.empty((3 * (atoms.stop - atoms.start), n_linear))
    virial_rows = np.empty((count, 9, n_linear))
    linear_design(batch.types, batch.offsets, batch.neighbors, batch.neighbor_types, batch.vectors,
                  float(mtp.min_dist), float(mtp.max_dist), float(mtp.scaling), mtp.radial_coeffs, layout,
                  batch.max_neighbors, batch.atom_starts, first, energy_rows, force_rows, virial_rows)
    root = np.sqrt(config_weights[first:stop])
    force_root = np.repeat(np.repeat(root[:, 1], batch.atom_counts[first:stop]), 3)
    force_rows *= force_root[:, None]
    return (
        (energy_rows * root[:, 0, None], batch.energy[first:stop] * root[:, 0]),
        (force_rows, batch.forces[atoms].ravel() * force_root),
        ((virial_rows * root[:, 2, None, None]).reshape(-1, n_linear),
         (batch.virial[first:stop] * root[:, 2, None, None]).ravel()),
    )


def _piece_rows(blocks, batch: Batch, first: int, piece_first: int, piece_stop: int):
    """The rows of configurations piece_first..piece_stop-1 in blocks computed from configuration `first`."""
    (energy, energy_target), (force, force_target), (virial, virial_target) = blocks
    a, b = piece_first - first, piece_stop - first
    atom_a, atom_b = (batch.atom_starts[[piece_first, piece_stop]] - batch.atom_starts[first]) * 3
    return ((energy[a:b], energy_target[a:b]), (force[atom_a:atom_b], force_target[atom_a:atom_b]),
            (virial[9 * a: 9 * b], virial_target[9 * a: 9 * b]))
