"""ASE calculator over the Numba MTP kernels."""

from __future__ import annotations

import os

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers

from .io.species import checked_species, foreign_symbols
from .mtp.evaluate import evaluate
from .mtp.layout import kernel_layout
from .mtp.model import MTP
from .mtp.neighbors import build_neighbor_list


class CloseContactError(ValueError):
    """Two atoms are closer than the potential can describe."""


def check_close_contacts(neighbor_list, min_dist: float, close_contact_factor: float) -> None:
    """Raise CloseContactError if a pair of `neighbor_list` is closer than close_contact_factor x min_dist (Å)."""
    if not len(neighbor_list.centers):
        return
    distances = neighbor_list.distances()
    p = int(np.argmin(distances))
    limit = close_contact_factor * min_dist
    if distances[p] < limit:
        raise CloseContactError(
            f"atoms {neighbor_list.centers[p]} and {neighbor_list.neighbors[p]} are {distances[p]:.4f} Å "
            f"apart, closer than {close_contact_factor} x min_dist = {limit:.4f} Å of the potential: "
            "the structure is unphysical for this potential (or lower close_contact_factor)"
        )


class MTPCalculator(Calculator):
    """Moment Tensor Potential as an ASE calculator.

    Parameters
    ----------
    potential:
        Path of an MLIP `.mtp` file, or an `MTP` object.
    species:
        Chemical symbol of each type: ``species[i]`` is type ``i`` of the potential. Defaults to the
        names stored with the potential, if any.
    close_contact_factor:
        Pairs closer than ``close_contact_factor * min_dist`` raise `CloseContactError`: the
        Chebyshev basis grows without bound below ``min_dist``, so such forces are meaningless.
        Non-finite, huge or flat cells and atoms absurdly far away raise
        `mtp_driver.geometry.UnphysicalCell` before any neighbour search.
    active_set:
        An `mtp_driver.active.ActiveSet` built for this potential, or the path of one saved with
        `save_active_set`. Then every call also grades the structure, in the same kernel pass.

    Results: ``energy``/``free_energy`` (eV), ``energies`` (eV per atom), ``forces`` (eV/Å) and,
    for cells with three lattice vectors, ``stress`` (eV/Å³, ASE sign and Voigt order). With an
    active set: ``extrapolation_grade`` (dimensionless; <= 1 within the training data, > 2 usually
    means extrapolation) and, for a neighbourhood-mode active set, ``extrapolation_grades`` per atom.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential: str | os.PathLike | MTP, species=None, close_contact_factor: float = 0.75,
                 active_set=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(potential, MTP):
            self.mtp = potential
        else:
            from .io.mtp_file import read_mtp

            self.mtp = read_mtp(potential)
        if not self.mtp.is_trained:
            raise ValueError("this potential is untrained (no radial_coeffs/moment_coeffs): train it first")
        species = species if species is not None else self.mtp.species
        if species is None:
            raise ValueError(
                f"the potential has {self.mtp.species_count} types; say which element each is, "
                "e.g. MTPCalculator(pot, species=['Cu'])"
            )
        species = list(checked_species([species] if isinstance(species, str) else species))
        if len(species) != self.mtp.species_count:
            raise ValueError(f"species {species} has {len(species)} entries; the potential has "
                             f"{self.mtp.species_count} types")
        self.species = species
        self._type_of_number = {atomic_numbers[s]: t for t, s in enumerate(species)}
        self.close_contact_factor = close_contact_factor
        self.layout = kernel_layout(self.mtp)
        self.active_set = None if active_set is None else self._checked_active_set(active_set)
        if self.active_set is not None:
            self.implemented_properties = type(self).implemented_properties + ["extrapolation_grade"] + (
                ["extrapolation_grades"] if self.active_set.mode == "nbh" else [])

    def _checked_active_set(self, active_set):
        from .active.storage import load_active_set

        if isinstance(active_set, (str, os.PathLike)):
            active_set = load_active_set(active_set, self.mtp)
        else:
            active_set.check_potential(self.mtp)
        if active_set.species is not None and list(active_set.species) != self.species:
            raise ValueError(f"the active set was built with species {list(active_set.species)}, "
                             f"the calculator has {self.species}")
        return active_set

    def types_of(self, atoms) -> np.ndarray:
        """Type index of each atom; a clear error for elements the potential does not know."""
        numbers = atoms.get_atomic_numbers()
        foreign = foreign_symbols(numbers, self.species)
        if foreign:
            raise ValueError(f"the structure contains {foreign}, which the potential does not know "
                             f"(its species are {self.species})")
        known = np.array(list(self._type_of_number))
        lookup = np.zeros(known.max() + 1, dtype=np.int64)
        lookup[known] = [self._type_of_number[n] for n in known]
        return lookup[numbers]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        positions = atoms.get_positions()
        cell = atoms.cell.array
        pbc = atoms.pbc
        types = self.types_of(atoms)
        neighbor_list = build_neighbor_list(positions, cell, pbc, self.mtp.max_dist)
        check_close_contacts(neighbor_list, self.mtp.min_dist, self.close_contact_factor)
        site_rows = None if self.active_set is None else np.empty((len(types), self.mtp.parameter_count))
        result = evaluate(self.mtp, types, neighbor_list, self.layout, site_rows)
        if site_rows is not None:
            self._store_grades(site_rows)
        self.results["energy"] = result.energy
        self.results["free_energy"] = result.energy
        self.results["energies"] = result.site_energies
        self.results["forces"] = result.forces
        volume = abs(np.linalg.det(cell))
        if pbc.any() and volume > 0.0:
            stress = 0.5 * (result.strain_derivative + result.strain_derivative.T) / volume
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a periodic cell with three lattice vectors")

    def _store_grades(self, site_rows: np.ndarray) -> None:
        if self.active_set.mode == "nbh":
            atom_grades = self.active_set.row_grades(site_rows)
            self.results["extrapolation_grades"] = atom_grades
            self.results["extrapolation_grade"] = float(atom_grades.max(initial=0.0))
        else:  # MLIP's configuration row: (dE/dtheta) / N
            self.results["extrapolation_grade"] = float(self.active_set.row_grades(site_rows.mean(axis=0))[0])



def predict(calculator: Calculator, images) -> list:
    """Copies of `images` carrying `calculator`'s energy, per-atom energies, forces and (periodic) stress."""
    predictions = []
    for atoms in images:
        atoms = atoms.copy()
        atoms.calc = calculator
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if "stress" in calculator.results:
            results["stress"] = atoms.get_stress()
        if "energies" in calculator.results:
            results["energies"] = calculator.results["energies"]
        atoms.calc = SinglePointCalculator(atoms, **results)
        predictions.append(atoms)
    return predictions
