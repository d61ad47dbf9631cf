"""Candidate structures for a screening, from well-kept libraries: derivative superstructures of a parent
lattice (icet's `enumerate_structures`, `pip install 'mtp-driver[screen]'`) and random symmetric crystals
(pyxtal, the same extra), scaled to Vegard's volume and perturbed a little so that a relaxation has work to do.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk

LATTICES = ("fcc", "bcc", "hcp")
# pyxtal's shortest distance between two atoms, x half the sum of their metallic radii: 1.6 keeps 80 % of the contact
# distance (its default, 1.0 with covalent radii, put Cu and Pd 1.4 Å apart)
METALLIC_CONTACT = 1.6


def _needs(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ValueError(f"candidate generation needs {module}: pip install 'mtp-driver[screen]' (or {module})") \
            from None


def vegard_scaled(atoms: Atoms) -> Atoms:
    """`atoms` with its cell scaled to the sum of its elements' atomic volumes in their reference crystals (ASE's
    table; Vegard's law)."""
    volume = sum(count * bulk(element).get_volume() / len(bulk(element))
                 for element, count in Counter(atoms.get_chemical_symbols()).items())
    scaled = atoms.copy()
    scaled.set_cell(atoms.cell * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    return scaled


def derivative_structures(lattice: str, species: Sequence[str], max_atoms: int) -> list[Atoms]:
    """Every derivative superstructure of the `lattice` parent (primitive cell) over `species` with up to `max_atoms`
    atoms, pure ones included, at Vegard's volume (icet's enumeration: symmetrically distinct only)."""
    if lattice not in LATTICES:
        raise ValueError(f"lattice must be one of {LATTICES}, not {lattice!r}")
    _needs("icet")
    from icet.tools import enumerate_structures

    parent = bulk(species[0], lattice, a=3.0 if lattice != "hcp" else 2.5)
    sites = [list(species)] * len(parent)
    structures = []
    with warnings.catch_warnings():  # spglib's deprecation notices, through icet: nothing a user can act on
        warnings.simplefilter("ignore", DeprecationWarning)
        for atoms in enumerate_structures(parent, range(1, max_atoms // len(parent) + 1), sites):
            atoms = vegard_scaled(atoms)
            atoms.info.update(parent=lattice, candidate=f"{lattice}-{len(structures)}")
            structures.append(atoms)
    return structures


def random_crystals(species: Sequence[str], counts: Sequence[int], number: int, seed: int = 0,
                    space_groups: Sequence[int] = tuple(range(2, 231))) -> list[Atoms]:
    """`number` random symmetric crystals with `counts` atoms of each of `species` per cell (pyxtal, no two atoms
    closer than `METALLIC_CONTACT`), each of a space group drawn from `space_groups` that admits that composition,
    at Vegard's volume."""
    _needs("pyxtal")
    from pyxtal import pyxtal
    from pyxtal.tolerance import Tol_matrix

    contacts = Tol_matrix(prototype="metallic", factor=METALLIC_CONTACT)

    rng = np.random.default_rng(seed)
    structures, attempts = [], 0
    while len(structures) < number:
        attempts += 1
        if attempts > 50 * number:
            raise ValueError(f"pyxtal found no crystal for {dict(zip(species, counts))} in the space groups given")
        group = int(rng.choice(space_groups))
        crystal = pyxtal()
        try:
            crystal.from_random(3, group, list(species), list(counts), tm=contacts, seed=int(rng.integers(2**31)))
        except Exception:  # pyxtal raises when the group's Wyckoff positions cannot hold the composition
            continue
        if not crystal.valid:
            continue
        atoms = vegard_scaled(crystal.to_ase())
        atoms.info.update(space_group=group, candidate=f"random-{len(structures)}")
        structures.append(atoms)
    return structures


def perturbed(structures: Sequence[Atoms], rattle: float, strain: float, seed: int = 0) -> list[Atoms]:
    """Copies with every position moved by a normal deviate of `rattle` Å and the cell by a random symmetric strain of
    components up to `strain`: a relaxation must move the atoms and the cell to reach the minimum."""
    rng = np.random.default_rng(seed)
    result = []
    for atoms in structures:
        atoms = atoms.copy()
        deformation = rng.uniform(-strain, strain, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (deformation + deformation.T)), scale_atoms=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        result.append(atoms)
    return result
