"""Training options: plain dataclasses (importing them loads no kernels, e.g. for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field

WEIGHTINGS = ("vibrations", "molecules", "structures")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the energy, force and stress terms and MLIP's per-configuration scaling of them."""

    energy: float = 1.0
    forces: float = 0.01
    stress: float = 0.001
    weighting: str = "vibrations"

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if min(self.energy, self.forces, self.stress) < 0:
            raise ValueError("loss weights must be non-negative")


INITIALISATIONS = ("random", "same", "best")  # best: fit from both, keep the lower training loss
METHODS = ("projected", "joint")


@dataclass(frozen=True)
class TrainOptions:
    weights: LossWeights = field(default_factory=LossWeights)
    method: str = "projected"  # L-BFGS over the radial coefficients with the linear ones solved exactly, or over all
    max_iter: int = 1000
    max_seconds: float = 0.0  # stop after the iteration that passes this wall time (0: no limit), e.g. inside a hold
    tolerance: float = 1e-3  # converged when `window` loss evaluations lower the loss by less than this fraction
    window: int = 50
    linear_steps: tuple[int, ...] = (25, 70, 100, 150, 250, 400)  # "joint": MLIP-3's schedule of linear steps
    init: str = "random"
    seed: int = 0
    update_min_dist: bool = False
    penalty_weight: float = 1e-6
    ridge: float = 1e-16  # linear step: Tikhonov term relative to the largest squared singular value (unit columns)
    lbfgs_memory: int = 30
    valid_every: int = 10  # iterations between validation evaluations
    patience: int = 0  # stop after this many validation evaluations without improvement (0: never)
    shard_count: int = 12  # groups of configurations for MPI; results are identical for <= this many ranks

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.init not in INITIALISATIONS:
            raise ValueError(f"init must be one of {INITIALISATIONS}, got {self.init!r}")
        if self.max_iter < 0 or self.max_seconds < 0 or self.window < 1 or self.valid_every < 1 or self.shard_count < 1:
            raise ValueError("max_iter must be >= 0 and window, valid_every, shard_count >= 1")


