"""The species map: chemical symbol of each MLIP atom type."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

MLIP_TYPE_ARRAY = "mlip_type"  # atoms.arrays key of the MLIP type of each atom, when no species map is given


def parse_species(text: str | list | tuple | None) -> tuple[str, ...]:
    """'Cu,Ag', 'Cu:Ag', 'Cu Ag' or a list -> ('Cu', 'Ag')."""
    if text is None:
        return ()
    if isinstance(text, (list, tuple)):
        return tuple(str(s) for s in text)
    return tuple(s for s in str(text).replace(":", ",").replace(" ", ",").split(",") if s)


def checked_species(species: Sequence[str]) -> tuple[str, ...]:
    """``species`` as a tuple after checking that it lists distinct chemical symbols.

    ``species[i]`` is the symbol of type ``i``. Raises ValueError otherwise, because a symbol
    that appears twice or is not an element cannot map back to one type.
    """
    if isinstance(species, str):
        raise ValueError(f"species must be a list of chemical symbols such as ['Nb', 'Mo'], got {species!r}")
    symbols = tuple(species)
    unknown = [symbol for symbol in symbols if symbol not in atomic_numbers]
    if unknown:
        raise ValueError(f"species {list(symbols)} contains {unknown}, which are not chemical symbols")
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"species {list(symbols)} lists a symbol twice")
    return symbols


def foreign_symbols(numbers, species: Sequence[str]) -> list[str]:
    """The elements among atomic `numbers` that are not in `species`, as sorted symbols ('Z=0' for non-elements)."""
    known = {atomic_numbers[s] for s in species}
    foreign = set(np.unique(numbers).tolist()) - known
    return sorted(chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in foreign)


def atom_types(atoms, species: Sequence[str] | None) -> np.ndarray:
    """Type index of each atom: MLIP types kept by read_cfg, else the position of its symbol in species."""
    if MLIP_TYPE_ARRAY in atoms.arrays:
        return np.asarray(atoms.arrays[MLIP_TYPE_ARRAY], dtype=np.int64)
    if species is None:
        raise ValueError("say which chemical symbol each type of the potential is (species)")
    lookup = np.full(max(atomic_numbers.values()) + 1, -1, dtype=np.int64)
    lookup[[atomic_numbers[s] for s in species]] = np.arange(len(species))
    types = lookup[atoms.numbers]
    if np.any(types < 0):
        unknown = sorted({s for s, t in zip(atoms.get_chemical_symbols(), types) if t < 0})
        raise ValueError(f"a configuration contains {unknown}, which are not among the species {list(species)}")
    return types
