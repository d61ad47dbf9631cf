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

from .journal import Journal


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
    events = Journal(run_dir).events()
    trace = read_trace(run_dir)
    resumes = [event for event in events if event["event"] == "resume"]
    calls = [event for event in events if event["event"] == "reference"]
    call_steps = [next((e["step"] for e in events if e["event"] == "selected" and e["key"] == call["key"]), None)
                  for call in calls]
    steps = max([entry["step"] for entry in trace] + [event.get("step", 0) for event in events] + [0])
    recent = [step for step in call_steps if step is not None and step > steps - window]
    rate = 1000.0 * len(recent) / min(window, steps) if steps else 0.0
    held = [event["held_seconds"] for event in resumes]
    errors = [event["force_rmse_old_model"] for event in resumes if event.get("force_rmse_old_model") is not None]
    return dict(
        requests=steps, walkers=len({entry["walker"] for entry in trace}), reference_calls=len(calls),
        quarantined=sum(event["event"] == "quarantined" for event in events),
        retrainings=len(resumes), refits_accepted=sum(bool(e.get("accepted")) for e in events
                                                      if e["event"] == "refit_finished"),
        held_median_s=statistics.median(held) if held else 0.0, held_max_s=max(held) if held else 0.0,
        force_rmse_at_calls_first=errors[0] if errors else None, force_rmse_at_calls_last=errors[-1] if errors else None,
        calls_per_1000_recent=rate, converged=bool(steps >= window and rate < converged_calls),
        restarts=sum(event["event"] == "start" for event in events) - 1,
    )


def format_summary(summary: dict) -> str:
    lines = [f"{summary['requests']} requests from {summary['walkers']} walker(s), {summary['reference_calls']} "
             f"reference calls ({summary['quarantined']} quarantined), {summary['retrainings']} retrainings, "
             f"{summary['refits_accepted']} background refits accepted, {summary['restarts']} restarts",
             f"engine held per retraining: median {summary['held_median_s']:.2f} s, max {summary['held_max_s']:.2f} s"]
    if summary["force_rmse_at_calls_first"] is not None:
        lines.append(f"force RMSE of the model on the structures it extrapolated on: first "
                     f"{summary['force_rmse_at_calls_first']:.4f} eV/Å, last {summary['force_rmse_at_calls_last']:.4f} eV/Å")
    lines.append(f"reference calls per 1000 requests, recently: {summary['calls_per_1000_recent']:.1f} -> "
                 + ("converged" if summary["converged"] else "not converged yet"))
    return "\n".join(lines)


def write_plots(run_dir: str | os.PathLike, path: str | os.PathLike) -> None:
    """One PNG, four panels: grade per request and walker, cumulative reference calls, the model's
    force error at each call, and the time held per retraining."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    events = Journal(run_dir).events()
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
        axes[1, 0].semilogy(*zip(*errors), "o")
    axes[1, 0].set(xlabel="request", ylabel="force RMSE (eV/Å)", title="model error on the held structure")
    axes[1, 1].plot([event["step"] for event in resumes], [event["held_seconds"] for event in resumes], "o")
    axes[1, 1].set(xlabel="request", ylabel="seconds", title="time the engine was held")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
