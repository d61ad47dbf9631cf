"""Settings of an on-the-fly learning run: one frozen dataclass, stored in the run directory so a
restart can say what changed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mtp_driver.io.atomic import atomic_write
from mtp_driver.setting import setting

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
    threshold_save: float = setting(2.0, "grade above which a request's structure becomes a candidate")
    threshold_break: float = setting(10.0, "grade above which the request is held and the learner learns")
    grade_mode: str = setting("nbh", "per-neighbourhood grades (max over atoms) or one grade per configuration",
                              choices=GRADE_MODES)
    answer_with: str = setting("model", "answer a held request with the new model or the reference result",
                               choices=ANSWERS)
    max_selected: int = setting(8, "structures computed per retraining (the held one included)")
    close_contact_factor: float = setting(0.75, "pairs closer than this x min_dist: unphysical, no reference call")
    max_calls_per_hour: float = setting(3600.0, "no retraining while this many reference calls were made in the "
                                        "last hour")
    cooldown_steps: int = setting(0, "requests between two retrainings (extrapolative ones in between wait)")
    retries: int = setting(2, "retries of a failed reference call")
    failure_budget: int = setting(10, "structures whose reference calls failed (after the retries) the run can "
                                  "lose; one more stops it")
    workers: int = setting(1, "reference calls in parallel")
    executor: str = setting("local", "where reference calls run: 'local' (a pool of --workers processes), "
                            "'dask://HOST:PORT' (a running Dask scheduler, e.g. of dask-jobqueue's SLURMCluster), or "
                            "'module:callable' (a factory returning a concurrent.futures.Executor)")
    refit_iterations: int = setting(300, "L-BFGS iterations at most of each pass of the final refit of all "
                                    "parameters (and of the background one)")
    # off by default: on 2 cores it never finished (issue 14)
    background_refit: bool = setting(False, "refit all parameters in a separate process between holds too (worth it "
                                     "with spare cores)")
    hold_fit_growth: float = setting(0.0, "a hold fits all parameters (warm-started) once the data grew by this "
                                     "fraction since the last such fit")
    hold_fit_iterations: int = setting(100, "L-BFGS iterations of that fit at most (0: the linear coefficients only)")
    hold_fit_seconds: float = setting(120.0, "and at most this long (0: no limit)")
    max_candidates: int = setting(64, "candidates kept between holds; beyond, the D-optimal ones among them")
    # many structures above threshold_save mean the run is in new territory even where no grade reaches threshold_break
    pool_hold: bool = setting(True, "learn a full pool (max_candidates candidates) at once like a hold; off "
                              "(--no-pool-hold): prune it to its D-optimal max_candidates")
    audit_force_bound: float = setting(0.0, "eV/Å: an audit's force RMSE above this learns at once (the audited "
                                       "structure, pooled candidates, a fit of all parameters; 0: no such bound)")
    audit_energy_bound: float = setting(0.0, "meV/atom: the same for the audit's energy error")
    audit_error_ratio: float = setting(3.0, "the same for an audit error above this many times the answering model's "
                                       "own RMSE on its training data, energy or force (0: no such bound)")
    validation_share: float = setting(0.1, "share of the run's reference results held out of the final fit's "
                                      "first pass (from the starting potential), to validate it and choose its "
                                      "iterations on all results (0: none)")
    observe: bool = setting(False, "never call the reference: grade every request and count what the thresholds "
                            "would trigger")
    audit_every: int = setting(0, "a reference call on a non-extrapolative request every this many (0: none)")
    seed: int = setting(0, "random seed of the learner's fits")

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
