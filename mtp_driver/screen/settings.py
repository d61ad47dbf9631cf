"""Settings of relaxations: a frozen dataclass whose fields carry their help (the command line's options), light
to import (no ASE)."""

from __future__ import annotations

from dataclasses import dataclass, field

OPTIMIZERS = ("BFGS", "FIRE", "LBFGS")  # ASE's
CELL_FILTERS = ("frechet", "unit")  # ASE's FrechetCellFilter, UnitCellFilter


def _setting(default, help: str, **metadata):
    """A setting with its help text (the command line's option help comes from here)."""
    return field(default=default, metadata=dict(help=help, **metadata))


@dataclass(frozen=True)
class RelaxSettings:
    """How each structure is relaxed."""

    fmax: float = _setting(0.01, "eV/Å: converged when every force (with relax_cell, every stress x volume) is below")
    max_steps: int = _setting(500, "optimiser steps per structure; a structure still not converged is 'unconverged'")
    relax_cell: bool = _setting(False, "relax the cell too (with cell_filter)")
    cell_filter: str = _setting("frechet", "ASE's cell filter: frechet (FrechetCellFilter, ASE's recommendation) or "
                                "unit (UnitCellFilter: no matrix logarithm, cheaper per step)", choices=CELL_FILTERS)
    pressure: float = _setting(0.0, "GPa: the external pressure when the cell is relaxed")
    optimizer: str = _setting("BFGS", "ASE optimiser", choices=OPTIMIZERS)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.cell_filter not in CELL_FILTERS:
            raise ValueError(f"cell_filter must be one of {CELL_FILTERS}, got {self.cell_filter!r}")
        if self.fmax <= 0 or self.max_steps < 0:
            raise ValueError("fmax must be > 0 and max_steps >= 0")
