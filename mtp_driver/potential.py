"""What the driver serves: the `Potential` interface, and adapters that answer it.

Everything here is in ASE units (Å, eV); the socket's units never reach this module.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

GRADE_RESULT = "extrapolation_grade"


@runtime_checkable
class Potential(Protocol):
    """Anything that turns one structure into energy, forces, virial and extras.

    `compute(positions (N,3) Å, cell (3,3) Å rows as in ASE, pbc (3,) bool, numbers (N,) int)`
    returns `(energy eV, forces (N,3) eV/Å, virial (3,3) eV, extras)`, with
    virial = -stress * volume (ASE stress sign) and `extras` a dict of JSON-serialisable values
    whose keys are the same on every call (i-PI fails on a key that comes and goes).
    """

    def compute(
        self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, numbers: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray, dict[str, Any]]: ...


class ASECalculatorPotential:
    """Serves any ASE calculator (EMT, the MTP calculator, a DFT code) as a `Potential`.

    Extras always carry `model_version` and `mtp_grade`; the grade is the calculator's
    `results["extrapolation_grade"]` when it provides one, else null.
    """

    def __init__(self, calculator: BaseCalculator, model_version: str | None = None):
        self.calculator = calculator
        self.model_version = model_version or type(calculator).__name__
        self._atoms: Atoms | None = None

    def _structure(self, positions, cell, pbc, numbers) -> Atoms:
        atoms = self._atoms
        if atoms is None or not np.array_equal(atoms.numbers, numbers):
            atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
            atoms.calc = self.calculator
            self._atoms = atoms
        else:
            atoms.cell[:] = cell
            atoms.pbc = pbc
            atoms.positions[:] = positions
        return atoms

    def compute(self, positions, cell, pbc, numbers):
        atoms = self._structure(positions, cell, pbc, numbers)
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        if atoms.pbc.all():
            virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
        else:
            # without full periodicity there is no volume and nothing for a barostat to use
            virial = np.zeros((3, 3))
        grade = self.calculator.results.get(GRADE_RESULT)
        extras = {
            "model_version": self.model_version,
            "mtp_grade": None if grade is None else float(grade),
        }
        return energy, forces, virial, extras


class ZeroPotential:
    """Zero energy, forces and virial: measures the cost of the socket alone (benchmarks)."""

    def compute(self, positions, cell, pbc, numbers):
        return 0.0, np.zeros_like(positions), np.zeros((3, 3)), {
            "model_version": "zero",
            "mtp_grade": None,
        }


class PotentialCalculator(Calculator):
    """An ASE calculator over any `Potential`: the reverse of `ASECalculatorPotential`, for using a
    potential (e.g. the on-the-fly learner) in-process from ASE's optimisers, MD and NEB.

    Results: energy/free_energy (eV), forces (eV/Å) and, for cells periodic in all directions,
    stress (eV/Å³, ASE sign); the potential's extras of the last call are in `self.extras`."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential: Potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential
        self.extras: dict[str, Any] = {}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        energy, forces, virial, self.extras = self.potential.compute(
            atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
        self.results = dict(energy=energy, free_energy=energy, forces=np.asarray(forces))
        if atoms.pbc.all():
            self.results["stress"] = -full_3x3_to_voigt_6_stress(np.asarray(virial)) / atoms.get_volume()
