"""The write-ahead journal of a learning run: a kill at any moment loses no reference result.

Layout of a run directory:

    journal.jsonl        one JSON event per line, appended and fsynced before the action it announces
    pending/KEY.json     a structure selected for a reference call, written before the call starts
    references/KEY.json  a finished reference result, written (fsync, atomic rename) before it is used
    quarantine/KEY.json  a structure whose reference calls failed, with the reasons
    initial_training.json  the labelled structures the run started from, if any
    lock                 locked (flock) by the learner writing here, and naming its process

KEY is a hash of the species, positions, cell, periodicity and the reference settings, so a
restart never repeats a finished call, and pending calls of a killed run are made on restart.
Structure files hold exact float64 values (JSON floats round-trip), never pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

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


class Journal:
    """Append-only event log plus one file per selected, finished or quarantined structure."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        for sub in ("pending", "references", "quarantine"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "journal.jsonl"
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

    def events(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # ------------------------------------------------------------------ structures

    def select(self, key: str, atoms: Atoms, **fields) -> None:
        """Record a structure about to be computed (before the call starts)."""
        self._write("pending", key, atoms_to_dict(atoms) | fields)
        self.log("selected", key=key, atoms=len(atoms), **fields)

    def complete(self, key: str, labelled: Atoms, seconds: float) -> None:
        """Store a finished reference result durably, then release its pending entry."""
        self._write("references", key, atoms_to_dict(labelled) | dict(seconds=seconds))
        self.log("reference", key=key, seconds=seconds, energy=labelled.get_potential_energy())
        (self.run_dir / "pending" / f"{key}.json").unlink(missing_ok=True)

    def quarantine(self, key: str, atoms: Atoms, reasons: list[str]) -> None:
        self._write("quarantine", key, atoms_to_dict(atoms) | dict(reasons=reasons))
        self.log("quarantined", key=key, reasons=reasons)
        (self.run_dir / "pending" / f"{key}.json").unlink(missing_ok=True)

    def store_initial_training(self, images) -> None:
        """The labelled structures the run starts from (not reference calls of this run)."""
        with atomic_write(self.run_dir / "initial_training.json") as stream:
            json.dump([atoms_to_dict(atoms) for atoms in images], stream, default=_plain)

    def initial_training(self) -> list[Atoms]:
        path = self.run_dir / "initial_training.json"
        return [atoms_from_dict(data) for data in json.loads(path.read_text(encoding="utf-8"))] if path.exists() else []

    def completed(self) -> dict[str, Atoms]:
        """Every finished reference result, by key, in the order they finished."""
        return self._read("references")

    def pending(self) -> dict[str, Atoms]:
        """Structures selected by an earlier (killed) run whose call did not finish."""
        done = set(self._keys("references")) | set(self._keys("quarantine"))
        return {key: atoms for key, atoms in self._read("pending").items() if key not in done}

    def quarantined(self) -> dict[str, Atoms]:
        return self._read("quarantine")

    def _write(self, kind: str, key: str, data: dict) -> None:
        with atomic_write(self.run_dir / kind / f"{key}.json") as stream:
            json.dump(data, stream, default=_plain)

    def _keys(self, kind: str) -> list[str]:
        return [path.stem for path in (self.run_dir / kind).glob("*.json")]

    def _read(self, kind: str) -> dict[str, Atoms]:
        paths = sorted((self.run_dir / kind).glob("*.json"), key=lambda path: (path.stat().st_mtime_ns, path.name))
        return {path.stem: atoms_from_dict(json.loads(path.read_text(encoding="utf-8"))) for path in paths}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to the journal")
