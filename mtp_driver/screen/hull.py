"""Formation energies and the convex hull of relaxed structures (ASE's `PhaseDiagram` builds the hull).

Formation energy per atom: E/N - sum_el x_el mu_el, with mu_el the lowest energy per atom among the
pure structures of element el in the same set. Energy above the hull per atom: (E - E_hull(composition))/N,
where E_hull is `PhaseDiagram.decompose`'s lowest combination of the structures at that composition.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Sequence

from ase import Atoms
from ase.phasediagram import PhaseDiagram

ON_HULL = 1e-6  # eV/atom: a structure this close to the hull is on it


class HullPoint(NamedTuple):
    index: int  # in the structures given
    formula: str
    atoms: int
    fractions: dict[str, float]  # composition, by element
    energy_per_atom: float  # eV/atom
    formation_energy: float  # eV/atom, against the elemental references
    above_hull: float  # eV/atom, >= 0
    verified: bool  # the energy is the reference's (after --verify)


class Hull(NamedTuple):
    """The points of every usable structure, the elemental references, and what was left out (index, why)."""

    points: list[HullPoint]
    references: dict[str, float]  # eV/atom of each element's lowest pure structure
    excluded: list[tuple[int, str]]

    def on_hull(self) -> list[HullPoint]:
        return [point for point in self.points if point.above_hull <= ON_HULL]


def usable(atoms: Atoms) -> str | None:
    """Why a structure cannot enter the hull (None if it can): not converged, or no finite energy."""
    status = atoms.info.get("relax_status", "converged")
    if status != "converged":
        return f"relax_status {status}"
    try:
        energy = atoms.get_potential_energy()
    except Exception:  # no calculator or no energy: nothing to put on a hull
        return "no energy"
    return None if math.isfinite(energy) else "non-finite energy"


def build_hull(structures: Sequence[Atoms], species: Sequence[str], verified: Sequence[bool] | None = None) -> Hull:
    """The hull of the converged structures among `structures`, over the elements `species`."""
    excluded, kept = [], []
    for index, atoms in enumerate(structures):
        reason = usable(atoms)
        if reason:
            excluded.append((index, reason))
        else:
            kept.append(index)
    references = {}
    for index in kept:
        symbols = set(structures[index].get_chemical_symbols())
        if len(symbols) == 1:
            (element,) = symbols
            per_atom = structures[index].get_potential_energy() / len(structures[index])
            references[element] = min(per_atom, references.get(element, math.inf))
    missing = [element for element in species if element not in references]
    if missing:
        raise ValueError(f"no converged structure of pure {', '.join(missing)}: formation energies need one per "
                         "element (add the elemental crystals to the candidates)")
    diagram = PhaseDiagram([(structures[i].get_chemical_formula(), structures[i].get_potential_energy()) for i in kept],
                           verbose=False)
    points = []
    for index in kept:
        atoms = structures[index]
        counts, n = Counter(atoms.get_chemical_symbols()), len(atoms)
        fractions = {element: counts.get(element, 0) / n for element in species}
        energy = atoms.get_potential_energy()
        hull_energy = diagram.decompose(atoms.get_chemical_formula())[0]
        points.append(HullPoint(index, atoms.get_chemical_formula(mode="metal"), n, fractions, energy / n,
                                energy / n - sum(fractions[el] * references[el] for el in species),
                                max(0.0, (energy - hull_energy) / n), bool(verified and verified[index])))
    return Hull(points, references, excluded)


def write_table(hull: Hull, path: str | Path) -> None:
    """CSV: one row per structure (excluded ones too, with the reason), in input order."""
    species = list(hull.references)
    rows = {point.index: point for point in hull.points}
    reasons = dict(hull.excluded)
    with open(path, "w", newline="") as stream:
        table = csv.writer(stream)
        table.writerow(["index", "formula", "atoms", *(f"x_{el}" for el in species), "energy_per_atom_eV",
                        "formation_energy_eV_per_atom", "above_hull_eV_per_atom", "on_hull", "verified", "excluded"])
        for index in sorted(rows.keys() | reasons.keys()):
            point = rows.get(index)
            if point is None:
                table.writerow([index, "", "", *([""] * len(species)), "", "", "", "", "", reasons[index]])
                continue
            table.writerow([index, point.formula, point.atoms, *(f"{point.fractions[el]:.6g}" for el in species),
                            f"{point.energy_per_atom:.8f}", f"{point.formation_energy:.8f}", f"{point.above_hull:.8f}",
                            point.above_hull <= ON_HULL, point.verified, ""])


def plot_hull(hull: Hull, path: str | Path, title: str = "") -> None:
    """Formation energy against composition with the hull drawn and verified points marked (binaries only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    species = list(hull.references)
    if len(species) != 2:
        raise ValueError(f"a hull plot needs two elements, not {len(species)} ({', '.join(species)})")
    second = species[1]
    figure, axis = plt.subplots(figsize=(6, 4))
    plain = [p for p in hull.points if not p.verified]
    checked = [p for p in hull.points if p.verified]
    axis.plot([p.fractions[second] for p in plain], [1e3 * p.formation_energy for p in plain], ".", color="0.5",
              label="model")
    if checked:
        axis.plot([p.fractions[second] for p in checked], [1e3 * p.formation_energy for p in checked], "o", mfc="none",
                  color="C3", label="verified with the reference")
    vertices = sorted(hull.on_hull(), key=lambda p: p.fractions[second])
    axis.plot([p.fractions[second] for p in vertices], [1e3 * p.formation_energy for p in vertices], "-", color="C0",
              label="hull")
    axis.set(xlabel=f"x({second})", ylabel="formation energy (meV/atom)", title=title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
