"""Parity plots of predicted against reference energies per atom, forces and stresses."""

from __future__ import annotations

import os

import numpy as np
from ase.units import GPa


def parity_data(references, predictions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(reference, predicted) arrays: energy per atom (eV/atom), force components (eV/Å) and, where
    both sides have one, stress components (GPa)."""
    energy = np.array([[r.get_potential_energy() / len(r), p.get_potential_energy() / len(p)]
                       for r, p in zip(references, predictions, strict=True)]).reshape(-1, 2)
    forces = [np.stack([r.get_forces().ravel(), p.get_forces().ravel()], axis=1)
              for r, p in zip(references, predictions)]
    stress = [np.stack([r.get_stress(), p.get_stress()], axis=1) / GPa for r, p in zip(references, predictions)
              if "stress" in r.calc.results and "stress" in p.calc.results]
    data = {"energy per atom (eV/atom)": energy, "force component (eV/Å)": np.concatenate(forces)}
    if stress:
        data["stress component (GPa)"] = np.concatenate(stress)
    return {name: (values[:, 0], values[:, 1]) for name, values in data.items()}


def write_parity_plot(references, predictions, path: str | os.PathLike, title: str = "") -> None:
    """One panel per quantity, reference on x, prediction on y, the diagonal and the RMSE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = parity_data(references, predictions)
    figure, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 4.0), squeeze=False)
    for axis, (name, (reference, predicted)) in zip(axes[0], data.items()):
        low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        axis.plot([low, high], [low, high], color="0.6", linewidth=0.8)
        axis.scatter(reference, predicted, s=4, alpha=0.5, edgecolors="none")
        rmse = float(np.sqrt(np.mean((predicted - reference) ** 2)))
        axis.set_title(f"{name}\nRMSE {rmse:.4g}", fontsize=10)
        axis.set_xlabel("reference")
        axis.set_ylabel("MTP")
        axis.set_aspect("equal", adjustable="datalim")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
