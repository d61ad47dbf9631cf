#!/usr/bin/env python
"""Learning on the fly while Cu is heated through melting: is the answering model as good as its data? (issue 14)

NVT (Langevin) MD of 128 fcc Cu atoms (4x4x2 conventional cells, a = 3.61 Å, fixed volume) with EMT
as the reference. The thermostat's temperature follows a ramp: `--cold` (300 K) for the first
quarter of the steps, a linear ramp to `--hot` (4000 K) over the second quarter, `--hot` for the
second half. At this fixed volume the periodic 128-atom crystal superheats far beyond EMT Cu's
melting point: held at 1800 K or 2500 K for 1000 steps it stays crystalline, at 4000 K it melts
within about 300 steps. Phases: solid (the first quarter), heating (ramp and melting), liquid (the
last quarter).

The learner (in-process, `PotentialCalculator`, default settings) drives one MD from an untrained
MTP; EMT drives a reference MD with the same ramp and seeds, and an independent one (another seed).
With `--teacher POT.mtp` a trained MTP plays the reference everywhere EMT does below.
Measured:

1. the error of the answering model along the learner's trajectory: every `--probe-every` steps a
   copy of the structure is computed with EMT outside the learner (the run is unchanged) and
   compared with the learner's answer at that step, then with the final model (RUN/final.mtp), per
   window of `--window` steps;
2. the learner's MD against the reference MD, per phase: mean squared displacement over 1 ps
   (every time origin in the phase) and the radial distribution function; the largest difference of
   `--independent` EMT runs (other seeds) from the reference MD is the statistical noise;
3. the final model against a passive fit (the same untrained MTP and the same options as the
   learner's final refit) on a reference-MD snapshot every `--passive-every` steps, tested on the
   independent run, per phase (RUN/passive.mtp); with `--same-data-fit` also the learner's reference data
   fitted that way (RUN/same_data.mtp): whether a difference comes from the data or from the learner's fits;
   reference calls per MD step;
4. hold times (the journal's 'resume' events) and reference calls; `--reference-delay 10` makes
   every reference call sleep 10 s, as a DFT call would take minutes.

    python examples/learn_heating.py [--steps 4000] [--level 10] [--run-dir RUN] [--plot heating.png]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from learn_vs_passive import dynamics, labelled_copy, start_structure
from mtp_driver.calculator import MTPCalculator, predict
from mtp_driver.fit import TrainOptions, train
from mtp_driver.io.mtp_file import write_mtp
from mtp_driver.potential import PotentialCalculator
from mtp_driver.learn.calls import LearningStopped
from mtp_driver.learn.intake import UnphysicalStructure
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.reference import Reference
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp

SPECIES = ["Cu"]
MIN_DIST = 2.0  # Å, as in learn_vs_passive.py
MD_SEED, INDEPENDENT_SEED = 3, 1  # the learner's MD and the reference MD share MD_SEED
RDF_MAX, RDF_BIN, RDF_FROM = 6.0, 0.05, 1.5  # Å; no pair is closer than RDF_FROM, so the difference starts there
PROGRESS_EVERY = 25  # probes
BACK_TO_BACK = 10  # steps: a hold this soon after the previous one did not select enough
MSD_LAG = 250  # steps (1 ps): the MSD of a phase at this lag, averaged over every time origin in the phase


class SleepingEMT(EMT):
    """EMT that sleeps `delay` seconds per call first: a slow (DFT-like) reference at EMT's cost in CPU."""

    def __init__(self, delay: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes)


class Phase(NamedTuple):
    name: str
    start: int
    stop: int  # exclusive

    def holds(self, step: int) -> bool:
        return self.start <= step < self.stop


@dataclass(frozen=True)
class Ramp:
    """The thermostat's temperature at each step, and the phases it defines."""

    steps: int
    cold: float
    hot: float

    def temperature(self, step: int) -> float:
        quarter = self.steps / 4
        fraction = min(max((step - quarter) / quarter, 0.0), 1.0)
        return self.cold + fraction * (self.hot - self.cold)

    def phases(self) -> list[Phase]:
        quarter, last = self.steps // 4, 3 * self.steps // 4
        return [Phase("solid", 0, quarter), Phase("heating", quarter, last), Phase("liquid", last, self.steps + 1)]


class Frame(NamedTuple):
    step: int
    atoms: Atoms  # labelled with what the MD's calculator answered


class Probe(NamedTuple):
    step: int
    answered: Atoms  # the learner's answer at this step
    reference: Atoms  # the same structure, labelled by EMT


class MDRun(NamedTuple):
    frames: list[Frame]
    probes: list[Probe]
    stopped: str | None  # why the learner stopped the MD early, if it did
    seconds: float
    probe_seconds: float  # of which EMT on the probes


@dataclass(frozen=True)
class Errors:
    energy_rmse_mev: float  # per atom
    energy_bias_mev: float  # mean signed error per atom: an offset shows here
    force_rmse: float  # eV/Å, per component


@dataclass(frozen=True)
class Window:
    start: int
    stop: int
    probes: int
    answering: Errors
    final: Errors
    force_ratio: float  # answering / final
    energy_ratio: float


@dataclass(frozen=True)
class PhaseStructure:
    phase: str
    msd_learner: float  # Å², over MSD_LAG steps, every time origin in the phase
    msd_reference: float
    msd_independent: float  # the mean of the independent runs
    msd_deviation: float  # |learner / reference - 1|
    msd_noise: float  # the largest |independent / reference - 1|
    rdf_difference: float  # RMS over r of g_learner - g_reference
    rdf_noise: float  # the largest RMS over r of g_independent - g_reference


@dataclass(frozen=True)
class PhaseTest:
    phase: str
    snapshots: int
    final: Errors
    passive: Errors
    energy_ratio: float  # final / passive
    force_ratio: float
    same_data: Errors | None  # a fit from scratch to the learner's reference data with the passive fit's options


@dataclass(frozen=True)
class Holds:
    count: int
    median_s: float
    max_s: float
    total_s: float
    fit_median_s: float  # the fits of all parameters inside the holds
    fit_max_s: float
    back_to_back: int  # holds within BACK_TO_BACK steps of the previous one


# ------------------------------------------------------------------ molecular dynamics

def reference_calculator(teacher: Path | None):
    """EMT, or the MTP `teacher` playing the reference (the issue's teacher-student setting)."""
    return EMT() if teacher is None else MTPCalculator(teacher, species=SPECIES)


def run_md(calculator, ramp: Ramp, seed: int, snapshot_every: int, probe_every: int = 0,
           teacher: Path | None = None) -> MDRun:
    """MD along the ramp; a frame every `snapshot_every` steps and, if `probe_every`, a reference probe."""
    atoms = start_structure(ramp.cold, seed)
    atoms.calc = calculator
    md = dynamics(atoms, ramp.cold, seed)
    frames, probes, probe_seconds = [], [], [0.0]

    def observe():
        md.set_temperature(temperature_K=ramp.temperature(md.nsteps))
        if md.nsteps % snapshot_every == 0:
            frames.append(Frame(md.nsteps, labelled_copy(atoms)))
        if probe_every and md.nsteps % probe_every == 0 and md.nsteps > 0:
            started = time.perf_counter()
            probes.append(probe(md.nsteps, atoms, teacher))
            probe_seconds[0] += time.perf_counter() - started
            report_progress(probes, calculator, ramp)

    md.attach(observe, interval=1)
    started, stopped = time.perf_counter(), None
    try:
        md.run(ramp.steps)
    except (LearningStopped, UnphysicalStructure) as exc:  # a result too: the harness reports the part before it
        stopped = f"step {md.nsteps}: {exc}"
    return MDRun(frames, probes, stopped, time.perf_counter() - started, probe_seconds[0])


def probe(step: int, atoms: Atoms, teacher: Path | None) -> Probe:
    """The answer the MD's calculator just gave, and the reference on a copy (the learner never sees it)."""
    assert not atoms.calc.check_state(atoms), "the calculator's results must belong to this structure"
    answered = labelled_copy(atoms)
    reference = answered.copy()
    reference.calc = reference_calculator(teacher)
    return Probe(step, answered, labelled_copy(reference))


def report_progress(probes: list[Probe], calculator, ramp: Ramp) -> None:
    """A line on stderr every PROGRESS_EVERY probes: a long run shows where it is."""
    if len(probes) % PROGRESS_EVERY == 0:
        last = probes[-1]
        error = errors([last.answered], [last.reference])
        print(f"step {last.step}: thermostat {ramp.temperature(last.step):.0f} K, "
              f"{calculator.extras.get('reference_calls')} reference calls, answering model off by "
              f"{error.force_rmse:.4f} eV/Å, {error.energy_rmse_mev:.3f} meV/atom", file=sys.stderr, flush=True)


def learn_on_the_fly(args, ramp: Ramp) -> tuple[MDRun, Learner, float]:
    """The learner's MD; the closed learner (final.mtp written) and the seconds its close took."""
    delay = args.reference_delay
    if args.teacher is not None:
        reference = Reference(calculator="mtp_driver.calculator:MTPCalculator",
                              kwargs=dict(potential=str(args.teacher), species=SPECIES))
    elif delay:
        reference = Reference(calculator=f"{Path(__file__).stem}:SleepingEMT", kwargs=dict(delay=delay))
    else:
        reference = Reference()
    settings = LearnSettings(species=tuple(SPECIES), reference=reference, threshold_break=args.threshold_break,
                             audit_every=args.audit_every, audit_error_ratio=args.audit_error_ratio,
                             refit_iterations=args.refit_iterations, pool_hold=not args.no_pool_hold)
    start = untrained_mtp(args.level, 1, MIN_DIST, args.cutoff, species=SPECIES)
    learner = Learner(start, args.run_dir, settings)
    run = run_md(PotentialCalculator(learner), ramp, MD_SEED, args.snapshot_every, args.probe_every, args.teacher)
    started = time.perf_counter()
    learner.close()  # the final refit: RUN/final.mtp
    return run, learner, time.perf_counter() - started


# ------------------------------------------------------------------ 1. the answering model along the run

def errors(predictions: list[Atoms], references: list[Atoms]) -> Errors:
    if not references:
        return Errors(math.nan, math.nan, math.nan)
    energy = np.array([(p.get_potential_energy() - r.get_potential_energy()) / len(r)
                       for p, r in zip(predictions, references, strict=True)])
    forces = np.concatenate([(p.get_forces() - r.get_forces()).ravel() for p, r in zip(predictions, references)])
    return Errors(1e3 * float(np.sqrt(np.mean(energy ** 2))), 1e3 * float(energy.mean()),
                  float(np.sqrt(np.mean(forces ** 2))))


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def windows(probes: list[Probe], final: list[Atoms], width: int, skip: int, steps: int) -> list[Window]:
    """Answering and final errors per window (start, start + width] of steps; probes in the first `skip`
    steps left out."""
    rows = []
    for start in range(0, steps, width):
        chosen = [i for i, p in enumerate(probes) if start < p.step <= start + width and p.step > skip]
        if not chosen:
            continue
        references = [probes[i].reference for i in chosen]
        answering = errors([probes[i].answered for i in chosen], references)
        fitted = errors([final[i] for i in chosen], references)
        rows.append(Window(start, start + width, len(chosen), answering, fitted,
                           ratio(answering.force_rmse, fitted.force_rmse),
                           ratio(answering.energy_rmse_mev, fitted.energy_rmse_mev)))
    return rows


# ------------------------------------------------------------------ 2. structure: MSD and RDF

def in_phase(frames: list[Frame], phase: Phase) -> list[Frame]:
    return [frame for frame in frames if phase.holds(frame.step)]


def msd(frames: list[Frame]) -> float:
    """Mean squared displacement over MSD_LAG steps (centre-of-mass drift removed), averaged over every time
    origin of the frames: the observable of diffusion, not of when a superheated crystal happened to melt."""
    if len(frames) < 2:
        return math.nan
    spacing = frames[1].step - frames[0].step
    lag = min(max(1, round(MSD_LAG / spacing)), len(frames) - 1)
    positions = np.array([frame.atoms.positions for frame in frames])  # MD positions are never wrapped
    displacement = positions[lag:] - positions[:-lag]
    displacement -= displacement.mean(axis=1, keepdims=True)
    return float(np.mean(np.sum(displacement ** 2, axis=2)))


def rdf(frames: list[Atoms]) -> np.ndarray:
    """g(r) averaged over the frames, all periodic images (the cell is thinner than 2 RDF_MAX)."""
    edges = np.arange(0.0, RDF_MAX + RDF_BIN / 2, RDF_BIN)
    counts = sum(np.histogram(neighbor_list("d", atoms, RDF_MAX), edges)[0] for atoms in frames)
    shells = 4.0 / 3.0 * np.pi * np.diff(edges ** 3)
    density = len(frames[0]) / frames[0].get_volume()
    return counts / (len(frames) * len(frames[0]) * density * shells)


def rdf_difference(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """RMS over r >= RDF_FROM of the difference of two g(r) (None: a run with no frames in the phase)."""
    if a is None or b is None:
        return math.nan
    radii = np.arange(RDF_BIN / 2, RDF_MAX, RDF_BIN)
    return float(np.sqrt(np.mean((a - b)[radii >= RDF_FROM] ** 2)))


def structure(phase: Phase, learner: list[Frame], reference: list[Frame],
              independents: list[list[Frame]]) -> PhaseStructure:
    """The learner's MD against the reference MD in `phase`; the noise: the independent EMT runs against it."""
    mine, theirs, *others = [in_phase(frames, phase) for frames in (learner, reference, *independents)]
    own, reference_msd, *other_msds = [msd(frames) for frames in (mine, theirs, *others)]
    g_mine, g_theirs, *g_others = [rdf([f.atoms for f in frames]) if frames else None
                                   for frames in (mine, theirs, *others)]
    return PhaseStructure(phase.name, own, reference_msd, float(np.mean(other_msds)),
                          abs(ratio(own, reference_msd) - 1),
                          max(abs(ratio(value, reference_msd) - 1) for value in other_msds),
                          rdf_difference(g_mine, g_theirs), max(rdf_difference(g, g_theirs) for g in g_others))


# ------------------------------------------------------------------ 3. final model against a passive fit

def final_refit_options(settings: LearnSettings) -> TrainOptions:
    """The iterations and seed of the learner's final refit (close), which also holds out a validation share:
    the passive fit trains on all its snapshots."""
    return TrainOptions(max_iter=max(settings.refit_iterations, 1), seed=settings.seed)


def passive_fit(level: int, cutoff: float, images: list[Atoms], options: TrainOptions):
    start = untrained_mtp(level, 1, MIN_DIST, cutoff, species=SPECIES)
    return train(start, images, species=SPECIES, options=options, progress=False).mtp


def phase_test(phase: Phase, test: list[Frame], final: MTPCalculator, passive: MTPCalculator,
               same_data: MTPCalculator | None) -> PhaseTest:
    images = [frame.atoms for frame in in_phase(test, phase)]
    final_errors = errors(predict(final, images), images)
    passive_errors = errors(predict(passive, images), images)
    return PhaseTest(phase.name, len(images), final_errors, passive_errors,
                     ratio(final_errors.energy_rmse_mev, passive_errors.energy_rmse_mev),
                     ratio(final_errors.force_rmse, passive_errors.force_rmse),
                     None if same_data is None else errors(predict(same_data, images), images))


# ------------------------------------------------------------------ 4. holds

def holds(learner: Learner) -> Holds:
    events = learner.journal.events()
    resumes = [event for event in events if event["event"] == "resume"]
    if not resumes:
        return Holds(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    held = [event["held_seconds"] for event in resumes]
    fits = [event["seconds"] for event in events if event["event"] == "hold_fit"] or [0.0]
    steps = [event["step"] for event in resumes]
    back_to_back = sum(later - earlier <= BACK_TO_BACK for earlier, later in zip(steps, steps[1:]))
    return Holds(len(held), float(np.median(held)), max(held), sum(held), float(np.median(fits)), max(fits),
                 back_to_back)


# ------------------------------------------------------------------ output

def print_tables(rows: list[Window], shapes: list[PhaseStructure], tests: list[PhaseTest], held: Holds,
                 calls: int, steps: int) -> None:
    print("\n1. answering model vs final model on EMT probes (F: force RMSE eV/Å, E: energy RMSE meV/atom)")
    print(f"{'window':>11}{'probes':>7}{'F answer':>10}{'F final':>9}{'ratio':>7}{'E answer':>10}{'E final':>9}"
          f"{'ratio':>7}{'E bias answer/final':>21}")
    for w in rows:
        print(f"{w.start:>5}-{w.stop:<5}{w.probes:>7}{w.answering.force_rmse:>10.4f}{w.final.force_rmse:>9.4f}"
              f"{w.force_ratio:>7.2f}{w.answering.energy_rmse_mev:>10.3f}{w.final.energy_rmse_mev:>9.3f}"
              f"{w.energy_ratio:>7.2f}{w.answering.energy_bias_mev:>11.3f}/{w.final.energy_bias_mev:<9.3f}")
    print(f"\n2. learner's MD vs reference MD (MSD over {MSD_LAG} steps; noise: the largest deviation of the "
          "independent EMT runs from the reference MD)")
    print(f"{'phase':<9}{'MSD learner':>12}{'reference':>10}{'independent':>12}{'dev':>7}{'noise':>7}"
          f"{'RDF diff':>10}{'noise':>7}")
    for s in shapes:
        print(f"{s.phase:<9}{s.msd_learner:>12.4f}{s.msd_reference:>10.4f}{s.msd_independent:>12.4f}"
              f"{s.msd_deviation:>7.2f}{s.msd_noise:>7.2f}{s.rdf_difference:>10.4f}{s.rdf_noise:>7.4f}")
    print("\n3. final model vs passive fit on the independent run (E meV/atom RMSE [bias], F eV/Å)")
    print(f"{'phase':<9}{'snaps':>6}{'E final':>16}{'E passive':>16}{'ratio':>7}{'F final':>9}{'F passive':>10}"
          f"{'ratio':>7}" + (f"{'E same data':>16}{'F same data':>12}" if tests and tests[0].same_data else ""))
    for t in tests:
        same = "" if t.same_data is None else \
            f"{t.same_data.energy_rmse_mev:>8.3f} [{t.same_data.energy_bias_mev:>+6.3f}]{t.same_data.force_rmse:>12.4f}"
        print(f"{t.phase:<9}{t.snapshots:>6}{t.final.energy_rmse_mev:>8.3f} [{t.final.energy_bias_mev:>+6.3f}]"
              f"{t.passive.energy_rmse_mev:>8.3f} [{t.passive.energy_bias_mev:>+6.3f}]{t.energy_ratio:>7.2f}"
              f"{t.final.force_rmse:>9.4f}{t.passive.force_rmse:>10.4f}{t.force_ratio:>7.2f}" + same)
    print(f"\n4. {calls} reference calls in {steps} MD steps (1/{steps / max(calls, 1):.0f}); {held.count} holds, "
          f"median {held.median_s:.2f} s, max {held.max_s:.2f} s, total {held.total_s:.1f} s; fits of all parameters "
          f"in them median {held.fit_median_s:.2f} s, max {held.fit_max_s:.2f} s; {held.back_to_back} holds within "
          f"{BACK_TO_BACK} steps of the previous one")


def plot(probes: list[Probe], final: list[Atoms], ramp: Ramp, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p.step for p in probes]
    references = [p.reference for p in probes]
    answering = [errors([p.answered], [p.reference]) for p in probes]
    fitted = [errors([f], [r]) for f, r in zip(final, references)]
    figure, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for axis, field, label in ((axes[0], "force_rmse", "force RMSE (eV/Å)"),
                               (axes[1], "energy_rmse_mev", "|energy error| (meV/atom)")):
        axis.semilogy(steps, [getattr(e, field) for e in answering], ".-", label="answering model")
        axis.semilogy(steps, [getattr(e, field) for e in fitted], ".-", label="final model")
        axis.set_ylabel(label)
        twin = axis.twinx()
        twin.plot(range(ramp.steps + 1), [ramp.temperature(s) for s in range(ramp.steps + 1)], "k:", lw=1)
        twin.set_ylabel("thermostat (K)")
    axes[0].legend(loc="upper left")
    axes[1].set_xlabel("MD step")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    defaults = LearnSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4000, help="MD steps of 4 fs, each run")
    parser.add_argument("--cold", type=float, default=300.0, help="K, the first quarter")
    parser.add_argument("--hot", type=float, default=4000.0, help="K, reached at half the steps, then held")
    parser.add_argument("--level", type=int, default=10)
    parser.add_argument("--cutoff", type=float, default=5.0, help="Å")
    parser.add_argument("--threshold-break", type=float, default=defaults.threshold_break)
    parser.add_argument("--audit-every", type=int, default=defaults.audit_every)
    parser.add_argument("--audit-error-ratio", type=float, default=defaults.audit_error_ratio,
                        help="an audit error above this many times the model's training RMSE learns at once")
    parser.add_argument("--refit-iterations", type=int, default=defaults.refit_iterations,
                        help="the learner's refits and the passive fit")
    parser.add_argument("--no-pool-hold", action="store_true", help="prune a full candidate pool, do not learn it")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a trained Cu MTP as the reference instead of EMT (e.g. mlearn's published Cu.mtp)")
    parser.add_argument("--reference-delay", type=float, default=0.0, help="seconds each reference call sleeps")
    parser.add_argument("--probe-every", type=int, default=20, help="steps between EMT probes of the answers")
    parser.add_argument("--window", type=int, default=250, help="steps per window of the answering error")
    parser.add_argument("--skip", type=int, default=100, help="first steps left out of the windows")
    parser.add_argument("--snapshot-every", type=int, default=10, help="steps between frames (MSD, RDF)")
    parser.add_argument("--passive-every", type=int, default=10,
                        help="steps between the reference-MD snapshots of the passive fit (a multiple of the above; "
                        "0: no passive fit, e.g. for hold times with --reference-delay)")
    parser.add_argument("--same-data-fit", action="store_true",
                        help="also fit the learner's reference data from scratch with the passive fit's options")
    parser.add_argument("--test-every", type=int, default=20, help="steps between test snapshots (independent run)")
    parser.add_argument("--independent", type=int, default=3,
                        help="independent EMT runs (other seeds) giving the statistical noise of MSD and RDF")
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="answering and final errors along the run (PNG)")
    args = parser.parse_args()
    if args.teacher is not None and args.reference_delay:
        parser.error("--reference-delay sleeps in EMT: not with --teacher")
    if args.passive_every % args.snapshot_every or args.test_every % args.snapshot_every:  # 0 passes
        parser.error("--passive-every and --test-every must be multiples of --snapshot-every")
    args.run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="learn-heating-"))
    ramp = Ramp(args.steps, args.cold, args.hot)
    phases = ramp.phases()
    seconds = {}

    started = time.perf_counter()
    reference = run_md(reference_calculator(args.teacher), ramp, MD_SEED, args.snapshot_every)
    seeds = [INDEPENDENT_SEED] + [100 + k for k in range(1, args.independent)]  # none is MD_SEED
    independents = [run_md(reference_calculator(args.teacher), ramp, seed, args.snapshot_every) for seed in seeds]
    independent = independents[0]  # also the test set of the final model and the passive fit
    seconds["reference_md"] = time.perf_counter() - started

    learning, learner, seconds["final_refit"] = learn_on_the_fly(args, ramp)
    seconds["learning_md"] = learning.seconds - learning.probe_seconds
    seconds["probes_emt"] = learning.probe_seconds

    started = time.perf_counter()
    final = MTPCalculator(args.run_dir / "final.mtp", species=SPECIES)
    on_probes = predict(final, [p.reference for p in learning.probes])
    rows = windows(learning.probes, on_probes, args.window, args.skip, args.steps)
    shapes = [structure(phase, learning.frames, reference.frames, [run.frames for run in independents])
              for phase in phases]
    seconds["measurements"] = time.perf_counter() - started

    training, tests = [], []
    if args.passive_every:
        started = time.perf_counter()
        options = final_refit_options(learner.settings)
        training = [frame.atoms for frame in reference.frames if frame.step % args.passive_every == 0]
        passive_mtp = passive_fit(args.level, args.cutoff, training, options)
        write_mtp(passive_mtp, args.run_dir / "passive.mtp")
        passive = MTPCalculator(passive_mtp, species=SPECIES)
        seconds["passive_fit"] = time.perf_counter() - started
        same_data = None
        if args.same_data_fit:  # the learner's data fitted like the passive snapshots: is a difference data or fit?
            started = time.perf_counter()
            same_data_mtp = passive_fit(args.level, args.cutoff, learner.training, options)
            write_mtp(same_data_mtp, args.run_dir / "same_data.mtp")
            same_data = MTPCalculator(same_data_mtp, species=SPECIES)
            seconds["same_data_fit"] = time.perf_counter() - started
        test = [frame for frame in independent.frames if frame.step % args.test_every == 0]
        tests = [phase_test(phase, test, final, passive, same_data) for phase in phases]

    summary = learner.summary()
    held = holds(learner)
    validated = [event for event in learner.journal.events() if event["event"] == "validated"]
    calls = summary["reference_calls"]
    print(f"NVT MD of 128 fcc Cu atoms, {args.steps} steps of 4 fs: {args.cold:.0f} K to step {args.steps // 4}, "
          f"ramp to {args.hot:.0f} K at step {args.steps // 2}, held; MTP level {args.level}, cutoff {args.cutoff} Å; "
          f"threshold_break {args.threshold_break}, audit_every {args.audit_every} (error ratio "
          f"{args.audit_error_ratio:g}), reference {args.teacher or 'EMT'}, delay {args.reference_delay} s; passive fit on {len(training)} reference-MD snapshots")
    if learning.stopped:
        print(f"the learner stopped the MD at {learning.stopped}")
    print_tables(rows, shapes, tests, held, calls, args.steps)
    if validated:
        v = validated[-1]
        print(f"the learner's final fit, validated on {v['validation']} of its {v['validation'] + v['training']} "
              f"results held out: F {v['unseen']['force_rmse']:.4f} eV/Å, E {v['unseen']['energy_rmse_mev']:.3f} "
              f"meV/atom; after {v['iterations']} iterations on all results there: {v['refit']['force_rmse']:.4f}, "
              f"{v['refit']['energy_rmse_mev']:.3f} (the answering model: {v['answering']['force_rmse']:.4f}, "
              f"{v['answering']['energy_rmse_mev']:.3f}); kept: {v['kept']}")
    print("wall time (s): " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    result = dict(windows=[asdict(w) for w in rows], structure=[asdict(s) for s in shapes],
                  test=[asdict(t) for t in tests], holds=asdict(held), reference_calls=calls, steps=args.steps,
                  calls_per_step=calls / args.steps, stopped=learning.stopped,
                  final_validation=validated[-1] if validated else None, learner=summary, seconds=seconds,
                  settings=dict(level=args.level, cold=args.cold, hot=args.hot, threshold_break=args.threshold_break,
                                audit_every=args.audit_every, audit_error_ratio=args.audit_error_ratio,
                                reference_delay=args.reference_delay, teacher=str(args.teacher or "EMT"),
                                pool_hold=not args.no_pool_hold, same_data_fit=args.same_data_fit,
                                refit_iterations=args.refit_iterations, passive_snapshots=len(training)))
    (args.run_dir / "learn_heating.json").write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps(result))
    if args.plot is not None:
        plot(learning.probes, on_probes, ramp, args.plot)


if __name__ == "__main__":
    main()
