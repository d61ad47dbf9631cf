"""Read and write lists of structures: MLIP `.cfg` by extension, anything else through `ase.io`."""

from __future__ import annotations

import os
from pathlib import Path

import ase.io

from .atomic import atomic_write
from .cfg import read_cfg, write_cfg


def is_cfg(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".cfg"


def read_structures(path: str | os.PathLike, species=None) -> list:
    """All configurations in `path`; `species[i]` names MLIP type i for `.cfg` files."""
    if is_cfg(path):
        return read_cfg(path, species=species)
    try:
        return ase.io.read(path, index=":")
    except ase.io.formats.UnknownFileTypeError as exc:  # e.g. an empty file: a user error, said in one line
        raise ValueError(f"{path}: {exc}") from None


def write_structures(path: str | os.PathLike, images, species=None) -> None:
    """Write `images` (with their calculators' results) atomically."""
    if is_cfg(path):
        write_cfg(path, images, species=species)
        return
    suffix = "".join(Path(path).suffixes)
    with atomic_write(path) as handle:
        ase.io.write(handle, images, format=ase.io.formats.filetype(path, read=False) if suffix else None)
