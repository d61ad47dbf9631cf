"""Error statistics of predicted against reference energies, forces and stresses (like `mlp calc-errors`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.units import GPa


@dataclass(frozen=True)
class ErrorStats:
    """Mean absolute, root-mean-square and maximum absolute error over `count` values."""

    mae: float
    rmse: float
    max: float
    count: int

    @classmethod
    def of(cls, differences) -> "ErrorStats":
        d = np.abs(np.asarray(differences, dtype=np.float64).ravel())
        if d.size == 0:
            return cls(np.nan, np.nan, np.nan, 0)
        return cls(float(d.mean()), float(np.sqrt(np.mean(d * d))), float(d.max()), int(d.size))


def error_table(references, predictions) -> dict[str, ErrorStats]:
    """Errors of `predictions` against `references` (lists of Atoms with results attached).

    Keys: ``energy_per_atom`` (eV/atom), ``energy`` (eV), ``forces`` (eV/Å, per Cartesian
    component) and ``stress`` (GPa, per Voigt component; only where both sides have a stress).
    """
    energy, energy_per_atom, forces, stress = [], [], [], []
    for reference, prediction in zip(references, predictions, strict=True):
        n = len(reference)
        de = prediction.get_potential_energy() - reference.get_potential_energy()
        energy.append(de)
        energy_per_atom.append(de / n)
        forces.append((prediction.get_forces() - reference.get_forces()).ravel())
        if "stress" in reference.calc.results and "stress" in prediction.calc.results:
            stress.append((prediction.get_stress() - reference.get_stress()) / GPa)
    return {
        "energy_per_atom": ErrorStats.of(energy_per_atom),
        "energy": ErrorStats.of(energy),
        "forces": ErrorStats.of(np.concatenate(forces) if forces else []),
        "stress": ErrorStats.of(np.concatenate(stress) if stress else []),
    }


UNITS = {"energy_per_atom": "eV/atom", "energy": "eV", "forces": "eV/Å", "stress": "GPa"}


def format_error_table(table: dict[str, ErrorStats]) -> str:
    lines = [f"{'quantity':<18}{'unit':>9}{'MAE':>14}{'RMSE':>14}{'max':>14}{'count':>9}"]
    for key, stats in table.items():
        if stats.count:
            lines.append(f"{key:<18}{UNITS[key]:>9}{stats.mae:>14.6g}{stats.rmse:>14.6g}{stats.max:>14.6g}{stats.count:>9}")
    return "\n".join(lines)
