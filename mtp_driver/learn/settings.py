"""Settings of an on-the-fly learning run: one frozen dataclass, stored in the run directory so a
restart can say what changed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mtp_driver.io.atomic import atomic_write

from .executors import check_executor_spec
from .reference import Reference

GRADE_MODES = ("nbh", "cfg")
ANSWERS = ("model", "reference")


@dataclass(frozen=True)
class LearnSettings:
    """What the learner does with each force request (grades are MaxVol extrapolation grades).

    grade <= threshold_save: answer with the MTP; up to threshold_break: answer, keep the structure
    as a candidate; above: hold the request, compute D-optimally selected structures with the
    reference, retrain, then answer with the new model (or the reference result: `answer_with`).
    A full pool of candidates is learnt the same way (`pool_hold`)."""

    species: tuple[str, ...] = ("Cu",)
    reference: Reference = field(default_factory=Reference)
    threshold_save: float = 2.0
    threshold_break: float = 10.0
    grade_mode: str = "nbh"  # per-neighbourhood grades (max over atoms) or one grade per configuration
    answer_with: str = "model"
    max_selected: int = 8  # structures computed per retraining (the held one included)
    close_contact_factor: float = 0.75  # pairs closer than this x min_dist: unphysical, no reference call
    max_calls_per_hour: float = 3600.0
    cooldown_steps: int = 0  # requests between two retrainings (extrapolative ones in between wait)
    retries: int = 2
    failure_budget: int = 10
    workers: int = 1  # parallel reference calls
    # where they run: "local" (a process pool of `workers`), "dask://HOST:PORT", or "module:callable" (a factory
    # returning a concurrent.futures.Executor)
    executor: str = "local"
    refit_iterations: int = 300  # L-BFGS iterations of the final refit of all parameters (and the background one)
    # a refit of all parameters in its own process between holds; off: on 2 cores it never finished (issue 14)
    background_refit: bool = False
    # a hold fits all parameters (warm-started) once the data grew by this fraction since the last such fit
    hold_fit_growth: float = 0.0
    hold_fit_iterations: int = 100  # L-BFGS iterations of that fit at most (0: the linear coefficients only)
    hold_fit_seconds: float = 120.0  # and at most this long (0: no limit)
    max_candidates: int = 64  # candidates kept between holds; beyond, the D-optimal ones among them
    # a full pool (max_candidates candidates) is learnt at once like a hold: many structures above threshold_save
    # mean the run is in new territory even where no grade reaches threshold_break (off: the pool is pruned)
    pool_hold: bool = True
    # an audit finding a larger error learns at once (the audited structure, pooled candidates, a fit of all
    # parameters): force RMSE in eV/Å, energy in meV/atom (0: no such bound), or this many times the answering
    # model's own RMSE on its training data, energy or force (0: no such bound)
    audit_force_bound: float = 0.0
    audit_energy_bound: float = 0.0
    audit_error_ratio: float = 3.0
    # share of the run's reference results held out of the final fit to validate it (0: none)
    validation_share: float = 0.1
    observe: bool = False  # never call the reference: grade, count what the thresholds would trigger
    audit_every: int = 0  # a reference call on a non-extrapolative request every this many (0: none)
    seed: int = 0

    def __post_init__(self):
        if not 1.0 <= self.threshold_save <= self.threshold_break:
            raise ValueError("thresholds must satisfy 1 <= threshold_save <= threshold_break")
        if self.grade_mode not in GRADE_MODES:
            raise ValueError(f"grade_mode must be one of {GRADE_MODES}")
        if self.answer_with not in ANSWERS:
            raise ValueError(f"answer_with must be one of {ANSWERS}")
        if self.max_selected < 1 or self.retries < 0 or self.workers < 1 or self.audit_every < 0:
            raise ValueError("max_selected and workers must be >= 1, retries and audit_every >= 0")
        if self.max_candidates < 1 or min(self.hold_fit_growth, self.hold_fit_iterations, self.hold_fit_seconds,
                                          self.audit_force_bound, self.audit_energy_bound, self.audit_error_ratio) < 0:
            raise ValueError("max_candidates must be >= 1; hold_fit_growth, hold_fit_iterations, hold_fit_seconds "
                             "and the audit bounds >= 0")
        check_executor_spec(self.executor)
        if not 0.0 <= self.validation_share <= 0.5:
            raise ValueError("validation_share must be between 0 and 0.5")

    def to_dict(self) -> dict:
        return asdict(self)


def settings_diff(old: dict, new: dict) -> list[str]:
    """Lines 'name: old -> new' for every setting that differs (nested ones by dotted name)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += [f"{key}.{line}" for line in settings_diff(a, b)]
        elif a != b:
            lines.append(f"{key}: {a!r} -> {b!r}")
    return lines


def stored_settings(path: Path) -> dict | None:
    """The settings an earlier run wrote to `path`, as plain values (None if there are none)."""
    return json.loads(path.read_text()) if path.exists() else None


def store_settings(path: Path, settings: LearnSettings) -> list[str]:
    """Write the settings; return the diff against those of an earlier run in the same place."""
    new = json.loads(json.dumps(settings.to_dict()))
    old = stored_settings(path)
    with atomic_write(path) as stream:
        json.dump(new, stream, indent=1, sort_keys=True)
    return [] if old is None else settings_diff(old, new)
