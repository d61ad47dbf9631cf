"""The reference ("QM") calculator of on-the-fly learning: what it is, how one call runs, and how a
failed call is recognised so that nothing is ever trained on it.

A reference is either an ASE calculator named by import path with keyword arguments (EMT is the
default), or an external command: the structure is written to a fresh directory, the command
runs there, and energy, forces (and stress for periodic cells) are read back with `ase.io`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import signal
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mtp_driver.plugins import construct

from .processes import Groups, run_command

EMT = "ase.calculators.emt:EMT"
STDOUT, STDERR = "reference.stdout", "reference.stderr"  # a command's output, in its directory
NOT_THEORY = ("timeout", "match_tolerance")  # settings of a Reference that do not change its results


class ReferenceFailure(RuntimeError):
    """One reference call gave no usable result; the message says why."""


@dataclass(frozen=True)
class Reference:
    """An ASE calculator (`calculator` import path, built with `kwargs`) or an external `command`.

    For a command, the structure is written as `input_name` (`input_format`, any ASE format) into
    a fresh directory, ``command`` runs there (no shell; in a process group of its own, killed as a
    whole after `timeout` seconds; stdout and stderr to `reference.stdout`, `reference.stderr`), and
    `output_name` is read with ``ase.io.read(output_name, format=output_format)``, which must give
    energy and forces (e.g. vasprun.xml, OUTCAR, an extxyz written by the command).

    The result must describe the structure asked for: same species in the same order, same cell and
    periodicity, and every position within `match_tolerance` Å of the input's (modulo lattice
    vectors); otherwise the call failed (e.g. an output holding the last image of a relaxation)."""

    calculator: str | None = None  # EMT when neither is given
    kwargs: dict = field(default_factory=dict)
    command: str | None = None
    input_name: str = "input.extxyz"
    input_format: str | None = None
    output_name: str = "output.extxyz"
    output_format: str | None = None
    timeout: float | None = None
    match_tolerance: float = 1e-4  # Å; output formats print positions to 1e-5 Å or better

    def __post_init__(self):
        if self.calculator is not None and self.command is not None:
            raise ValueError("a reference is either an ASE calculator import path or an external command, not both")
        if self.calculator is None and self.command is None:
            object.__setattr__(self, "calculator", EMT)

    def fingerprint(self) -> str:
        """Short hash of the settings that decide the results (the level of theory): results are keyed
        and labelled by it, so changed settings are new calls and never mix with old results."""
        theory = {name: value for name, value in asdict(self).items() if name not in NOT_THEORY}
        text = json.dumps(theory, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def compute(self, atoms: Atoms, workdir: str | Path | None = None, groups: Groups | None = None) -> Atoms:
        """A copy of `atoms` with the reference energy (eV), forces (eV/Å) and, for cells periodic
        in all three directions, stress (eV/Å³, ASE sign) in a SinglePointCalculator.
        A command runs in `workdir` (created if missing, left to the caller) or else in a temporary
        directory, its process group recorded in `groups` while it runs (see `processes.py`).
        Raises ReferenceFailure for an exception, a non-zero exit, missing, non-finite or
        wrongly shaped output, or a calculator that reports it did not converge."""
        if self.command is None:
            labelled = self._run_calculator(atoms)
        elif workdir is None:
            with tempfile.TemporaryDirectory() as directory:
                labelled = self._run_command(atoms, Path(directory), groups)
        else:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            labelled = self._run_command(atoms, Path(workdir), groups)
        return checked_result(atoms, labelled, self.match_tolerance)

    def _run_calculator(self, atoms: Atoms) -> Atoms:
        copy = atoms.copy()
        try:
            copy.calc = calculator = construct(self.calculator, **self.kwargs)
            copy.get_potential_energy()
            copy.get_forces()
            if copy.pbc.all():
                copy.get_stress()
        except Exception as exc:  # its constructor's too (a bad keyword, no license): a failed call, not a crash
            raise ReferenceFailure(f"{self.calculator} raised {type(exc).__name__}: {exc}") from exc
        if getattr(calculator, "converged", True) is False or calculator.results.get("converged", True) is False:
            raise ReferenceFailure(f"{self.calculator} reports that it did not converge")
        return copy

    def _run_command(self, atoms: Atoms, directory: Path, groups: Groups | None) -> Atoms:
        import ase.io

        ase.io.write(directory / self.input_name, atoms, format=self.input_format)
        # files, not pipes: any bytes (not only UTF-8), any amount, kept with a failed attempt
        with open(directory / STDOUT, "wb") as stdout, open(directory / STDERR, "wb") as stderr:
            try:
                status = run_command(shlex.split(self.command), directory, self.timeout, stdout, stderr, groups)
            except FileNotFoundError as exc:
                raise ReferenceFailure(f"reference command not found: {self.command!r} ({exc})") from exc
            except subprocess.TimeoutExpired as exc:
                raise ReferenceFailure(f"reference command {self.command!r} did not finish in {self.timeout} s "
                                       "(its process group was killed)") from exc
        if status != 0:
            ended = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited with {status}"
            raise ReferenceFailure(f"reference command {self.command!r} {ended}: {_tail(directory)}")
        output = directory / self.output_name
        if not output.is_file():
            raise ReferenceFailure(f"reference command {self.command!r} wrote no {self.output_name}")
        try:
            return ase.io.read(output, format=self.output_format)
        except Exception as exc:
            raise ReferenceFailure(f"cannot read {self.output_name}: {type(exc).__name__}: {exc}") from exc


def _tail(directory: Path, lines: int = 3) -> str:
    """The last lines a command wrote to stderr (else stdout), whatever their encoding."""
    for name in (STDERR, STDOUT):
        with open(directory / name, "rb") as stream:
            stream.seek(max(stream.seek(0, 2) - 4096, 0))
            text = stream.read().decode("utf-8", "replace").strip()
        if text:
            return " | ".join(text.splitlines()[-lines:])
    return "no output"


def checked_result(atoms: Atoms, labelled: Atoms, tolerance: float = 1e-4) -> Atoms:
    """`atoms` with the energy, forces and stress of `labelled`, after checking that `labelled` is the
    same structure (`structure_mismatch`) and that its results are complete and finite."""
    mismatch = structure_mismatch(atoms, labelled, tolerance)
    if mismatch:
        raise ReferenceFailure(f"the reference result is not the structure it was asked for: {mismatch}")
    results = getattr(labelled.calc, "results", None) or {}
    energy = results.get("energy", results.get("free_energy"))
    forces = results.get("forces")
    if energy is None or forces is None:
        raise ReferenceFailure("the reference gave no energy or no forces")
    forces = np.asarray(forces, dtype=np.float64)
    if forces.shape != (len(atoms), 3):
        raise ReferenceFailure(f"the reference gave forces of shape {forces.shape} for {len(atoms)} atoms")
    if not math.isfinite(float(energy)) or not np.isfinite(forces).all():
        raise ReferenceFailure("the reference gave a non-finite energy or force")
    values = dict(energy=float(energy), forces=forces)
    stress = results.get("stress")
    if stress is not None and atoms.pbc.all():
        stress = np.asarray(stress, dtype=np.float64)
        if stress.shape not in ((6,), (3, 3)) or not np.isfinite(stress).all():
            raise ReferenceFailure("the reference gave a malformed or non-finite stress")
        values["stress"] = stress
    result = atoms.copy()
    result.calc = SinglePointCalculator(result, **values)
    return result


def structure_mismatch(asked: Atoms, given: Atoms, tolerance: float) -> str | None:
    """What differs between the structure a reference was asked for and the one its result describes
    (species order, periodicity, cell, positions modulo lattice vectors, to `tolerance` Å), or None."""
    if len(given) != len(asked):
        return f"{len(given)} atoms instead of {len(asked)}"
    species = np.flatnonzero(given.numbers != asked.numbers)
    if len(species):
        i = int(species[0])
        return (f"{len(species)} atoms of another element, first atom {i}: {given.get_chemical_symbols()[i]} "
                f"instead of {asked.get_chemical_symbols()[i]} (atoms in another order?)")
    if not np.array_equal(given.pbc, asked.pbc):
        return f"periodicity {given.pbc.tolist()} instead of {asked.pbc.tolist()}"
    periodic = asked.pbc
    cell_error = np.abs(given.cell.array - asked.cell.array)[periodic]
    if cell_error.size and not cell_error.max() <= tolerance:
        return (f"another cell (a lattice vector differs by {cell_error.max():.3g} Å, tolerance {tolerance:g} Å): "
                f"{np.round(given.cell.array, 6).tolist()} instead of {np.round(asked.cell.array, 6).tolist()}")
    shift = given.positions - asked.positions
    if periodic.any():  # wrapped positions are the same atoms
        lattice = asked.cell.array[periodic]
        fractional = np.linalg.solve(lattice @ lattice.T, lattice @ shift.T).T
        shift = shift - np.round(fractional) @ lattice
    distances = np.linalg.norm(shift, axis=1)
    i = int(np.argmax(distances)) if len(distances) else 0
    if len(distances) and not distances[i] <= tolerance:
        moved = int(np.sum(distances > tolerance))
        return (f"{moved} atoms elsewhere, atom {i} by {distances[i]:.3g} Å (tolerance {tolerance:g} Å, modulo "
                "lattice vectors): the output holds another geometry (the last image of a relaxation, atoms in "
                "another order, a shifted copy?)")
    return None
