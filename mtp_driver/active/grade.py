"""Extrapolation grades of configurations against an active set."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .active_set import ActiveSet
from .rows import SiteRows


class ConfigurationGrades(NamedTuple):
    grades: np.ndarray  # (C,) grade of each configuration (dimensionless; <= 1 inside the training data)
    atom_grades: np.ndarray | None  # (N,) grade of each atom in nbh mode, else None


def configuration_grades(active_set: ActiveSet, rows: SiteRows) -> ConfigurationGrades:
    """gamma = max_j |(b A^-1)_j|: in cfg mode b is the configuration row (dE/dtheta)/N; in nbh mode
    every atom row is graded and a configuration has the largest grade of its atoms."""
    if active_set.mode == "cfg":
        return ConfigurationGrades(active_set.row_grades(rows.configuration_rows()), None)
    atom_grades = active_set.row_grades(rows.rows)
    return ConfigurationGrades(np.maximum.reduceat(atom_grades, rows.atom_starts[:-1]), atom_grades)
