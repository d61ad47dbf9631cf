"""One force request, checked on the way in and out: wire arrays -> Potential -> wire arrays.

Shared by the socket driver and the i-PI pes plugin, so both check and convert identically.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from mtp_driver.geometry import cell_volume
from mtp_driver.potential import Potential
from mtp_driver.ipi.units import geometry_from_wire, results_to_wire

# i-PI adds this key itself to the parsed extras and refuses a driver that sends it
RESERVED_EXTRAS_KEY = "raw"
# cell lists get slow for tiny cutoffs (too many cells): search at least this far, then filter
MIN_SEARCH_CUTOFF = 2.0


class DriverError(RuntimeError):
    """A fatal problem; the message says what happened and what the user can do about it."""


def read_template(path: str) -> Atoms:
    """The structure that gives species (and periodicity) to every request; '-' reads extxyz from stdin."""
    try:
        if path != "-":
            return ase.io.read(path)
        text = sys.stdin.read()
        if not text.strip():
            raise DriverError("the template was to come on stdin ('--template -') but stdin was empty")
        return ase.io.read(io.StringIO(text), format="extxyz")
    except FileNotFoundError:
        raise DriverError(f"template file {path!r} does not exist") from None
    except DriverError:
        raise
    except Exception as exc:
        raise DriverError(
            f"cannot read template {path!r} ({type(exc).__name__}: {exc}); "
            "give any ASE-readable structure file"
        ) from exc


class Evaluator:
    """Answers requests (one at a time, or a batch) for a fixed list of atoms (the template's)."""

    def __init__(
        self,
        potential: Potential,
        template: Atoms,
        *,
        min_distance: float | None = None,
        template_name: str = "template",
    ):
        if not callable(getattr(potential, "compute", None)):
            raise DriverError(f"{potential!r} has no compute() method: it is not a Potential")
        self.potential = potential
        self.numbers = np.array(template.numbers, dtype=np.int64)
        # a template with a cell says which directions are periodic; without one (plain xyz,
        # as i-PI users often have) the wire cell decides: i-PI's systems are always periodic
        has_cell = template.cell.rank > 0 or bool(template.pbc.any())
        self.pbc = np.array(template.pbc, dtype=bool) if has_cell else None
        self.min_distance = min_distance
        self.template_name = template_name
        self.extras_keys: frozenset[str] | None = None
        self._cell_key, self._cell_pbc = b"", None
        self.calls = 0
        self.compute_seconds = 0.0

    @property
    def natoms(self) -> int:
        return len(self.numbers)

    def check_natoms(self, natoms: int) -> None:
        if natoms != self.natoms:
            raise DriverError(
                f"the server sent {natoms} atoms but {self.template_name} has {self.natoms}: "
                "the template must hold the simulated atoms in the same order "
                "(i-PI's <activelist> is not supported)"
            )

    def __call__(self, h: np.ndarray, positions: np.ndarray):
        """Bohr in -> (energy Ha, forces Ha/Bohr (N,3), virial Ha (3,3), extras JSON string) out."""
        pos, cell, pbc = self._structure(h, positions)
        start = time.perf_counter()
        try:
            results = self.potential.compute(pos, cell, pbc, self.numbers)
        except Exception as exc:
            raise DriverError(
                f"the potential failed on request {self.calls + 1}: {type(exc).__name__}: {exc}"
            ) from exc
        self.compute_seconds += time.perf_counter() - start
        self.calls += 1
        return self._to_wire(*results)

    def batch(self, hs: np.ndarray, positions: np.ndarray) -> list:
        """Several requests at once (i-PI's batched requests: the beads of a PIMD step), each as `__call__`
        answers it, in one call of the potential's `compute_batch` if it has one (a learner grades them together
        and learns once for all); identical structures (i-PI pads a batch with copies) are computed once."""
        first: dict[bytes, int] = {}
        order = [first.setdefault(h.tobytes() + x.tobytes(), i) for i, (h, x) in enumerate(zip(hs, positions))]
        unique = sorted(set(order))
        structures = [(*self._structure(hs[i], positions[i]), self.numbers) for i in unique]
        compute_batch = getattr(self.potential, "compute_batch", None)
        start = time.perf_counter()
        try:
            if compute_batch is not None:
                results = compute_batch(structures)
            else:
                results = [self.potential.compute(*structure) for structure in structures]
        except Exception as exc:
            raise DriverError(
                f"the potential failed on requests {self.calls + 1}-{self.calls + len(unique)} (one batch): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.compute_seconds += time.perf_counter() - start
        self.calls += len(unique)
        answers = dict(zip(unique, (self._to_wire(*result) for result in results)))
        return [answers[i] for i in order]

    def _structure(self, h: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked ASE positions (Å), cell (Å) and periodicity of one request's wire geometry."""
        self.check_natoms(positions.size // 3)
        if not (np.isfinite(positions).all() and np.isfinite(h).all()):
            atoms = np.flatnonzero(~np.isfinite(positions.reshape(-1, 3)).all(axis=1))[:10].tolist()
            raise DriverError(
                f"the server sent non-finite coordinates (NaN/inf; atoms {atoms}, cell finite: "
                f"{bool(np.isfinite(h).all())}): the simulation blew up before this request; "
                "check the time step, thermostat and the potential's previous forces"
            )
        cell, pos = geometry_from_wire(h, positions)
        key = h.tobytes()
        if key != self._cell_key:
            # the cell rarely changes (never in NVT): decide periodicity once per cell
            self._cell_pbc, self._cell_key = self._pbc_for(cell), key
        pbc = self._cell_pbc
        if self.min_distance:
            self._check_distances(pos, cell, pbc)
        return pos, cell, pbc

    def _to_wire(self, energy, forces, virial, extras) -> tuple[float, np.ndarray, np.ndarray, str]:
        """The potential's results, checked, in wire units."""
        forces = np.asarray(forces, dtype=np.float64)
        virial = np.asarray(virial, dtype=np.float64)
        self._check_results(energy, forces, virial)
        return (*results_to_wire(energy, forces, virial), self._extras_json(extras))

    def _pbc_for(self, cell: np.ndarray) -> np.ndarray:
        volume = cell_volume(cell)
        if self.pbc is None:
            return np.full(3, volume > 1e-12)
        if self.pbc.all() and volume <= 1e-12:
            raise DriverError(
                f"{self.template_name} is periodic but the server sent a cell of zero volume; "
                "give the server the cell, or use a non-periodic template"
            )
        return self.pbc

    def _check_distances(self, pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
        import vesin

        from mtp_driver.geometry import UnphysicalCell, check_geometry

        try:  # vesin dies of SIGFPE on some cells: refuse them first
            check_geometry(pos, np.where(np.asarray(pbc)[:, None], cell, 0.0), pbc, max(self.min_distance, MIN_SEARCH_CUTOFF))
        except UnphysicalCell as exc:
            raise DriverError(f"request {self.calls + 1}: {exc}") from exc
        search = vesin.NeighborList(
            cutoff=max(self.min_distance, MIN_SEARCH_CUTOFF), full_list=False, n_threads=1
        )
        i, j, d = search.compute(pos, cell, pbc, quantities="ijd")
        close = d < self.min_distance
        if close.any():
            k = int(np.argmin(np.where(close, d, np.inf)))
            raise DriverError(
                f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} Å apart, closer than the "
                f"minimum distance {self.min_distance} Å: the structure has collapsed; check the "
                "time step and whether the potential is trained for such configurations"
            )

    def _check_results(self, energy, forces: np.ndarray, virial: np.ndarray) -> None:
        if forces.shape != (self.natoms, 3) or virial.shape != (3, 3):
            raise DriverError(
                f"the potential returned forces {forces.shape} and virial {virial.shape}; "
                f"expected ({self.natoms}, 3) and (3, 3)"
            )
        if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(virial).all()):
            raise DriverError(
                f"the potential returned non-finite results on request {self.calls} "
                f"(energy {energy}): nothing invalid is sent to the server; the structure is "
                "probably outside what the potential can describe"
            )

    def _extras_json(self, extras) -> str:
        if not isinstance(extras, dict):
            raise DriverError(
                f"the potential returned extras of type {type(extras).__name__}; "
                "it must be a dict (i-PI parses a JSON object)"
            )
        keys = frozenset(extras)
        if self.extras_keys is None:
            if RESERVED_EXTRAS_KEY in keys:
                raise DriverError(f"extras key {RESERVED_EXTRAS_KEY!r} is reserved by i-PI")
            self.extras_keys = keys
        elif keys != self.extras_keys:
            raise DriverError(
                f"the potential's extras keys changed from {sorted(self.extras_keys)} to "
                f"{sorted(keys)}; they must be the same on every step or i-PI fails"
            )
        try:
            return _JSON.encode(extras)
        except TypeError as exc:
            raise DriverError(f"the potential's extras are not JSON-serialisable: {exc}") from exc


def _plain(value):
    """NumPy scalars and arrays as plain JSON numbers and lists."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# built once: json.dumps(default=...) builds a new encoder on every call
_JSON = json.JSONEncoder(default=_plain)


def template_label(path: str | Path) -> str:
    return "the template on stdin" if str(path) == "-" else f"template {str(path)!r}"
