"""The species map: chemical symbol of each MLIP atom type."""

from __future__ import annotations

from typing import Sequence

from ase.data import atomic_numbers


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
