"""What a request must be before the learner spends anything on it.

A request the potential cannot be trained on (an element it does not have, no atoms, arrays that do
not match) or whose geometry no neighbour list can handle is refused before it gets a step number,
a journal line or a reference call: a stored result the fit cannot use would make every restart of
the run fail, and one walker's bad request must not harm the others.
"""

from __future__ import annotations

import numpy as np
from ase.cell import Cell

from mtp_driver.io.species import foreign_symbols
from mtp_driver.geometry import UnphysicalCell, check_geometry

from .calls import LearningStopped


class UnphysicalStructure(LearningStopped):
    """The engine sent a structure no reference calculation should be spent on."""


class UntrainableStructure(LearningStopped):
    """The engine sent a structure this potential cannot be trained on (an element it does not have, no
    atoms, arrays that do not match); nothing was recorded."""


def check_request(positions, cell, pbc, numbers, species: list[str], cutoff: float,
                  known_numbers: bytes = b"") -> None:
    """Raise `UntrainableStructure` or `UnphysicalStructure` unless the request is one the learner may answer,
    compute with the reference and train on (a potential of `species` with a `cutoff` in Å). `known_numbers`:
    the bytes of atomic numbers already found to be of `species` (the atoms of a run rarely change)."""
    positions = np.asarray(positions, dtype=np.float64)
    numbers = np.asarray(numbers)
    if positions.ndim != 2 or positions.shape[1] != 3 or numbers.shape != (len(positions),) or numbers.dtype.kind not in "iu":
        raise UntrainableStructure(f"the request has positions of shape {positions.shape} and atomic numbers of shape "
                                   f"{numbers.shape} ({numbers.dtype}): expected (N, 3) and N integers, one per atom")
    if not len(positions):
        raise UntrainableStructure("the request has no atoms: there is nothing to compute or to train on")
    foreign = None if numbers.tobytes() == known_numbers else foreign_symbols(numbers, species)
    if foreign:
        raise UntrainableStructure(f"the structure contains {foreign}, which the potential does not have (its species "
                                   f"are {species}): nothing was recorded; learn with a potential of those species "
                                   "(mtp-driver init --species ...), or send only its elements")
    try:
        box = Cell.new(cell).array
        periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    except ValueError as exc:
        raise UntrainableStructure(f"the request's cell {np.asarray(cell).tolist()} or periodicity {pbc!r} is not "
                                   f"a 3x3 cell and 3 booleans: {exc}") from None
    try:
        check_geometry(positions, box, periodic, cutoff)
    except UnphysicalCell as exc:
        raise UnphysicalStructure(f"{exc}; nothing was recorded and no reference call was made") from exc
