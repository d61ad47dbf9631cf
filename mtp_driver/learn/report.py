"""What a learning run did, from its run directory: a text summary and PNG plots.

Reads `journal.jsonl` (holds, reference calls, retrainings) and `grades.jsonl` (the grade of every
request). "Converged" means the last `window` requests needed fewer than `converged_calls`
reference calls per 1000 requests.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from .journal import JournalReader


def read_trace(run_dir: Path) -> list[dict]:
    path = run_dir / "grades.jsonl"
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:  # the last line of a killed run may be cut short
            continue
    return entries


def learning_summary(run_dir: str | os.PathLike, window: int = 1000, converged_calls: float = 5.0) -> dict:
    """Counts, held times, model errors at the reference calls, and the converged indicator."""
    run_dir = Path(run_dir)
    events = JournalReader(run_dir).events()
    trace = read_trace(run_dir)
    resumes = [event for event in events if event["event"] == "resume"]
    calls = [event for event in events if event["event"] == "reference"]
    selected_at = {}  # key -> request of its first selection
    for event in events:
        if event["event"] == "selected":
            selected_at.setdefault(event["key"], event.get("step"))
    call_steps = [selected_at.get(call["key"]) for call in calls]
    steps = max([entry["step"] for entry in trace] + [event.get("step", 0) for event in events] + [0])
    recent = [step for step in call_steps if step is not None and step > steps - window]
    rate = 1000.0 * len(recent) / min(window, steps) if steps else 0.0
    held = [event["held_seconds"] for event in resumes]
    errors = [event["force_rmse_old_model"] for event in resumes if event.get("force_rmse_old_model") is not None]
    audits = [event["force_rmse_model"] for event in events if event["event"] == "audit"]
    audit_energies = [1e3 * event["energy_error_model"] for event in events
                      if event["event"] == "audit" and event.get("energy_error_model") is not None]
    fits = [event["seconds"] for event in events if event["event"] == "hold_fit"]
    validated = [event for event in events if event["event"] == "validated"]
    return dict(
        requests=steps, walkers=len({entry["walker"] for entry in trace}), reference_calls=len(calls),
        quarantined=sum(event["event"] == "quarantined" for event in events),
        retrainings=len(resumes), refits_accepted=sum(bool(e.get("accepted")) for e in events
                                                      if e["event"] == "refit_finished"),
        held_median_s=statistics.median(held) if held else 0.0, held_max_s=max(held) if held else 0.0,
        force_rmse_at_calls_first=errors[0] if errors else None, force_rmse_at_calls_last=errors[-1] if errors else None,
        calls_per_1000_recent=rate, converged=bool(steps >= window and rate < converged_calls),
        restarts=sum(event["event"] == "start" for event in events) - 1,
        # the answering model's error along the run, where the grade did not ask: audit calls
        audits=len(audits), audit_force_rmse_median=statistics.median(audits) if audits else None,
        audit_force_rmse_max=max(audits) if audits else None,
        audit_energy_error_median_mev=statistics.median(audit_energies) if audit_energies else None,
        audit_energy_error_max_mev=max(audit_energies) if audit_energies else None,
        audits_above_bound=sum(bool(event.get("above_bound")) for event in events if event["event"] == "audit"),
        hold_fits=len(fits), hold_fit_median_s=statistics.median(fits) if fits else 0.0,
        hold_fit_max_s=max(fits) if fits else 0.0,
        final_validation=validated[-1] if validated else None,
    )


GRADE_BINS = (0.0, 1.0, 2.0, 5.0, 10.0, 100.0, float("inf"))


def calibration_pairs(run_dir: str | os.PathLike) -> list[tuple[float, float]]:
    """(grade, force RMSE of the model against the reference in eV/Å) at every reference call that
    has both: held structures (grade before learning) and audit calls."""
    pairs = []
    for event in JournalReader(run_dir).events():
        if event["event"] == "resume" and event.get("force_rmse_old_model") is not None and event.get("grade_before"):
            pairs.append((event["grade_before"], event["force_rmse_old_model"]))
        elif event["event"] == "audit" and event.get("grade") is not None:
            pairs.append((event["grade"], event["force_rmse_model"]))
    return sorted(pairs)


def calibration(pairs: list[tuple[float, float]], target_force_rmse: float) -> tuple[list[dict], float | None]:
    """Per grade bin: count, median and largest force error; and the suggested threshold, the largest
    grade up to which every observed error stays within the target (None if the first already does not)."""
    table = []
    for low, high in zip(GRADE_BINS[:-1], GRADE_BINS[1:]):
        errors = [error for grade, error in pairs if low < grade <= high]
        if errors:
            table.append(dict(grades=f"{low:g}-{high:g}", count=len(errors), median=statistics.median(errors),
                              largest=max(errors)))
    suggested = None
    for grade, error in pairs:  # sorted by grade
        if error > target_force_rmse:
            break
        suggested = grade
    return table, suggested


def format_calibration(pairs: list[tuple[float, float]], target_force_rmse: float) -> str:
    table, suggested = calibration(pairs, target_force_rmse)
    if not table:
        return "calibration: no reference call with a model error yet (held structures or --audit-every calls)"
    lines = [f"calibration from {len(pairs)} reference calls: force RMSE of the model (eV/Å) by grade",
             f"{'grade':>12} {'calls':>6} {'median':>9} {'largest':>9}"]
    lines += [f"{row['grades']:>12} {row['count']:>6} {row['median']:>9.4f} {row['largest']:>9.4f}" for row in table]
    lines.append(f"suggested threshold for a force RMSE of at most {target_force_rmse} eV/Å: "
                 + (f"{suggested:.2f}" if suggested is not None else "none (errors exceed it at every observed grade)"))
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    lines = [f"{summary['requests']} requests from {summary['walkers']} walker(s), {summary['reference_calls']} "
             f"reference calls ({summary['quarantined']} quarantined), {summary['retrainings']} retrainings, "
             f"{summary['refits_accepted']} background refits accepted, {summary['restarts']} restarts",
             f"engine held per retraining: median {summary['held_median_s']:.2f} s, max {summary['held_max_s']:.2f} s"]
    if summary["force_rmse_at_calls_first"] is not None:
        lines.append(f"force RMSE of the model on the structures it extrapolated on: first "
                     f"{summary['force_rmse_at_calls_first']:.4f} eV/Å, last {summary['force_rmse_at_calls_last']:.4f} eV/Å")
    if summary["hold_fits"]:
        lines.append(f"fits of all parameters inside holds: {summary['hold_fits']}, median "
                     f"{summary['hold_fit_median_s']:.2f} s, max {summary['hold_fit_max_s']:.2f} s")
    if summary["audits"]:
        lines.append(f"force RMSE of the answering model at {summary['audits']} audit calls: median "
                     f"{summary['audit_force_rmse_median']:.4f} eV/Å, max {summary['audit_force_rmse_max']:.4f} eV/Å, "
                     f"{summary['audits_above_bound']} above a bound (each learnt at once: the audited structure, "
                     "pooled candidates, all parameters)")
        if summary["audit_energy_error_median_mev"] is not None:
            lines.append(f"energy error of the answering model at the audit calls: median "
                         f"{summary['audit_energy_error_median_mev']:.3f} meV/atom, max "
                         f"{summary['audit_energy_error_max_mev']:.3f} meV/atom")
    final = summary["final_validation"]
    if final is not None:
        unseen, refit, answering = final["unseen"], final["refit"], final["answering"]
        lines.append(f"last refit ({final['reason']}): fitted to {final['training']} structures, on the "
                     f"{final['validation']} held out {unseen['force_rmse']:.4f} eV/Å, "
                     f"{unseen['energy_rmse_mev']:.3f} meV/atom (unseen); then {final['iterations']} iterations on "
                     f"all: {refit['force_rmse']:.4f} eV/Å, {refit['energy_rmse_mev']:.3f} meV/atom there, the "
                     f"answering model {answering['force_rmse']:.4f} eV/Å, {answering['energy_rmse_mev']:.3f} "
                     f"meV/atom (both trained on them); kept: {final['kept']}")
    lines.append(f"reference calls per 1000 requests, recently: {summary['calls_per_1000_recent']:.1f} -> "
                 + ("converged" if summary["converged"] else "not converged yet"))
    return "\n".join(lines)


def write_plots(run_dir: str | os.PathLike, path: str | os.PathLike) -> None:
    """One PNG, four panels: grade per request and walker, cumulative reference calls, the model's
    force error at each call (held structures and audits), and the time held per retraining."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    events = JournalReader(run_dir).events()
    trace = read_trace(run_dir)
    resumes = [event for event in events if event["event"] == "resume"]
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    grades = axes[0, 0]
    for walker in sorted({entry["walker"] for entry in trace}):
        mine = [entry for entry in trace if entry["walker"] == walker and entry["grade"] is not None]
        grades.semilogy([e["step"] for e in mine], [max(e["grade"], 1e-3) for e in mine], ".", ms=2, label=walker)
    held = [(event["step"], event["grade_before"]) for event in resumes if event.get("grade_before")]
    if held:
        grades.semilogy(*zip(*held), "rx", label="held (grade before learning)")
    grades.set(xlabel="request", ylabel="extrapolation grade", title="grades")
    grades.legend(fontsize=7)
    selected = sorted(event["step"] for event in events if event["event"] == "selected")
    axes[0, 1].step(selected, range(1, len(selected) + 1), where="post")
    axes[0, 1].set(xlabel="request", ylabel="reference calls", title="cumulative reference calls")
    errors = [(event["step"], event["force_rmse_old_model"]) for event in resumes
              if event.get("force_rmse_old_model") is not None]
    if errors:
        axes[1, 0].semilogy(*zip(*errors), "o", label="held structure (before learning)")
    audits = [(event["step"], event["force_rmse_model"]) for event in events if event["event"] == "audit"]
    if audits:
        axes[1, 0].semilogy(*zip(*audits), "s", ms=3, label="audit call (answering model)")
    if errors or audits:
        axes[1, 0].legend(fontsize=7)
    axes[1, 0].set(xlabel="request", ylabel="force RMSE (eV/Å)", title="model error against the reference")
    axes[1, 1].plot([event["step"] for event in resumes], [event["held_seconds"] for event in resumes], "o")
    axes[1, 1].set(xlabel="request", ylabel="seconds", title="time the engine was held")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_calibration_plot(pairs: list[tuple[float, float]], target_force_rmse: float, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5))
    if pairs:
        axis.loglog(*zip(*pairs), "o")
    axis.axhline(target_force_rmse, color="r", ls="--", label=f"target {target_force_rmse} eV/Å")
    axis.set(xlabel="extrapolation grade", ylabel="force RMSE of the model (eV/Å)", title="grade vs actual error")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
