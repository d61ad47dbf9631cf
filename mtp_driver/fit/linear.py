"""The linear step: for fixed radial coefficients, energies, forces and virials are linear in the
species and moment coefficients, so the loss is an exact weighted least-squares problem.

Its normal equations are summed per shard of configurations (the same shards on any number of
ranks, so the sum is bit-identical), then solved by Cholesky after a Jacobi scaling, with a tiny
ridge relative to the diagonal.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from mtp_driver.mtp.model import MTP
from mtp_driver.mtp.parameter_gradients import linear_design

from .dataset import Batch
from .parallel import Reducer

DESIGN_BYTES = 64 * 2**20  # design matrix held at once: bounds memory, keeps the BLAS products large


class NormalEquations(NamedTuple):
    """Data loss as a function of the linear coefficients x: x.M.x - 2 v.x + constant."""

    matrix: np.ndarray
    vector: np.ndarray
    constant: float

    def loss(self, coefficients: np.ndarray) -> float:
        return float(coefficients @ self.matrix @ coefficients - 2.0 * self.vector @ coefficients + self.constant)


def normal_equations(mtp: MTP, layout, batch: Batch, config_weights: np.ndarray, shard_of_config: np.ndarray,
                     shard_count: int, reducer: Reducer) -> NormalEquations:
    """Normal equations of the weighted least squares over all ranks' configurations.

    `config_weights` (C, 3) are the energy, force and virial weights of the loss; configuration c
    of the batch belongs to shard shard_of_config[c] (non-decreasing within the batch). Each
    shard is summed in pieces that do not depend on the other shards of the rank, so the sums
    are the same for any number of ranks; one kernel call covers as many pieces as fit in memory."""
    n_linear = mtp.species_count + mtp.alpha_scalar_moments
    max_rows = DESIGN_BYTES // (8 * n_linear)
    rows = 3 * batch.atom_counts + 10
    shards, shard_starts = np.unique(shard_of_config, return_index=True)
    shard_stops = np.append(shard_starts[1:], batch.size)
    pieces = [(shard, piece) for shard, (first, stop) in enumerate(zip(shard_starts, shard_stops))
              for piece in _runs(rows, first, stop, max_rows)]
    matrices = [np.zeros((n_linear, n_linear), order="F") for _ in shards]
    local = np.zeros((len(shards), n_linear * n_linear + n_linear + 1))
    for call in _group(pieces, rows, max_rows):
        first, stop = call[0][1][0], call[-1][1][1]
        blocks = _weighted_blocks(mtp, layout, batch, config_weights, first, stop)
        for shard, (piece_first, piece_stop) in call:
            for design, target in _piece_rows(blocks, batch, first, piece_first, piece_stop):
                # upper triangle of design^T design (BLAS syrk: half the work of a matrix product)
                matrices[shard] = scipy.linalg.blas.dsyrk(1.0, design.T, beta=1.0, c=matrices[shard], trans=0,
                                                          lower=0, overwrite_c=1)
                local[shard, n_linear * n_linear: -1] += design.T @ target
                local[shard, -1] += float(target @ target)
    for shard, matrix in enumerate(matrices):
        local[shard, : n_linear * n_linear] = matrix.ravel(order="C")
    total = reducer.sum_by_item(local, shards, shard_count)
    upper = np.triu(total[: n_linear * n_linear].reshape(n_linear, n_linear))
    return NormalEquations(upper + np.triu(upper, 1).T, total[n_linear * n_linear: -1], float(total[-1]))


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


def solve_normal_equations(equations: NormalEquations, ridge: float = 1e-10) -> np.ndarray:
    """Minimiser of the quadratic, with `ridge` added to the unit diagonal after Jacobi scaling."""
    diagonal = np.diag(equations.matrix)
    scale = np.sqrt(np.where(diagonal > 0.0, diagonal, 1.0))
    scaled = equations.matrix / np.outer(scale, scale) + ridge * np.eye(len(scale))
    rhs = equations.vector / scale
    try:
        solution = scipy.linalg.cho_solve(scipy.linalg.cho_factor(scaled), rhs)
    except np.linalg.LinAlgError:  # numerically singular despite the ridge: least squares instead
        solution = scipy.linalg.lstsq(scaled, rhs, cond=1e-14)[0]
    return solution / scale
