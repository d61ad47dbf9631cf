"""One level of theory per training set: results of other reference settings are never mixed in silently.

Every stored result carries the fingerprint of the reference settings that computed it. When a run
directory holds results of other settings than the current ones, the learner trains on them only
after the user decided, once, what they are:

* ``keep``: the change does not alter results (a new path to the same code, more MPI ranks):
  the old results are adopted as results of the current settings;
* ``drop``: another level of theory: only results of the current settings are trained on (the old
  ones stay on disk, and count again if those settings come back).

The decision is journaled, so later restarts with the same settings do not ask again.
"""

from __future__ import annotations

from dataclasses import asdict

from .journal import Journal, StoredStructure
from .reference import Reference
from .settings import settings_diff

DECISIONS = ("keep", "drop")


class ReferenceChanged(ValueError):
    """The run directory holds results of other reference settings and no decision was given."""


def current_results(journal: Journal, reference: Reference, decision: str | None,
                    previous: dict | None = None) -> list[StoredStructure]:
    """The stored results to train on, in journal order, after applying (and journaling) `decision`
    for results of other reference settings. `previous`: the reference settings of the run before
    this start, to which results of runs older than per-result fingerprints belong."""
    if decision not in (None, *DECISIONS):
        raise ValueError(f"the decision on a changed reference is one of {DECISIONS}, not {decision!r}")
    current = reference.fingerprint()
    known = _known_settings(journal, previous)
    legacy = _fingerprint(previous)
    results = [result if result.fingerprint else result._replace(fingerprint=legacy) for result in journal.results()]
    dropped = {event["old"] for event in journal.events()
               if event["event"] == "reference_changed" and event.get("decision") == "drop"
               and event.get("new") == current}
    others: dict[str | None, list[StoredStructure]] = {}
    for result in results:
        if result.fingerprint != current and result.fingerprint not in dropped:
            others.setdefault(result.fingerprint, []).append(result)
    if others and decision is None:
        raise ReferenceChanged(_question(journal, reference, others, known))
    for fingerprint, old in others.items():
        journal.log("reference_changed", decision=decision, old=fingerprint, new=current, results=len(old),
                    old_settings=known.get(fingerprint), new_settings=_plain(reference))
        if decision == "keep":
            for result in old:
                journal.adopt(result, current)
    adopted = {result.key for old in others.values() for result in old} if decision == "keep" else set()
    return [result._replace(fingerprint=current) if result.key in adopted else result
            for result in results if result.fingerprint == current or result.key in adopted]


def _question(journal: Journal, reference: Reference, others: dict, known: dict) -> str:
    lines = []
    for fingerprint, old in others.items():
        settings = known.get(fingerprint)
        diff = "; ".join(settings_diff(settings, _plain(reference))) if settings else "settings not recorded"
        lines.append(f"  {len(old)} results of reference {fingerprint} ({diff})")
    return (f"the run directory {journal.run_dir} holds reference results computed with other reference settings "
            "than this run's:\n" + "\n".join(lines) + "\nOne training set holds one level of theory: restart with "
            "--reference-changed drop to train only on results of the new settings (the old ones stay on disk), "
            "or --reference-changed keep if the change does not alter the results (e.g. a new path to the same "
            "code, more MPI ranks) to adopt the old results")


def _known_settings(journal: Journal, previous: dict | None) -> dict[str | None, dict]:
    """Reference settings by fingerprint, from the starts recorded in the journal and the previous run's settings."""
    known = {_fingerprint(previous): previous} if previous else {}
    for event in journal.events():
        if event["event"] == "start" and isinstance(event.get("reference"), dict):
            known[event.get("reference_fingerprint")] = event["reference"]
    return known


def _fingerprint(settings: dict | None) -> str | None:
    try:
        return Reference(**settings).fingerprint() if settings else None
    except (TypeError, ValueError):  # settings written by another version of this package
        return None


def _plain(reference: Reference) -> dict:
    return {name: value for name, value in asdict(reference).items()}
