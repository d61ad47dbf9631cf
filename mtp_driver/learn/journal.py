"""The write-ahead journal of a learning run: a kill at any moment loses no reference result.

Layout of a run directory:

    journal.jsonl        one JSON event per line, appended and fsynced before the action it announces
    pending/KEY.json     a structure selected for a reference call, written before the call starts
    references/KEY.json  a finished reference result with the fingerprint of the reference settings that
                         computed it, written (fsync, atomic rename) before it is used
    quarantine/KEY.json  a structure whose reference calls failed, with the reasons
    initial_training.json  the labelled structures the run started from, if any
    lock                 locked (flock) by the learner writing here, and naming its process
    scratch/KEY-N/       where attempt N of a call runs: removed after a success, kept after a failure
    processes/           the process groups of running reference calls (`processes.py`)

KEY is a hash of the species, positions, cell, periodicity and the reference settings, so a
restart never repeats a finished call, and pending calls of a killed run are made on restart.
Structure files hold exact float64 values (JSON floats round-trip), never pickles.

Only the learner, holding `lock`, writes (`Journal`), except that a worker of a remote executor on a
shared file system stores its own finished result in references/ (`attempts.remote_attempt`); reports and the refit process read with
`JournalReader`, which never changes a file and skips (naming it) a line it cannot read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mtp_driver.io.atomic import atomic_write


def structure_key(atoms: Atoms, reference_fingerprint: str) -> str:
    """Hash of exactly what a reference call depends on."""
    digest = hashlib.sha256(reference_fingerprint.encode())
    for array in (atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                  atoms.cell.array.astype(np.float64), atoms.pbc.astype(np.int8)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]


def atoms_to_dict(atoms: Atoms) -> dict:
    """Structure and (if present) energy, forces and stress as plain JSON values."""
    data = dict(numbers=atoms.numbers.tolist(), positions=atoms.positions.tolist(), cell=atoms.cell.array.tolist(),
                pbc=atoms.pbc.tolist())
    results = getattr(atoms.calc, "results", None) or {}
    for name in ("energy", "forces", "stress"):
        if name in results:
            value = results[name]
            data[name] = float(value) if name == "energy" else np.asarray(value).tolist()
    return data


def atoms_from_dict(data: dict) -> Atoms:
    atoms = Atoms(numbers=data["numbers"], positions=data["positions"], cell=data["cell"], pbc=data["pbc"])
    values = {name: np.asarray(data[name]) if name != "energy" else data[name]
              for name in ("energy", "forces", "stress") if name in data}
    if values:
        atoms.calc = SinglePointCalculator(atoms, **values)
    return atoms


class JournalWarning(UserWarning):
    """A line of journal.jsonl or a structure file that could not be read and was skipped."""


class StoredStructure(NamedTuple):
    """A structure of the run directory: a finished result (with energy, forces, stress) or a pending one."""

    key: str
    atoms: Atoms
    fingerprint: str | None  # of the reference settings it is (to be) computed with; None in older runs


class JournalReader:
    """Read-only view of a run directory: safe while a learner is writing it."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "journal.jsonl"

    def events(self) -> list[dict]:
        """Every readable event in order; a torn or malformed line anywhere is skipped with a JournalWarning."""
        if not self.path.exists():
            return []
        content = self.path.read_bytes()
        events = []
        for number, line in enumerate(content.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or "event" not in event:
                torn = number == content.count(b"\n") + 1
                warnings.warn(f"{self.path}: skipped line {number}, "
                              + ("cut short (a write in progress, or a killed run)" if torn else "not a journal event"),
                              JournalWarning, stacklevel=2)
                continue
            events.append(event)
        return events

    def results(self) -> list[StoredStructure]:
        """Every finished reference result, in the order the journal recorded them (results written just
        before a kill, whose event line is missing, come last, by key)."""
        stored = {path.stem: path for path in (self.run_dir / "references").glob("*.json")}
        order = [event["key"] for event in self.events() if event["event"] == "reference" and "key" in event]
        keys = [key for key in dict.fromkeys(order) if key in stored]
        keys += sorted(set(stored) - set(keys))
        results = []
        for key in keys:
            data = self._load(stored[key])
            if data is not None:
                results.append(StoredStructure(key, atoms_from_dict(data), data.get("reference")))
        return results

    def completed(self) -> dict[str, Atoms]:
        """Every finished reference result by key, whatever reference computed it, in journal order."""
        return {result.key: result.atoms for result in self.results()}

    def pending(self) -> dict[str, StoredStructure]:
        """Structures selected by an earlier (killed) run whose call did not finish (no energy yet)."""
        done = set(self._keys("references")) | set(self._keys("quarantine"))
        pending = {}
        for path in sorted((self.run_dir / "pending").glob("*.json")):
            data = None if path.stem in done else self._load(path)
            if data is not None:
                pending[path.stem] = StoredStructure(path.stem, atoms_from_dict(data), data.get("reference"))
        return pending

    def quarantined(self) -> dict[str, Atoms]:
        return {path.stem: atoms_from_dict(data) for path in sorted((self.run_dir / "quarantine").glob("*.json"))
                if (data := self._load(path)) is not None}

    def initial_training(self) -> list[Atoms]:
        path = self.run_dir / "initial_training.json"
        return [atoms_from_dict(data) for data in json.loads(path.read_text(encoding="utf-8"))] if path.exists() else []

    def _keys(self, kind: str) -> list[str]:
        return [path.stem for path in (self.run_dir / kind).glob("*.json")]

    def _load(self, path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            atoms_from_dict(data)  # every field a structure needs is there
            return data
        except (OSError, ValueError, KeyError, TypeError) as exc:  # files are written atomically: edited by hand?
            warnings.warn(f"{path}: skipped, not a readable structure ({type(exc).__name__}: {exc})",
                          JournalWarning, stacklevel=3)
            return None


class Journal(JournalReader):
    """Append-only event log plus one file per selected, finished or quarantined structure; the one
    writer of a run directory (the learner creates it while holding the run's lock)."""

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__(run_dir)
        for sub in ("pending", "references", "quarantine"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        """Drop a last line cut short by a kill (it announced nothing that happened)."""
        if not self.path.exists():
            return
        content = self.path.read_bytes()
        if content and not content.endswith(b"\n"):
            with open(self.path, "r+b") as stream:
                stream.truncate(content.rfind(b"\n") + 1)
                os.fsync(stream.fileno())

    def log(self, event: str, **fields) -> dict:
        """Append one event (with wall-clock time) and fsync it."""
        entry = dict(event=event, time=time.time(), **fields)
        line = json.dumps(entry, sort_keys=True, default=_plain) + "\n"
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())
        return entry

    # ------------------------------------------------------------------ structures

    def select(self, key: str, atoms: Atoms, fingerprint: str, **fields) -> None:
        """Record a structure about to be computed with the reference `fingerprint` (before the call starts)."""
        self._write("pending", key, atoms_to_dict(atoms) | dict(reference=fingerprint) | fields)
        self.log("selected", key=key, atoms=len(atoms), **fields)

    def complete(self, key: str, labelled: Atoms, seconds: float, fingerprint: str) -> None:
        """Store a finished reference result durably, then release its pending entry."""
        store_result(self.run_dir, key, labelled, seconds, fingerprint)
        self.log("reference", key=key, seconds=seconds, energy=labelled.get_potential_energy())
        (self.run_dir / "pending" / f"{key}.json").unlink(missing_ok=True)

    def quarantine(self, key: str, atoms: Atoms, reasons: list[str]) -> None:
        self._write("quarantine", key, atoms_to_dict(atoms) | dict(reasons=reasons))
        self.log("quarantined", key=key, reasons=reasons)
        (self.run_dir / "pending" / f"{key}.json").unlink(missing_ok=True)

    def release(self, key: str, reason: str) -> None:
        """Drop a pending structure without a call (it was computed under another key)."""
        self.log("released", key=key, reason=reason)
        (self.run_dir / "pending" / f"{key}.json").unlink(missing_ok=True)

    def adopt(self, result: StoredStructure, fingerprint: str) -> None:
        """Record a stored result as one of the reference `fingerprint` (the user said the change of settings
        does not change results); the file keeps where it came from."""
        data = json.loads((self.run_dir / "references" / f"{result.key}.json").read_text(encoding="utf-8"))
        self._write("references", result.key, data | dict(reference=fingerprint, adopted_from=result.fingerprint))

    def store_initial_training(self, images) -> None:
        """The labelled structures the run starts from (not reference calls of this run)."""
        with atomic_write(self.run_dir / "initial_training.json") as stream:
            json.dump([atoms_to_dict(atoms) for atoms in images], stream, default=_plain)

    def _write(self, kind: str, key: str, data: dict) -> None:
        with atomic_write(self.run_dir / kind / f"{key}.json") as stream:
            json.dump(data, stream, default=_plain)


def store_result(run_dir: Path, key: str, labelled: Atoms, seconds: float, fingerprint: str) -> None:
    """RUN/references/KEY.json, written atomically: by the learner, or by an executor's worker that shares the run
    directory's file system (the one other writer there: a result a restart finds without a journal line)."""
    with atomic_write(run_dir / "references" / f"{key}.json") as stream:
        json.dump(atoms_to_dict(labelled) | dict(seconds=seconds, reference=fingerprint), stream, default=_plain)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to the journal")
