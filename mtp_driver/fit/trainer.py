"""Fitting an MTP: species and moment coefficients by exact least squares, radial coefficients by
L-BFGS, on any number of MPI ranks with the same result.

1. optionally set min_dist to 0.99 x the shortest training distance;
2. an untrained potential gets orthonormal radial coefficient vectors ("random": seeded random,
   "same": radial function mu = Chebyshev polynomial mu) and a `scaling` that makes the mean
   site sum of the first radial basis function 1; a trained one is resumed as it is;
3. method "projected" (default; variable projection): L-BFGS-B over the radial coefficients of
   the loss minimised over the linear coefficients, i.e. every evaluation solves the linear
   least squares exactly and takes the gradient there (its gradient in the radial coefficients
   is the partial gradient at the optimal linear ones). Method "joint" (MLIP's scheme): L-BFGS-B
   over all parameters, restarted after a linear step at each iteration of `linear_steps`, with
   the linear coefficients whitened by the Cholesky factor of their exact Hessian;
4. stop at `max_iter`, when the last `window` loss evaluations lowered the loss by less than
   `tolerance` (relative), when L-BFGS cannot progress, or early on a validation set.

Measured on the mlearn Mo set (level 16, 2 cores, loss x 1e2): "projected" 5.27 after 30
evaluations (25 s) and 5.04 when converged (250 iterations); "joint" 5.56 after 400 iterations
(105 s), 5.45 after 1500 (without whitening; 400 s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import scipy.linalg
import scipy.optimize

from mtp_driver.mtp.model import MTP

from .dataset import Batch, make_batch, shard_bounds, shards_of_rank
from .linear import LinearLeastSquares, least_squares
from .loss import Evaluation, Objective, parameters_of, with_parameters
from .options import LossWeights, TrainOptions
from .parallel import Reducer


@dataclass
class TrainResult:
    mtp: MTP
    history: list[dict]  # one entry per L-BFGS iteration (and per linear step)
    stop_reason: str
    iterations: int
    evaluations: int  # loss + gradient evaluations
    seconds: float
    loss: float  # training loss of the returned potential


def shortest_distance(batch: Batch, reducer: Reducer) -> float:
    return reducer.minimum(batch.shortest_distance())


def initial_radial_coeffs(mtp: MTP, init: str, seed: int) -> np.ndarray:
    """Orthonormal radial coefficient vectors (one per radial function over species pairs and basis)."""
    S, K, R = mtp.species_count, mtp.radial_funcs_count, mtp.radial_basis_size
    if init == "same":
        vectors = np.zeros((K, S, S, R))
        vectors[np.arange(K), :, :, np.minimum(np.arange(K), R - 1)] = 1.0 / S
    else:
        random = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(S * S * R, K))
        vectors = np.linalg.qr(random)[0].T.reshape(K, S, S, R)
    return np.ascontiguousarray(np.moveaxis(vectors, 0, 2))


def normalising_scaling(mtp: MTP, batch: Batch, reducer: Reducer, total_configs: int) -> float:
    """The `scaling` that makes the mean over atoms of sum_j (r_ij - max_dist)^2 * scaling equal 1."""
    r = np.sqrt(np.einsum("pa,pa->p", batch.vectors, batch.vectors))
    squares = np.where(r < mtp.max_dist, (r - mtp.max_dist) ** 2, 0.0)
    per_config = np.stack([np.add.reduceat(squares, batch.pair_starts[:-1]) if len(squares) else
                           np.zeros(batch.size), batch.atom_counts], axis=1)
    per_config[np.diff(batch.pair_starts) == 0, 0] = 0.0  # reduceat repeats a value for empty ranges
    site_sum, atoms = reducer.sum_by_item(per_config, batch.index, total_configs)
    return float(atoms / site_sum) if site_sum > 0 else 1.0


WHITENING_RIDGE = 1e-10  # relative to the unit diagonal: a preconditioner needs no more accuracy


class Whitening:
    """L-BFGS variables: the radial coefficients as they are, the species and moment coefficients
    times the Cholesky factor U of their exact loss Hessian (U^T U = 2 R^T R of the least squares),
    so that block of the Hessian is the identity however correlated the basis functions are."""

    def __init__(self, problem: LinearLeastSquares | None, parameter_count: int):
        self.start = parameter_count - (len(problem.factor) - 1 if problem is not None else 0)
        if problem is None:
            self.factor = np.zeros((0, 0))
            return
        matrix = problem.matrix
        diagonal = np.diag(matrix)
        scale = np.sqrt(np.where(diagonal > 0.0, diagonal, 1.0))
        scaled = matrix / np.outer(scale, scale) + WHITENING_RIDGE * np.eye(len(scale))
        self.factor = np.sqrt(2.0) * scipy.linalg.cholesky(scaled, lower=False) * scale[None, :]

    def variables(self, parameters: np.ndarray) -> np.ndarray:
        variables = parameters.copy()
        variables[self.start:] = self.factor @ parameters[self.start:]
        return variables

    def parameters(self, variables: np.ndarray) -> np.ndarray:
        parameters = variables.copy()
        parameters[self.start:] = scipy.linalg.solve_triangular(self.factor, variables[self.start:])
        return parameters

    def gradient(self, gradient: np.ndarray) -> np.ndarray:
        transformed = gradient.copy()
        transformed[self.start:] = scipy.linalg.solve_triangular(self.factor, gradient[self.start:], trans="T")
        return transformed


class Trainer:
    """Training state on one rank: its share of the data, the objective, and the parameters."""

    def __init__(self, mtp: MTP, train_images: Sequence, valid_images: Sequence | None = None,
                 species: Sequence[str] | None = None, options: TrainOptions | None = None,
                 comm=None, train_weights=None):
        self.options = options if options is not None else TrainOptions()
        self.reducer = Reducer(comm)
        species = species if species is not None else mtp.species
        counts = np.array([len(atoms) for atoms in train_images])
        self.total_configs = len(counts)
        if self.total_configs == 0:
            raise ValueError("the training set is empty")
        shard_count = max(self.options.shard_count, self.reducer.size)
        bounds = shard_bounds(counts, shard_count)
        mine = shards_of_rank(bounds, counts, self.reducer.rank, self.reducer.size)
        index = np.concatenate([np.arange(bounds[s], bounds[s + 1]) for s in mine] + [np.zeros(0, np.int64)])
        self.shard_of_config = np.searchsorted(bounds, index, side="right") - 1
        self.shard_count = shard_count
        weights = None if train_weights is None else np.asarray(train_weights, dtype=np.float64)[index]
        self.batch = make_batch([train_images[i] for i in index], species, mtp.max_dist, index, weights)
        self.valid_batch = None
        if valid_images:
            valid_index = np.arange(len(valid_images))[self.reducer.rank:: self.reducer.size]
            self.valid_batch = make_batch([valid_images[i] for i in valid_index], species, mtp.max_dist, valid_index)
        self.mtp = self._prepared(mtp, species)
        self.objective = Objective(self.mtp, self.batch, self.options.weights, self.total_configs, self.reducer,
                                   self.options.penalty_weight)
        self.valid_objective = None
        if self.valid_batch is not None:
            self.valid_objective = Objective(self.mtp, self.valid_batch, self.options.weights, len(valid_images),
                                             self.reducer, penalty_weight=0.0)
        self.parameters = parameters_of(self.mtp)
        self.radial_count = self.mtp.radial_coeffs.size
        self.whitening = Whitening(None, len(self.parameters))
        self.history: list[dict] = []
        self.evaluations = 0
        self.iterations = 0
        self.started = time.perf_counter()
        self._last: tuple[np.ndarray, Evaluation] | None = None

    def _prepared(self, mtp: MTP, species) -> MTP:
        """min_dist update, species names, and the initial radial coefficients of an untrained potential."""
        changes = {}
        if species is not None and mtp.species is None:
            changes["species"] = tuple(species)
        if self.options.update_min_dist:
            changes["min_dist"] = 0.99 * shortest_distance(self.batch, self.reducer)
        if mtp.radial_coeffs is None:
            changes["radial_coeffs"] = initial_radial_coeffs(mtp, self.options.init, self.options.seed)
            changes["scaling"] = normalising_scaling(mtp, self.batch, self.reducer, self.total_configs)
        if mtp.species_coeffs is None or mtp.moment_coeffs is None:
            changes["species_coeffs"] = np.zeros(mtp.species_count)
            changes["moment_coeffs"] = np.zeros(mtp.alpha_scalar_moments)
        prepared = mtp.copy(**changes)
        prepared.validate()
        return prepared

    # ------------------------------------------------------------------ evaluations

    def evaluate(self, parameters: np.ndarray, gradient: bool = True) -> Evaluation:
        evaluation = self.objective(parameters, gradient)
        self.evaluations += 1
        self._last = (parameters.copy(), evaluation)
        return evaluation

    def loss_at(self, parameters: np.ndarray) -> float:
        """The loss at `parameters`: the last evaluation's if it was there, else a new one (no gradient)."""
        if self._last is not None and np.array_equal(self._last[0], parameters):
            return self._last[1].loss
        return self.evaluate(parameters, gradient=False).loss

    def validation(self, parameters: np.ndarray) -> Evaluation | None:
        return None if self.valid_objective is None else self.valid_objective(parameters, gradient=False)

    def record(self, kind: str, evaluation: Evaluation, parameters: np.ndarray) -> dict:
        entry = dict(kind=kind, iteration=self.iterations, evaluations=self.evaluations, loss=evaluation.loss,
                     terms=evaluation.terms.tolist(), energy_rmse=float(evaluation.rmse[0]),
                     force_rmse=float(evaluation.rmse[1]), seconds=time.perf_counter() - self.started)
        if kind != "lbfgs" or self.iterations % self.options.valid_every == 0:
            valid = self.validation(parameters)
            if valid is not None:
                entry.update(valid_loss=valid.loss, valid_energy_rmse=float(valid.rmse[0]),
                             valid_force_rmse=float(valid.rmse[1]))
        self.history.append(entry)
        return entry

    # ------------------------------------------------------------------ steps

    def solved(self, parameters: np.ndarray) -> tuple[np.ndarray, LinearLeastSquares]:
        """`parameters` with the species and moment coefficients that minimise the loss for its radial ones."""
        problem = least_squares(self.mtp_of(parameters), self.objective.layout, self.batch,
                                self.objective.config_weights, self.shard_of_config, self.shard_count, self.reducer)
        solved = parameters.copy()
        solved[self.radial_count:] = problem.solve(self.options.ridge)
        return solved, problem

    def linear_step(self) -> Evaluation:
        """Solve for the species and moment coefficients (kept if that lowers the loss) and whiten
        the "joint" L-BFGS variables with the new least-squares factor."""
        candidate, problem = self.solved(self.parameters)
        before = self.loss_at(self.parameters)
        after = self.evaluate(candidate)
        if after.loss <= before:
            self.parameters = candidate
        else:
            after = self.evaluate(self.parameters)
        self.whitening = Whitening(problem, len(self.parameters))
        return after

    def projected_lbfgs(self, iterations: int, on_iteration: Callable[[Evaluation], bool]) -> str:
        """L-BFGS over the radial coefficients, the linear ones solved exactly at every evaluation."""
        radial = slice(0, self.radial_count)

        def loss_and_gradient(radial_coeffs):
            parameters = self.parameters.copy()
            parameters[radial] = radial_coeffs
            evaluation = self.evaluate(self.solved(parameters)[0])
            return evaluation.loss, evaluation.gradient[radial]

        return self._lbfgs(loss_and_gradient, self.parameters[radial].copy(), iterations, on_iteration)

    def joint_lbfgs(self, iterations: int, on_iteration: Callable[[Evaluation], bool]) -> str:
        """L-BFGS over all parameters in whitened variables."""
        whitening = self.whitening

        def loss_and_gradient(variables):
            evaluation = self.evaluate(whitening.parameters(variables))
            return evaluation.loss, whitening.gradient(evaluation.gradient)

        return self._lbfgs(loss_and_gradient, whitening.variables(self.parameters), iterations, on_iteration)

    def _lbfgs(self, loss_and_gradient, start: np.ndarray, iterations: int, on_iteration) -> str:
        """Up to `iterations` L-BFGS-B iterations; self.parameters follows the accepted points.
        Returns why it stopped."""
        evaluated = [None]  # the variables of the last evaluation

        def tracked(variables):
            evaluated[0] = variables.copy()
            return loss_and_gradient(variables)

        def accept(variables):
            if not np.array_equal(variables, evaluated[0]):  # L-BFGS-B ends on the accepted point; in case not
                tracked(variables)
            self.parameters = self._last[0]

        stopped = []

        def callback(intermediate_result):
            accept(intermediate_result.x)
            self.iterations += 1
            if on_iteration(self._last[1]):
                stopped.append(True)
                raise StopIteration

        result = scipy.optimize.minimize(
            tracked, start, jac=True, method="L-BFGS-B", callback=callback,
            # ftol/gtol 0: the iteration budget and our own convergence test decide, not SciPy's
            # defaults (its ftol stops at once on losses << 1)
            options=dict(maxiter=iterations, maxfun=20 * iterations + 20, maxcor=self.options.lbfgs_memory,
                         ftol=0.0, gtol=0.0),
        )
        if stopped:
            return "stopped"
        accept(result.x)
        return "iterations" if result.nit >= iterations else "no progress"

    def mtp_of(self, parameters: np.ndarray) -> MTP:
        return with_parameters(self.mtp, parameters)


def train(mtp: MTP, train_images: Sequence, valid_images: Sequence | None = None,
          species: Sequence[str] | None = None, options: TrainOptions | None = None, comm=None,
          train_weights=None, progress: bool = True, checkpoint: Callable[[MTP], None] | None = None) -> TrainResult:
    """Fit `mtp` (untrained, or trained to resume) to labelled ase.Atoms; see the module docstring.

    `species[i]` is the chemical symbol of type i (default: the potential's). With `comm` (an
    mpi4py communicator) each rank fits its share of the configurations; every rank returns the
    same potential. `checkpoint(mtp)` is called on rank 0 after each linear step and every
    `options.window` iterations."""
    options = options if options is not None else TrainOptions()
    if options.init == "best" and not mtp.is_trained:
        # no start wins on every data set (mlearn: Cu prefers "same", Li "random"); the training loss decides
        fits = [train(mtp, train_images, valid_images, species, replace(options, init=init), comm, train_weights,
                      progress, checkpoint) for init in ("same", "random")]
        return min(fits, key=lambda fit: fit.loss)
    trainer = Trainer(mtp, train_images, valid_images, species, options, comm, train_weights)
    is_root = trainer.reducer.rank == 0
    bar = _progress_bar(options.max_iter, enabled=progress and is_root)
    best = {"loss": np.inf, "parameters": trainer.parameters.copy(), "stale": 0}
    losses = []

    def on_linear_step(evaluation):
        entry = trainer.record("linear", evaluation, trainer.parameters)
        losses.append((trainer.evaluations, evaluation.loss))
        _show(bar, entry)
        if checkpoint is not None and is_root:
            checkpoint(trainer.mtp_of(trainer.parameters))
        return _early_stop(entry, trainer.parameters, best, options)

    def on_iteration(evaluation):
        entry = trainer.record("lbfgs", evaluation, trainer.parameters)
        losses.append((trainer.evaluations, evaluation.loss))
        if bar is not None:
            bar.update(1)
        _show(bar, entry)
        if checkpoint is not None and is_root and trainer.iterations % options.window == 0:
            checkpoint(trainer.mtp_of(trainer.parameters))
        if _early_stop(entry, trainer.parameters, best, options):
            reason[0] = "validation"
            return True
        if trainer.iterations >= options.max_iter:
            reason[0] = "max_iter"
            return True
        if options.max_seconds and time.perf_counter() - trainer.started >= options.max_seconds:
            reason[0] = "max_seconds"
            return True
        # converged: the last `window` evaluations (line searches included) gained too little
        earlier = [loss for count, loss in losses if count <= trainer.evaluations - options.window]
        if earlier and earlier[-1] - evaluation.loss < options.tolerance * abs(evaluation.loss):
            reason[0] = "converged"
            return True
        return False

    reason = ["max_iter"]
    try:
        on_linear_step(trainer.linear_step())
        if options.method == "projected":
            while trainer.iterations < options.max_iter:
                start = trainer.iterations
                outcome = trainer.projected_lbfgs(options.max_iter - start, on_iteration)
                if outcome != "no progress":
                    break
                if trainer.iterations == start:  # not a single step possible, even with fresh L-BFGS memory
                    reason[0] = "no progress"
                    break
        else:
            stops = sorted(set(s for s in options.linear_steps if 0 < s < options.max_iter)) + [options.max_iter]
            while trainer.iterations < options.max_iter:
                start = trainer.iterations
                outcome = trainer.joint_lbfgs(next(s for s in stops if s > start) - start, on_iteration)
                if outcome == "stopped":
                    break
                if outcome == "no progress" and trainer.iterations == start:
                    reason[0] = "no progress"
                    break
                # after a stall (the line search failed) as after a scheduled stop: a linear step, a restart
                if trainer.iterations < options.max_iter and on_linear_step(trainer.linear_step()):
                    reason[0] = "validation"
                    break
    except KeyboardInterrupt:
        reason[0] = "interrupted"
    if reason[0] == "validation" or (options.patience and np.isfinite(best["loss"])):
        trainer.parameters = best["parameters"]
    elif options.method == "joint":
        on_linear_step(trainer.linear_step())
    if bar is not None:
        bar.close()
    loss = trainer.loss_at(trainer.parameters)  # usually the last evaluation's: no extra pass
    return TrainResult(trainer.mtp_of(trainer.parameters), trainer.history, reason[0], trainer.iterations,
                       trainer.evaluations, time.perf_counter() - trainer.started, loss)


def evaluate_on(mtp: MTP, images: Sequence, species: Sequence[str] | None = None,
                weights: LossWeights | None = None) -> Evaluation:
    """The loss (without penalty) and the energy-per-atom and force RMSE of a trained `mtp` as it is (nothing
    refitted, not even the linear coefficients) on labelled images, e.g. to compare models on held-out data."""
    batch = make_batch(images, species if species is not None else mtp.species, mtp.max_dist)
    objective = Objective(mtp, batch, weights if weights is not None else LossWeights(), len(images), penalty_weight=0.0)
    return objective(parameters_of(mtp), gradient=False)


def _early_stop(entry: dict, parameters: np.ndarray, best: dict, options: TrainOptions) -> bool:
    """Track the parameters with the lowest validation loss; True when patience has run out."""
    if "valid_loss" not in entry:
        return False
    if entry["valid_loss"] < best["loss"]:
        best.update(loss=entry["valid_loss"], parameters=parameters.copy(), stale=0)
        return False
    best["stale"] += 1
    return bool(options.patience) and best["stale"] >= options.patience


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="train", unit="it", dynamic_ncols=True)


def _show(bar, entry: dict) -> None:
    if bar is None:
        return
    text = dict(loss=f"{entry['loss']:.4e}", E=f"{1e3 * entry['energy_rmse']:.2f}meV/at",
                F=f"{entry['force_rmse']:.4f}eV/A")
    if "valid_energy_rmse" in entry:
        text.update(vE=f"{1e3 * entry['valid_energy_rmse']:.2f}", vF=f"{entry['valid_force_rmse']:.4f}")
    bar.set_postfix(text, refresh=False)
