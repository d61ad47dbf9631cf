"""The training loss (MLIP's definition) and its gradient with respect to every MTP parameter.

Per configuration c with N atoms, model values minus references d:

    L_c = w_e d(E)^2 + w_f sum_i |d(F_i)|^2 + w_s ||d(W)||_F^2

with W the 3x3 virial (MLIP's PlusStress up to sign, eV). The weights per configuration follow
MLIP's ``weighting``: "vibrations" (default) w_e = energy/N, w_f = forces, w_s = stress/N;
"molecules" w_e = energy, w_f = forces, w_s = stress; "structures" w_e = energy/N^2,
w_f = forces/N, w_s = stress/N^2; each times an optional per-configuration weight. The loss is
the mean of L_c over the configurations plus a small penalty that keeps the radial coefficient
vectors orthonormal (MLIP-3's): penalty_weight * (sum_mu (|c_mu|^2 - 1)^2 + sum_mu<nu (c_mu.c_nu)^2).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mtp_driver.mtp.evaluate import evaluate
from mtp_driver.mtp.layout import kernel_layout
from mtp_driver.mtp.model import MTP
from mtp_driver.mtp.neighbors import NeighborList
from mtp_driver.mtp.parameter_gradients import loss_gradient, parameter_offsets

from .dataset import Batch
from .options import LossWeights
from .parallel import Reducer

def configuration_weights(weights: LossWeights, batch: Batch, total_configs: int) -> np.ndarray:
    """(C, 3) weights of the energy, force and virial terms of each configuration, divided by
    the number of configurations of the whole training set and zero where a label is absent."""
    n = batch.atom_counts.astype(np.float64)
    energy_power, force_power = {"vibrations": (1, 0), "molecules": (0, 0), "structures": (2, 1)}[weights.weighting]
    per_configuration = np.stack([
        weights.energy / n**energy_power * batch.has_energy,
        weights.forces / n**force_power * batch.has_forces,
        weights.stress / n**energy_power * batch.has_virial,
    ], axis=1)
    return per_configuration * (batch.weight / total_configs)[:, None]


def parameters_of(mtp: MTP) -> np.ndarray:
    """The flat parameter vector [radial_coeffs, species_coeffs, moment_coeffs] (MLIP's order)."""
    return np.concatenate([mtp.radial_coeffs.ravel(), mtp.species_coeffs, mtp.moment_coeffs])


def with_parameters(mtp: MTP, parameters: np.ndarray) -> MTP:
    """A copy of `mtp` with the coefficients of the flat parameter vector."""
    species_start, moment_start, total = _offsets(mtp)
    if len(parameters) != total:
        raise ValueError(f"expected {total} parameters, got {len(parameters)}")
    S, K, R = mtp.species_count, mtp.radial_funcs_count, mtp.radial_basis_size
    return mtp.copy(radial_coeffs=parameters[:species_start].reshape(S, S, K, R),
                    species_coeffs=parameters[species_start:moment_start], moment_coeffs=parameters[moment_start:])


def _offsets(mtp: MTP) -> tuple[int, int, int]:
    return parameter_offsets(mtp.species_count, mtp.radial_funcs_count, mtp.radial_basis_size,
                             mtp.alpha_scalar_moments)


def radial_penalty(mtp: MTP, weight: float) -> tuple[float, np.ndarray]:
    """Orthonormality penalty on the radial coefficient vectors (one vector per radial function,
    over species pairs and basis functions) and its gradient with respect to radial_coeffs."""
    K = mtp.radial_funcs_count
    vectors = np.moveaxis(mtp.radial_coeffs, 2, 0).reshape(K, -1)
    deviation = vectors @ vectors.T - np.eye(K)
    # (|c|^2-1)^2 on the diagonal, (c_mu.c_nu)^2 once per pair: half the off-diagonal squares
    scale = np.where(np.eye(K, dtype=bool), 1.0, 0.5)
    value = weight * float(np.sum(scale * deviation**2))
    gradient = weight * 4.0 * (scale * deviation) @ vectors
    return value, np.moveaxis(gradient.reshape((K,) + mtp.radial_coeffs.shape[:2] + mtp.radial_coeffs.shape[3:]), 0, 2)


class Predictions(NamedTuple):
    energy: np.ndarray  # (C,) eV
    forces: np.ndarray  # (N, 3) eV/Å
    virial: np.ndarray  # (C, 3, 3) eV


class Evaluation(NamedTuple):
    loss: float
    gradient: np.ndarray | None  # d loss / d parameters
    terms: np.ndarray  # energy, force, virial and penalty parts of the loss
    rmse: np.ndarray  # energy per atom (eV/atom), force component (eV/Å)


def predict(mtp: MTP, batch: Batch, layout=None) -> Predictions:
    """Energies, forces and virials of every configuration of the batch (one evaluation of all its atoms)."""
    result = evaluate(mtp, batch.types, NeighborList(batch.neighbors, batch.vectors, batch.offsets), layout)
    firsts = batch.atom_starts[:-1]  # every configuration has atoms
    energy = np.add.reduceat(result.site_energies, firsts) if batch.size else np.zeros(0)
    virial = np.add.reduceat(result.site_virials, firsts) if batch.size else np.zeros((0, 3, 3))
    return Predictions(energy, result.forces, virial)


class Objective:
    """The loss over the configurations of all ranks; each rank evaluates its own batch."""

    def __init__(self, mtp: MTP, batch: Batch, weights: LossWeights, total_configs: int,
                 reducer: Reducer | None = None, penalty_weight: float = 1e-6):
        self.template = mtp
        self.layout = kernel_layout(mtp)
        self.batch = batch
        self.total_configs = total_configs
        self.reducer = reducer if reducer is not None else Reducer()
        self.penalty_weight = penalty_weight
        self.config_weights = configuration_weights(weights, batch, total_configs)
        self.atom_config = batch.atom_config
        self.pair_config = batch.pair_config
        self.first_block = np.searchsorted(batch.block_starts, batch.atom_starts[:-1])
        self.parameter_count = _offsets(mtp)[2]

    def mtp(self, parameters: np.ndarray) -> MTP:
        return with_parameters(self.template, parameters)

    def __call__(self, parameters: np.ndarray, gradient: bool = True) -> Evaluation:
        mtp = self.mtp(parameters)
        batch = self.batch
        energy, forces, virial = predict(mtp, batch, self.layout)
        energy_error = np.where(batch.has_energy, energy - batch.energy, 0.0)
        force_error = np.where(batch.has_forces[self.atom_config, None], forces - batch.forces, 0.0)
        virial_error = np.where(batch.has_virial[:, None, None], virial - batch.virial, 0.0)
        squared = np.stack([
            energy_error**2,
            np.add.reduceat(np.einsum("ia,ia->i", force_error, force_error), batch.atom_starts[:-1])
            if batch.size else np.zeros(0),
            np.einsum("cab,cab->c", virial_error, virial_error),
        ], axis=1)
        per_config = [self.config_weights * squared, _rmse_sums(batch, squared)]
        if gradient:
            per_config.append(self._gradient_by_configuration(mtp, energy_error, force_error, virial_error))
        # one exact reduction of everything indexed by configuration
        widths = [block.shape[1] for block in per_config]
        totals = self.reducer.sum_by_item(np.concatenate(per_config, axis=1), batch.index, self.total_configs)
        terms, rmse_sums, grad = np.split(totals, np.cumsum(widths)[:2])
        penalty, penalty_gradient = radial_penalty(mtp, self.penalty_weight)
        loss = float(terms.sum()) + penalty
        if gradient:
            grad[: penalty_gradient.size] += penalty_gradient.ravel()
        rmse = np.sqrt(rmse_sums[[0, 2]] / np.maximum(rmse_sums[[1, 3]], 1.0))
        return Evaluation(loss, grad if gradient else None, np.append(terms, penalty), rmse)

    def _gradient_by_configuration(self, mtp, energy_error, force_error, virial_error) -> np.ndarray:
        """(C, n_parameters): the gradient of each configuration's weighted loss term."""
        batch = self.batch
        w = 2.0 * self.config_weights
        energy_weights = (w[:, 0] * energy_error)[self.atom_config]
        force_weights = w[self.pair_config, 1, None]
        # force residuals as a displacement of each pair vector: F_i . w_p - F_j . w_p
        directions = force_weights * (force_error[batch.centers] - force_error[batch.neighbors])
        if np.any(w[:, 2] != 0.0):
            scaled = (w[:, 2, None, None] * virial_error)[self.pair_config]
            directions += np.einsum("pab,pb->pa", scaled, batch.vectors)
        gradients = np.empty((len(batch.block_starts) - 1, self.parameter_count))
        loss_gradient(
            batch.types, batch.offsets, batch.neighbor_types, batch.vectors, float(mtp.min_dist), float(mtp.max_dist),
            float(mtp.scaling), mtp.radial_coeffs, mtp.moment_coeffs, self.layout, batch.max_neighbors,
            batch.block_starts, energy_weights, directions, gradients,
        )
        return np.add.reduceat(gradients, self.first_block, axis=0) if batch.size else gradients[:0]


def _rmse_sums(batch: Batch, squared: np.ndarray) -> np.ndarray:
    """(C, 4): squared energy-per-atom error, its count, squared force error, its count."""
    n = batch.atom_counts
    return np.stack([squared[:, 0] / n**2, batch.has_energy, squared[:, 1], 3.0 * n * batch.has_forces], axis=1)
