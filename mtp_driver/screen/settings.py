"""Settings of relaxations: a frozen dataclass whose fields carry their help (the command line's options), light
to import (no ASE)."""

from __future__ import annotations

from dataclasses import dataclass

from mtp_driver.setting import setting

OPTIMIZERS = ("BFGS", "FIRE", "LBFGS")  # ASE's
CELL_FILTERS = ("frechet", "unit")  # ASE's FrechetCellFilter, UnitCellFilter


@dataclass(frozen=True)
class RelaxSettings:
    """How each structure is relaxed."""

    fmax: float = setting(0.01, "eV/Å: converged when every force (with relax_cell, every stress x volume) is below")
    max_steps: int = setting(500, "optimiser steps per structure; a structure still not converged is 'unconverged'")
    relax_cell: bool = setting(False, "relax the cell too (with cell_filter)")
    cell_filter: str = setting("frechet", "ASE's cell filter: frechet (FrechetCellFilter, ASE's recommendation) or "
                                "unit (UnitCellFilter: no matrix logarithm, cheaper per step)", choices=CELL_FILTERS)
    pressure: float = setting(0.0, "GPa: the external pressure when the cell is relaxed")
    optimizer: str = setting("BFGS", "ASE optimiser", choices=OPTIMIZERS)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.cell_filter not in CELL_FILTERS:
            raise ValueError(f"cell_filter must be one of {CELL_FILTERS}, got {self.cell_filter!r}")
        if self.fmax <= 0 or self.max_steps < 0:
            raise ValueError("fmax must be > 0 and max_steps >= 0")
