"""LAMMPS as an engine: an MTP attached to `fix external` on every MPI rank (`MTPFix`), and the runner of a
user's input (`run_input`, the `mtp-driver lammps` command)."""

from .fix import MTPFix
from .library import load_lammps

__all__ = ["MTPFix", "load_lammps"]
