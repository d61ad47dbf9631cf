"""The on-the-fly learner: a `Potential` (see `mtp_driver.potential`) that grades every request
and, when the MTP extrapolates, holds the request while it learns.

Per request (grades are MaxVol extrapolation grades, see `mtp_driver.active`):

* grade <= threshold_save: answer with the MTP;
* up to threshold_break: answer with the MTP and keep the structure as a candidate;
* above: hold the request (the engine waits on its socket), select D-optimally among the
  candidates and this structure, compute the selected ones with the reference (journaled),
  refit on all reference data, rebuild the active set, swap the model in, then answer. The hold
  fits all parameters, warm-started and bounded in iterations and seconds, the first time, after
  an audit above its bound, and once the data has grown by hold_fit_growth since the last such
  fit; else the linear coefficients only (`Learner._update_model`). With background_refit, a refit
  of all parameters runs meanwhile in a separate process and is swapped in at a later request
  boundary only if it lowers the loss on all reference data, the data it did not see included.

A full pool (max_candidates candidates, pool_hold) is learnt the same way: the D-optimal max_selected among
them are computed and all parameters fitted, as MLIP selects among the structures above its select threshold.

Every audit_every-th request below threshold_save is also computed with the reference (an audit): an
error above a bound (absolute, or audit_error_ratio x the model's RMSE on its own training data) is
learnt like a hold, the audited structure and the D-optimal pooled candidates, fitting all parameters.

The models (the one answering, the versions on disk, the background refit) are in `models.py`.

Everything needed to resume is on disk (`journal.py`): a restart reads the finished reference
results, makes the calls a kill interrupted, refits, and goes on; finished calls are never repeated.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms

from mtp_driver.active.active_set import build_active_set
from mtp_driver.active.rows import site_rows
from mtp_driver.active.select import select_add
from mtp_driver.calculator import CloseContactError, MTPCalculator, check_close_contacts
from mtp_driver.fit import TrainOptions, evaluate_on, train
from mtp_driver.io.lock import hold_exclusive
from mtp_driver.io.mtp_file import read_mtp, write_mtp
from mtp_driver.io.species import parse_species
from mtp_driver.geometry import UnphysicalCell
from mtp_driver.mtp.model import MTP
from mtp_driver.mtp.neighbors import build_neighbor_list
from mtp_driver.plugins import import_object

from .calls import ReferenceCalls, StructureFailed
from .intake import UnphysicalStructure, check_request
from .journal import Journal
from .models import CurrentModel, ModelVersions, RefitJob, refit_linear
from .reference import Reference
from .settings import LearnSettings, store_settings, stored_settings
from .theory import current_results

FIRST_FIT_ITERATIONS = 100  # L-BFGS iterations when the radial functions are fitted for the first time
VALIDATION_PATIENCE = 10  # validation evaluations (every 10 iterations) without improvement end the final fit
MIN_VALIDATION = 3  # held-out structures needed to validate: fewer say too little


class Answer(NamedTuple):
    """A model's answer to one request: its extrapolation grade, energy (eV), forces (eV/Å), virial (eV),
    and the model version that gave it (0 and grade inf before any model: energy, forces, virial None)."""

    grade: float
    energy: float | None
    forces: np.ndarray | None
    virial: np.ndarray | None
    version: int


class Learner:
    """On-the-fly learning behind the i-PI socket (or any caller of `compute`).

    `potential`: the starting MTP (untrained from `mtp-driver init`, or trained) or its path;
    `run_dir`: where the journal, the reference results and every model version live;
    `training`: labelled structures to start from (optional).

    Locks (walkers call `compute` from several threads): `lock` (re-entrant) admits one walker at a time
    to learning and swapping models; a request boundary only tries it, without waiting, to swap in a
    finished background refit. `candidates_lock` guards the candidate pool, which walkers append to
    while another walker's hold selects from it; `step_lock` gives each request its own number;
    `trace_lock` writes one grades.jsonl line at a time. `current` (a `CurrentModel`) is replaced as a
    whole on every swap, so a walker reads it once, without a lock, and has one consistent model."""

    def __init__(self, potential: MTP | str | os.PathLike, run_dir: str | os.PathLike,
                 settings: LearnSettings | None = None, training=(), reference_changed: str | None = None):
        self.settings = settings if settings is not None else LearnSettings()
        self.species = list(self.settings.species)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # two learners appending to one journal would interleave it
        self.run_lock = hold_exclusive(self.run_dir / "lock",
                                       f"the run directory {self.run_dir} is in use by another learner")
        try:
            self._open(potential, training, reference_changed)
        except BaseException:
            self.run_lock.close()
            raise

    def _open(self, potential, training, reference_changed: str | None) -> None:
        """Everything after the run lock: checks that can fail at start, then the journal's state."""
        self.initial = potential if isinstance(potential, MTP) else read_mtp(potential)
        self.journal = Journal(self.run_dir)
        self._check_at_start(training or self.journal.initial_training())
        self.models = ModelVersions(self.run_dir / "models")
        previous = stored_settings(self.run_dir / "settings.json")
        # before the settings are replaced: their reference is the one results of older runs belong to
        results = current_results(self.journal, self.settings.reference, reference_changed,
                                  previous.get("reference") if previous else None)
        changed = store_settings(self.run_dir / "settings.json", self.settings)
        if changed:
            print("mtp-driver learn: settings changed since the last run (the new ones apply):\n  "
                  + "\n  ".join(changed), file=sys.stderr)
            self.journal.log("settings_changed", changes=changed)
        self.calls = ReferenceCalls(self.settings.reference, self.journal, self.settings.workers,
                                    self.settings.retries, self.settings.failure_budget, self.settings.executor)
        if training:  # the refit process reads them from here
            self.journal.store_initial_training(training)
        self.training = self.journal.initial_training() + [result.atoms for result in results]
        self.keys = [result.key for result in results]
        self.candidates: list[Atoms] = []
        self.candidates_lock = threading.Lock()  # walkers append while another walker's hold selects
        self.step = 0  # requests so far (logs, cool-down)
        self.step_lock = threading.Lock()
        self.last_retraining = -10**9
        self.call_times: deque[float] = deque()
        self.held_seconds: list[float] = []
        self._known_numbers = b""  # atomic numbers of a request already checked against the species
        self.refit: RefitJob | None = None  # the background refit running now
        # structures the last fit of all parameters saw (a hold's or a refit's); a trained start saw its training set
        self.fully_fitted = len(self.journal.initial_training()) if self.initial.is_trained else 0
        self.would_hold = 0  # observe mode
        self.would_save = 0
        self.current: CurrentModel | None = None  # the model answering now
        self.lock = threading.RLock()  # learning and swapping: one walker at a time
        self.walker = threading.local()  # each walker thread its own calculator (ASE calculators keep state)
        # every request's grade, buffered: a diagnostic trace, not needed to resume
        self.trace = open(self.run_dir / "grades.jsonl", "a", encoding="utf-8")
        self.trace_lock = threading.Lock()  # one line per request, never two interleaved
        reference = self.settings.reference
        self.journal.log("start", step=self.step, references=len(self.keys), model_versions=self.version,
                         reference=asdict(reference), reference_fingerprint=reference.fingerprint())
        pending = self.journal.pending()
        if pending:  # selected before a kill: make those calls now (with this run's reference settings)
            self._add_references(self.calls.compute([entry.atoms for entry in pending.values()], reason="restart"))
            for key, entry in pending.items():
                if self.calls.key(entry.atoms) != key:
                    self.journal.release(key, reason="selected with other reference settings; computed with "
                                                     f"the current ones as {self.calls.key(entry.atoms)}")
        if self.training:
            self._update_model("restart")

    def _check_at_start(self, training) -> None:
        """Settings that cannot work are refused now, not at the first request."""
        settings = self.settings
        if settings.observe and not (self.initial.is_trained and training):
            raise ValueError("observe mode grades requests with a trained potential and the training set it was "
                             "trained on (--training TRAIN.cfg): give both, or learn without --observe")
        if settings.answer_with == "reference" and settings.reference.calculator is not None:
            calculator = import_object(settings.reference.calculator)
            if "stress" not in getattr(calculator, "implemented_properties", ("stress",)):
                raise ValueError(f"--answer-with reference needs the reference's stress for periodic cells, and "
                                 f"{settings.reference.calculator} gives none: answer with the model instead")

    @property
    def mtp(self) -> MTP | None:
        """The potential answering now (None before anything was learnt)."""
        current = self.current
        return None if current is None else current.mtp

    @property
    def version(self) -> int:
        """The newest model version on disk: the one answering, once a model was swapped in in this run."""
        return self.models.newest

    # ------------------------------------------------------------------ the Potential interface

    def compute(self, positions, cell, pbc, numbers):
        """Energy (eV), forces (eV/Å), virial (eV) and extras of one structure, learning first if needed.

        Safe to call from several walker threads (the drivers of PIMD beads or NEB images): only a
        walker that extrapolates waits for the learning lock; candidates of all walkers are pooled.
        A request it cannot train on raises `UntrainableStructure` or `UnphysicalStructure` before anything
        is recorded."""
        return self.compute_batch([(positions, cell, pbc, numbers)])[0]

    def compute_batch(self, structures) -> list:
        """`compute` of several (positions, cell, pbc, numbers) at once, e.g. the beads of a batched i-PI request:
        graded together, and all that extrapolate learnt in one hold (the most extrapolative one held, the others
        pooled with the candidates for its D-optimal selection); then every one is answered by the model after
        it. One structure it cannot train on refuses the whole batch before anything is recorded."""
        for structure in structures:
            check_request(*structure, self.species, self.initial.max_dist, self._known_numbers)
            self._known_numbers = np.asarray(structure[3]).tobytes()
        with self.step_lock:  # walkers in several threads: each request its own number
            steps = range(self.step + 1, self.step + 1 + len(structures))
            self.step += len(structures)
        if self.lock.acquire(blocking=False):  # a request boundary, unless another walker is learning
            try:
                self._swap_finished_refit()
            finally:
                self.lock.release()
        answers = [self._evaluate_arrays(*structure) for structure in structures]
        settings, held = self.settings, 0.0
        if settings.observe:
            for answer in answers:
                self._observe(answer.grade)
        else:
            above = [i for i, answer in enumerate(answers) if answer.grade > settings.threshold_break]
            if above:
                answers, held = self._learn_batch([_atoms(*structure) for structure in structures], answers, above)
            for i, (step, structure, answer) in enumerate(zip(steps, structures, answers)):
                if i in above:
                    continue
                if answer.grade > settings.threshold_save:
                    self._keep_candidate(_atoms(*structure))
                elif settings.audit_every and step % settings.audit_every == 0:
                    with self.lock:
                        held = max(held, self._audit(_atoms(*structure), answer))
            if settings.pool_hold and len(self.candidates) >= settings.max_candidates:
                held = max(held, self._learn_pool(len(structures[-1][3])))
            if held and any(answer.version != self.version for answer in answers):
                # an audit or pool hold swapped in a new model: it answers the held request, as after a grade hold
                answers = [self._evaluate_arrays(*structure) for structure in structures]
        walker = threading.current_thread().name
        lines = [json.dumps(dict(step=step, walker=walker, held=held > 0, grade=_finite_or_none(answer.grade),
                                 version=answer.version)) for step, answer in zip(steps, answers)]
        with self.trace_lock:
            self.trace.write("".join(line + "\n" for line in lines))
        # the grade of the model that answered (after learning, if it held); the journal has the one before
        return [(answer.energy, answer.forces, answer.virial,
                 {"model_version": f"learner:{answer.version}", "mtp_grade": _finite_or_none(answer.grade),
                  "held_seconds": held, "reference_calls": len(self.keys)}) for answer in answers]

    def _learn_batch(self, batch: list[Atoms], answers: list[Answer], above: list[int]) -> tuple[list[Answer], float]:
        """The answers after learning on the members `above` threshold_break (if they still are, and the rails allow
        it; else they become candidates), and the time held."""
        answers, held = list(answers), 0.0
        with self.lock:
            for i in above:
                if answers[i].version != self.version:  # another walker learnt meanwhile: grade again
                    answers[i] = self._evaluate(batch[i])
            still = [i for i in above if answers[i].grade > self.settings.threshold_break]
            if still and self._may_retrain():
                first = max(still, key=lambda i: answers[i].grade)
                for i in still:
                    if i != first:
                        self._keep_candidate(batch[i])
                answers[first], held = self._learn(batch[first], answers[first])
                answers = [answer if i == first else self._evaluate(atoms)
                           for i, (atoms, answer) in enumerate(zip(batch, answers))]
            else:
                for i in above:
                    if answers[i].grade > self.settings.threshold_save:
                        self._keep_candidate(batch[i])
        return answers, held

    def interrupt(self) -> None:
        """Stop the running reference calls now (safe from signal handlers, for Ctrl-C): they stay pending
        for the next start, and a request waiting for them raises `CallsInterrupted`."""
        self.calls.interrupt()

    def close(self, final_refit: bool = True) -> None:
        """Stop a running refit and the reference workers; with `final_refit`, fit all parameters to
        all reference data now (the last model of the run) and write it as `final.mtp`."""
        self._stop_refit()
        self.calls.close()
        if final_refit and self.mtp is not None and self.settings.refit_iterations > 0 and not self.settings.observe:
            self.refit_now("final refit")
            write_mtp(self.mtp, self.run_dir / "final.mtp")
        self.journal.log("stop", step=self.step, summary=self.summary())
        with self.trace_lock:
            self.trace.close()
        self.run_lock.close()

    def refit_now(self, reason: str = "refit requested") -> None:
        """Fit all parameters to the reference data now and swap the result in (blocking).

        Every 1/validation_share-th reference result of the run is held out first: a fit to the rest from the
        run's starting potential (which never saw them), kept at its lowest loss on them, gives the errors on
        unseen data (journaled) and the iterations worth running; it is then fitted at most that long on all the
        data, held-out results included. If the model answering now (trained on them too, in time-boxed holds)
        is better on the held-out results than that fit, it stays."""
        with self.lock:
            self._stop_refit()
            training, validation = self._validation_split()
            iterations, start = max(self.settings.refit_iterations, 1), self.mtp
            if validation:
                options = TrainOptions(max_iter=iterations, seed=self.settings.seed, patience=VALIDATION_PATIENCE)
                held_out_fit = train(self.initial, training, validation, species=self.species, options=options,
                                     progress=False)
                iterations, start = max(_best_validated_iteration(held_out_fit.history), 1), held_out_fit.mtp
            options = TrainOptions(max_iter=iterations, seed=self.settings.seed)
            fit = train(start, self.training, species=self.species, options=options, progress=False)
            chosen = fit.mtp
            if validation:
                unseen, fitted, answering = (evaluate_on(mtp, validation, self.species)
                                             for mtp in (held_out_fit.mtp, fit.mtp, self.mtp))
                if answering.loss < fitted.loss:
                    chosen = self.mtp
                self.journal.log("validated", step=self.step, reason=reason, validation=len(validation),
                                 training=len(training), iterations=fit.iterations,
                                 kept="answering model" if chosen is self.mtp else "refit",
                                 unseen=_errors(unseen), refit=_errors(fitted), answering=_errors(answering))
            self._swap_in(chosen, reason)

    def _validation_split(self) -> tuple[list[Atoms], list[Atoms]]:
        """(training, validation): every k-th of the run's reference results (k = 1 / validation_share), in
        journal order, is validation; none while that would leave fewer than MIN_VALIDATION structures."""
        share = self.settings.validation_share
        if share <= 0 or share * len(self.keys) < MIN_VALIDATION:
            return self.training, []
        every = max(round(1.0 / share), 2)
        first = len(self.training) - len(self.keys)  # the initial training set is never held out
        held_out = {first + i for i in range(every - 1, len(self.keys), every)}
        return ([atoms for i, atoms in enumerate(self.training) if i not in held_out],
                [atoms for i, atoms in enumerate(self.training) if i in held_out])

    def _stop_refit(self) -> None:
        if self.refit is not None:
            self.refit.stop()
            self.refit = None

    def summary(self) -> dict:
        held = self.held_seconds
        return dict(steps=self.step, reference_calls=len(self.keys), model_version=self.version,
                    retrainings=len(held), held_median_s=statistics.median(held) if held else 0.0,
                    held_max_s=max(held) if held else 0.0, quarantined=len(self.journal.quarantined()),
                    would_hold=self.would_hold, would_save=self.would_save)

    # ------------------------------------------------------------------ one request

    def _calculator(self) -> tuple[int, MTPCalculator | None]:
        """The model answering now, as this walker thread's own calculator."""
        current = self.current  # read once: a swap replaces it as a whole
        if current is None:
            return 0, None
        if getattr(self.walker, "version", None) != current.version:
            self.walker.calculator = MTPCalculator(current.mtp, species=self.species, active_set=current.active_set,
                                                   close_contact_factor=self.settings.close_contact_factor)
            self.walker.version = current.version
        return current.version, self.walker.calculator

    def _evaluate(self, atoms: Atoms) -> Answer:
        return self._evaluate_arrays(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)

    def _evaluate_arrays(self, positions, cell, pbc, numbers) -> Answer:
        """The answer of the model answering now (no Atoms: the path of every request)."""
        version, calculator = self._calculator()
        try:
            if calculator is None:  # nothing learnt yet: everything extrapolates
                limit = self.settings.close_contact_factor * self.initial.min_dist
                check_close_contacts(build_neighbor_list(positions, cell, pbc, limit),
                                     self.initial.min_dist, self.settings.close_contact_factor)
                return Answer(grade=np.inf, energy=None, forces=None, virial=None, version=0)
            result = calculator.evaluate(positions, cell, pbc, calculator.types_of_numbers(numbers))
        except (CloseContactError, UnphysicalCell) as exc:  # the neighbour list of a shorter cutoff can differ
            raise UnphysicalStructure(f"request {self.step}: {exc}. The simulation has left physical "
                                      "space (time step or temperature too high?); no reference call was made") from exc
        return Answer(grade=result.grade, energy=result.energy, forces=result.forces, virial=result.virial,
                      version=version)

    def _observe(self, grade: float) -> None:
        """Observe mode: count what the thresholds would trigger (the cool-down applied), call nothing."""
        if grade > self.settings.threshold_break and self._cooled_down():
            self.would_hold += 1
            self.last_retraining = self.step
            self.journal.log("would_hold", step=self.step, grade=_finite_or_none(grade))
        elif grade > self.settings.threshold_save:
            self.would_save += 1

    def _audit(self, atoms: Atoms, answer: Answer) -> float:
        """A reference call on a request the model answers anyway: the real error at a low grade. An error above a
        bound is what no grade sees (a model badly fitted inside its data, or wrong where the features look
        familiar): learn at once. The seconds the request was held for that (0 if the error was within bounds)."""
        started = time.perf_counter()
        own = evaluate_on(self.mtp, self.training, self.species).rmse if self.training else None
        results = self.calls.compute([atoms], step=self.step, reason="audit")
        self.call_times.append(time.time())
        self._add_references(results)
        if not results:
            return 0.0
        reference = results[0][1]
        force_error = _force_rmse(answer.forces, reference)
        energy_error = abs(answer.energy - reference.get_potential_energy()) / len(atoms)
        above = self._above_audit_bound(energy_error, force_error, own)
        self.journal.log("audit", step=self.step, grade=_finite_or_none(answer.grade), atoms=len(atoms),
                         force_rmse_model=force_error, energy_error_model=energy_error,
                         training_energy_rmse=None if own is None else float(own[0]),
                         training_force_rmse=None if own is None else float(own[1]), above_bound=above)
        if not above:
            return 0.0
        # a refit on the same data cannot fix an error on unseen structures: add the pooled candidates too
        if self._may_retrain():
            self._compute_selected([], "audit")
        return self._fit_and_resume("audit", started, len(atoms))

    def _learn_pool(self, atoms: int) -> float:
        """A full pool of candidates: hold the request (of `atoms` atoms) while the D-optimal max_selected among them
        are computed and all parameters fitted. The seconds held (0 if another walker learnt them first, or the
        rails forbid: the pool is then pruned as it grows)."""
        with self.lock:
            if len(self.candidates) < self.settings.max_candidates or not self._may_retrain():
                return 0.0
            started = time.perf_counter()
            self._compute_selected([], "pool", limit=self.settings.max_selected)
            return self._fit_and_resume("pool", started, atoms)

    def _fit_and_resume(self, reason: str, started: float, atoms: int) -> float:
        """After an audit or pool hold computed its structures: fit all parameters, swap in, log; the seconds held."""
        self._update_model(reason, full=True)
        self.last_retraining = self.step
        held = time.perf_counter() - started
        self.held_seconds.append(held)
        self.journal.log("resume", step=self.step, reason=reason, held_seconds=held, version=self.version, atoms=atoms)
        return held

    def _above_audit_bound(self, energy_error: float, force_error: float, own) -> bool:
        """Whether an audited error (eV/atom, eV/Å) exceeds an absolute bound or audit_error_ratio x the answering
        model's RMSE on its own training data `own` (energy, force; None before any)."""
        settings = self.settings
        if settings.audit_force_bound and force_error > settings.audit_force_bound:
            return True
        if settings.audit_energy_bound and 1e3 * energy_error > settings.audit_energy_bound:
            return True
        ratio = settings.audit_error_ratio
        return bool(ratio) and own is not None and (energy_error > ratio * own[0] or force_error > ratio * own[1])

    def _cooled_down(self) -> bool:
        return self.step - self.last_retraining >= self.settings.cooldown_steps

    def _may_retrain(self) -> bool:
        now = time.time()
        while self.call_times and now - self.call_times[0] > 3600.0:
            self.call_times.popleft()
        return self._cooled_down() and len(self.call_times) < self.settings.max_calls_per_hour

    def _learn(self, atoms: Atoms, before: Answer) -> tuple[Answer, float]:
        """Hold this request: select, compute, refit, swap; the answer to give, and the time held."""
        started = time.perf_counter()
        results = self._compute_selected([atoms], "grade", before.grade)
        if self.training:  # else the only structure failed before anything was learnt: nothing to fit
            self._update_model("hold")
        self.last_retraining = self.step
        after = self._evaluate(atoms)
        reference = next((labelled for _, labelled in results if np.array_equal(labelled.positions, atoms.positions)),
                         None)
        held = time.perf_counter() - started
        self.held_seconds.append(held)
        old_force_rmse = None if reference is None or before.forces is None else _force_rmse(before.forces, reference)
        self.journal.log("resume", step=self.step, reason="grade", held_seconds=held, version=self.version,
                         atoms=len(atoms),
                         grade_before=_finite_or_none(before.grade), energy_old_model=before.energy,
                         energy_new_model=after.energy,
                         energy_reference=None if reference is None else reference.get_potential_energy(),
                         force_rmse_old_model=old_force_rmse, grade_after=_finite_or_none(after.grade))
        if reference is None and not after.grade <= self.settings.threshold_break:
            raise StructureFailed(
                f"request {self.step}: the reference failed on the held structure (see "
                f"{self.journal.run_dir / 'quarantine'}) and the retrained MTP still extrapolates there (grade "
                f"{after.grade:.3g} > threshold_break {self.settings.threshold_break:g}): stopping rather than "
                "answering with an untrusted model. Check the reference on that structure (e.g. its SCF "
                "settings); running the same command again resumes from the journal")
        if self.settings.answer_with == "reference" and reference is not None:
            after = after._replace(energy=reference.get_potential_energy(), forces=reference.get_forces(),
                                   virial=_virial(reference))
        return after, held

    def _keep_candidate(self, atoms: Atoms) -> None:
        with self.candidates_lock:
            self.candidates.append(atoms)
            if len(self.candidates) >= 2 * self.settings.max_candidates:  # bounded work per hold
                kept = self._d_optimal(self.candidates, self.settings.max_candidates)
                self.candidates = [self.candidates[i] for i in kept]

    def _compute_selected(self, held: list[Atoms], reason: str, grade: float | None = None,
                          limit: int | None = None) -> list:
        """Compute `held` and the D-optimal choice of `limit` (default max_selected - 1: the held or the audited
        structure is the first) among the pooled candidates with the reference, journaled as a hold; the (key,
        labelled structure) results, added to the training data."""
        with self.candidates_lock:  # candidates other walkers find during this hold wait for the next one
            candidates, self.candidates = self.candidates, []
        limit = self.settings.max_selected - 1 if limit is None else limit
        selected = held + [candidates[i] for i in self._d_optimal(candidates, limit)]
        self.journal.log("hold", step=self.step, reason=reason, grade=_finite_or_none(grade), selected=len(selected),
                         candidates=len(candidates))
        results = self.calls.compute(selected, step=self.step) if selected else []
        self.call_times.extend([time.time()] * len(results))
        self._add_references(results)
        return results

    def _d_optimal(self, candidates: list[Atoms], limit: int) -> list[int]:
        """Indices of at most `limit` candidates that extend the active set most (D-optimally)."""
        current = self.current  # read once: another walker may swap a model in meanwhile
        if current is None or not candidates or limit == 0:
            return list(range(len(candidates)))[-limit:] if limit else []
        rows = site_rows(current.mtp, candidates, self.species)
        try:
            return list(select_add(current.active_set, rows, limit=limit).selected)
        except ValueError:  # an active set of too little data (one perfect lattice) cannot rank them: the newest
            return list(range(len(candidates)))[-limit:]

    # ------------------------------------------------------------------ models

    def _add_references(self, results) -> None:
        for key, labelled in results:
            if key not in self.keys:
                self.keys.append(key)
                self.training.append(labelled)

    def _update_model(self, reason: str, full: bool = False) -> None:
        """Refit and swap in at once: all parameters (warm-started, hold_fit_iterations, at most hold_fit_seconds)
        the first time, when `full`, or when the data grew by hold_fit_growth since the last such fit; else the
        linear coefficients only. Then the active set, and a background refit on the newest data."""
        start = self.mtp or self.models.read_newest() or self.initial
        if self.settings.observe:  # the potential as given (trained: checked at start): only its active set is built
            self._swap_in(start, reason)
            return
        settings = self.settings
        grown = len(self.training) > (1.0 + settings.hold_fit_growth) * self.fully_fitted
        if not start.is_trained:
            iterations = max(settings.hold_fit_iterations, FIRST_FIT_ITERATIONS)
        elif full or grown:
            # the linear coefficients alone would keep radial functions fitted to old data: a model that
            # answers badly inside its data, where no grade can see it
            iterations = settings.hold_fit_iterations
        else:
            iterations = 0
        options = TrainOptions(max_iter=iterations, max_seconds=settings.hold_fit_seconds, seed=settings.seed)
        result = train(start, self.training, species=self.species, options=options, progress=False)
        if iterations:
            self.fully_fitted = len(self.training)
            self.journal.log("hold_fit", step=self.step, reason=reason, references=len(self.training),
                             iterations=result.iterations, seconds=result.seconds, stop_reason=result.stop_reason,
                             loss=result.loss)
        self._swap_in(result.mtp, reason)
        self._start_refit()

    def _swap_in(self, mtp: MTP, reason: str) -> None:
        version = self.models.write_next(mtp)
        active_set = build_active_set(mtp, self.training, self.species, mode=self.settings.grade_mode)
        self.current = CurrentModel(version, mtp, active_set)
        self.journal.log("swap", step=self.step, version=version, reason=reason, references=len(self.keys),
                         active_set_mode=active_set.mode)

    def _start_refit(self) -> None:
        """A background refit of all parameters on the newest data; one the data has outgrown since it started
        (`RefitJob.outgrown`) is restarted, rather than finish on stale data."""
        if not self.settings.background_refit or self.settings.refit_iterations <= 0:
            return
        if self.refit is not None:
            if not self.refit.outgrown(len(self.training)):
                return
            self._stop_refit()
            self.journal.log("refit_restarted", step=self.step, references=len(self.keys))
        self.refit = RefitJob.start(self.run_dir, self.models, self.version, self.keys, len(self.training),
                                    self.settings.refit_iterations, self.settings.seed, self.species)
        self.journal.log("refit_started", step=self.step, version=self.version, references=len(self.keys))

    def _swap_finished_refit(self) -> None:
        """At a request boundary: take a finished refit if it is better on all reference data."""
        if self.refit is None or not self.refit.finished():
            return
        refit, self.refit = self.refit, None
        refitted = refit.result()
        if refitted is None:
            self.journal.log("refit_failed", step=self.step, returncode=refit.process.returncode)
            return
        candidate = refit_linear(refitted, self.training, self.species, self.settings.seed)
        answering = refit_linear(self.mtp, self.training, self.species, self.settings.seed)
        better = candidate.history[-1]["loss"] < answering.history[-1]["loss"]
        self.journal.log("refit_finished", step=self.step, accepted=better, loss_refit=candidate.history[-1]["loss"],
                         loss_current=answering.history[-1]["loss"], seconds=time.perf_counter() - refit.started,
                         unseen_references=len(self.keys) - refit.references)
        if better:
            self.fully_fitted = max(self.fully_fitted, refit.structures)
            self._swap_in(candidate.mtp, "refit")
        if len(self.keys) > refit.references:  # data it did not see: refit again
            self._start_refit()


def _atoms(positions, cell, pbc, numbers) -> Atoms:
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)


def _virial(atoms: Atoms) -> np.ndarray:
    """-stress x volume (eV) of atoms with results; zero without full periodicity."""
    return -atoms.get_stress(voigt=False) * atoms.get_volume() if atoms.pbc.all() else np.zeros((3, 3))


def _force_rmse(forces: np.ndarray, reference: Atoms) -> float:
    return float(np.sqrt(np.mean((forces - reference.get_forces()) ** 2)))


def _best_validated_iteration(history: list[dict]) -> int:
    """The L-BFGS iteration at which a fit's validation loss was lowest (0: its first linear step)."""
    validated = [entry for entry in history if "valid_loss" in entry]
    return min(validated, key=lambda entry: entry["valid_loss"])["iteration"]


def _errors(evaluation) -> dict:
    return dict(loss=evaluation.loss, energy_rmse_mev=1e3 * float(evaluation.rmse[0]),
                force_rmse=float(evaluation.rmse[1]))


def _finite_or_none(value):
    return float(value) if value is not None and np.isfinite(value) else None


def learning_potential(potential: str, run_dir: str, species, reference: dict | None = None,
                       reference_changed: str | None = None, **settings) -> Learner:
    """A `Learner` from plain (JSON) values, for `mtp-driver serve --calculator
    mtp_driver.learn.learner:learning_potential --calculator-kwargs '{...}'` and the pes plugin:
    `reference` holds the fields of `Reference`, the other keywords those of `LearnSettings`."""
    learn_settings = LearnSettings(species=parse_species(species), reference=Reference(**(reference or {})), **settings)
    return Learner(potential, run_dir, learn_settings, reference_changed=reference_changed)
