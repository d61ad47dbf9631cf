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
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mtp_driver.plugins import construct

EMT = "ase.calculators.emt:EMT"


class ReferenceFailure(RuntimeError):
    """One reference call gave no usable result; the message says why."""


@dataclass(frozen=True)
class Reference:
    """An ASE calculator (`calculator` import path, built with `kwargs`) or an external `command`.

    For a command, the structure is written as `input_name` (`input_format`, any ASE format) into
    a fresh directory, ``command`` runs there (no shell) within `timeout` seconds, and
    `output_name` is read with ``ase.io.read(output_name, format=output_format)``, which must give
    energy and forces (e.g. vasprun.xml, OUTCAR, an extxyz written by the command)."""

    calculator: str | None = None  # EMT when neither is given
    kwargs: dict = field(default_factory=dict)
    command: str | None = None
    input_name: str = "input.extxyz"
    input_format: str | None = None
    output_name: str = "output.extxyz"
    output_format: str | None = None
    timeout: float | None = None

    def __post_init__(self):
        if self.calculator is not None and self.command is not None:
            raise ValueError("a reference is either an ASE calculator import path or an external command, not both")
        if self.calculator is None and self.command is None:
            object.__setattr__(self, "calculator", EMT)

    def fingerprint(self) -> str:
        """Short hash of the settings: results are keyed by it, so changed settings are new calls."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def compute(self, atoms: Atoms, workdir: str | Path | None = None) -> Atoms:
        """A copy of `atoms` with the reference energy (eV), forces (eV/Å) and, for cells periodic
        in all three directions, stress (eV/Å³, ASE sign) in a SinglePointCalculator.
        Raises ReferenceFailure for an exception, a non-zero exit, missing, non-finite or
        wrongly shaped output, or a calculator that reports it did not converge."""
        if self.command is not None:
            with tempfile.TemporaryDirectory(dir=workdir) as directory:
                labelled = self._run_command(atoms, Path(directory))
        else:
            labelled = self._run_calculator(atoms)
        return checked_result(atoms, labelled)

    def _run_calculator(self, atoms: Atoms) -> Atoms:
        try:
            calculator = construct(self.calculator, **self.kwargs)
        except ValueError as exc:
            raise ReferenceFailure(str(exc)) from exc
        copy = atoms.copy()
        copy.calc = calculator
        try:
            copy.get_potential_energy()
            copy.get_forces()
            if copy.pbc.all():
                copy.get_stress()
        except Exception as exc:
            raise ReferenceFailure(f"{self.calculator} raised {type(exc).__name__}: {exc}") from exc
        if getattr(calculator, "converged", True) is False or calculator.results.get("converged", True) is False:
            raise ReferenceFailure(f"{self.calculator} reports that it did not converge")
        return copy

    def _run_command(self, atoms: Atoms, directory: Path) -> Atoms:
        import ase.io

        ase.io.write(directory / self.input_name, atoms, format=self.input_format)
        try:
            finished = subprocess.run(shlex.split(self.command), cwd=directory, capture_output=True, text=True,
                                      timeout=self.timeout, check=False)
        except FileNotFoundError as exc:
            raise ReferenceFailure(f"reference command not found: {self.command!r} ({exc})") from exc
        except subprocess.TimeoutExpired as exc:
            raise ReferenceFailure(f"reference command {self.command!r} did not finish in {self.timeout} s") from exc
        if finished.returncode != 0:
            tail = (finished.stderr or finished.stdout).strip().splitlines()[-3:]
            raise ReferenceFailure(f"reference command {self.command!r} exited with {finished.returncode}: "
                                   + " | ".join(tail))
        output = directory / self.output_name
        if not output.is_file():
            raise ReferenceFailure(f"reference command {self.command!r} wrote no {self.output_name}")
        try:
            return ase.io.read(output, format=self.output_format)
        except Exception as exc:
            raise ReferenceFailure(f"cannot read {self.output_name}: {type(exc).__name__}: {exc}") from exc


def checked_result(atoms: Atoms, labelled: Atoms) -> Atoms:
    """`atoms` with the energy, forces and stress of `labelled`, after checking them."""
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
