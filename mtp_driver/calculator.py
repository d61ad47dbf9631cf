"""The MTP's one array-level evaluation (`MTPCalculator.evaluate`: arrays in, an `MTPResult` out), and
the ASE calculator over it. The i-PI driver (`MTPPotential`) and the learner call `evaluate` directly:
no Atoms, no ASE state check, no stress round trip per request."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers

from .geometry import cell_volume
from .io.species import checked_species, foreign_symbols
from .mtp.evaluate import evaluate
from .mtp.layout import kernel_layout
from .mtp.model import MTP
from .mtp.neighbors import SkinNeighborList


class CloseContactError(ValueError):
    """Two atoms are closer than the potential can describe."""


def check_close_contacts(neighbor_list, min_dist: float, close_contact_factor: float) -> None:
    """Raise CloseContactError if a pair of `neighbor_list` is closer than close_contact_factor x min_dist (Å)."""
    p, distance = neighbor_list.closest_pair()
    limit = close_contact_factor * min_dist
    if distance < limit:
        raise CloseContactError(
            f"atoms {neighbor_list.centers[p]} and {neighbor_list.neighbors[p]} are {distance:.4f} Å "
            f"apart, closer than {close_contact_factor} x min_dist = {limit:.4f} Å of the potential: "
            "the structure is unphysical for this potential (or lower close_contact_factor)"
        )


class MTPResult(NamedTuple):
    """One structure's results (eV, Å): the virial is -stress x volume, zero without three periodic directions."""

    energy: float
    site_energies: np.ndarray
    forces: np.ndarray
    stress: np.ndarray | None  # (6,) Voigt, ASE sign; None without a periodic cell of non-zero volume
    virial: np.ndarray
    grade: float | None  # with an active set
    atom_grades: np.ndarray | None  # with a neighbourhood-mode active set


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
    skin:
        Å: pairs are searched within the cutoff + skin and reused while no atom moved more than
        skin / 2 and the cell is the same (MD and relaxation steps); 0 searches at every call.
        The results are the same either way (to rounding).

    Results: ``energy``/``free_energy`` (eV), ``energies`` (eV per atom), ``forces`` (eV/Å) and,
    for cells with three lattice vectors, ``stress`` (eV/Å³, ASE sign and Voigt order). With an
    active set: ``extrapolation_grade`` (dimensionless; <= 1 within the training data, > 2 usually
    means extrapolation) and, for a neighbourhood-mode active set, ``extrapolation_grades`` per atom.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential: str | os.PathLike | MTP, species=None, close_contact_factor: float = 0.75,
                 active_set=None, skin: float = 0.3, **kwargs):
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
        self._types: tuple[bytes, np.ndarray] = (b"", np.zeros(0, dtype=np.int64))
        self.layout = kernel_layout(self.mtp)
        self.neighbor_lists = SkinNeighborList(self.mtp.max_dist, skin)
        self.domain_neighbor_lists = SkinNeighborList(self.mtp.max_dist, skin)  # `evaluate_domain`'s atoms
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
        return self.types_of_numbers(atoms.get_atomic_numbers())

    def types_of_numbers(self, numbers: np.ndarray) -> np.ndarray:
        numbers = np.asarray(numbers)
        key = numbers.tobytes()
        if key != self._types[0]:  # the atoms of a run never change: look their types up once
            self._types = (key, self._lookup_types(numbers))
        return self._types[1]

    def _lookup_types(self, numbers: np.ndarray) -> np.ndarray:
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
        result = self.evaluate(atoms.positions, atoms.cell.array, atoms.pbc, self.types_of(atoms))
        self.results.update(energy=result.energy, free_energy=result.energy, energies=result.site_energies,
                            forces=result.forces)
        if result.stress is not None:
            self.results["stress"] = result.stress
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a periodic cell with three lattice vectors")
        if result.grade is not None:
            self.results["extrapolation_grade"] = result.grade
        if result.atom_grades is not None:
            self.results["extrapolation_grades"] = result.atom_grades

    def evaluate(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, types: np.ndarray) -> MTPResult:
        """Energy, forces, stress, virial and (with an active set) grades of one structure given as arrays (Å;
        `types` from `types_of_numbers`), in one kernel pass."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        pbc = np.asarray(pbc, dtype=bool)
        neighbor_list = self.neighbor_lists.update(positions, cell, pbc)
        check_close_contacts(neighbor_list, self.mtp.min_dist, self.close_contact_factor)
        site_rows = None if self.active_set is None else np.empty((len(types), self.mtp.parameter_count))
        result = evaluate(self.mtp, types, neighbor_list, self.layout, site_rows)
        grade, atom_grades = (None, None) if site_rows is None else self._grades(site_rows)
        volume = cell_volume(cell)
        stress, virial = None, np.zeros((3, 3))
        if pbc.any() and volume > 0.0:
            symmetric = 0.5 * (result.strain_derivative + result.strain_derivative.T)
            stress = (symmetric / volume).flat[[0, 4, 8, 5, 2, 1]]
            if pbc.all():
                virial = -symmetric
        return MTPResult(result.energy, result.site_energies, result.forces, stress, virial, grade, atom_grades)

    def evaluate_domain(self, positions: np.ndarray, types: np.ndarray, owned: int,
                        site_rows: np.ndarray | None = None) -> MTPResult:
        """One domain of a decomposed system (an MPI rank of LAMMPS): `positions` (N, 3) Å of its `owned` atoms
        first, then ghost copies of atoms around them at least one cutoff deep, no cell. The energy, site
        energies and virial are the owned sites'; the forces (N, 3) are theirs on every atom: a ghost copy's
        belong to its original (summed over the domains, all are the whole system's). No stress (no cell).
        With `site_rows` (owned, parameter_count), also the owned sites' dV_i/dtheta (a configuration's grade
        needs every domain's): grades are left to the caller."""
        neighbor_list = self.domain_neighbor_lists.update(positions, np.zeros((3, 3)), False, centers=owned)
        check_close_contacts(neighbor_list, self.mtp.min_dist, self.close_contact_factor)
        result = evaluate(self.mtp, types, neighbor_list, self.layout, site_rows)
        virial = -0.5 * (result.strain_derivative + result.strain_derivative.T)
        return MTPResult(result.energy, result.site_energies, result.forces, None, virial, None, None)

    def _grades(self, site_rows: np.ndarray) -> tuple[float, np.ndarray | None]:
        """The structure's grade, and the atoms' grades for a neighbourhood-mode active set."""
        if self.active_set.mode == "nbh":
            atom_grades = self.active_set.row_grades(site_rows)
            return float(atom_grades.max(initial=0.0)), atom_grades
        # MLIP's configuration row: (dE/dtheta) / N
        return float(self.active_set.row_grades(site_rows.mean(axis=0))[0]), None


class MTPPotential:
    """An MTP as a `Potential` (mtp_driver.potential) over `MTPCalculator.evaluate`: what `serve` answers
    i-PI with. Extras: `model_version`, and `mtp_grade` (null without an active set)."""

    def __init__(self, calculator: MTPCalculator, model_version: str):
        self.calculator = calculator
        self.model_version = model_version

    def compute(self, positions, cell, pbc, numbers):
        result = self.calculator.evaluate(positions, cell, pbc, self.calculator.types_of_numbers(numbers))
        return result.energy, result.forces, result.virial, {"model_version": self.model_version,
                                                              "mtp_grade": result.grade}


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
