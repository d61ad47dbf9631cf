"""D-optimal selection of candidate configurations for the reference code (MLIP's select-add).

The candidates' rows join the pool of the active set's rows and MaxVol swaps them in while some
|(b A^-1)_j| exceeds the threshold; the selected configurations are those with a row in the final
active set. Each accepted swap updates A^-1 before the next candidate is graded, so a candidate
that nearly repeats one already taken (grade close to 1 against the updated set) is not taken
again: near-duplicates are dropped by construction, not by a distance heuristic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .active_set import ActiveSet
from .grade import configuration_grades
from .maxvol import maxvol
from .rows import SiteRows

SELECTION_THRESHOLD = 1.1  # MLIP's select-add default: swap only rows that grow |det A| by more than 10 %


class Selection(NamedTuple):
    selected: np.ndarray  # candidate indices to compute with the reference code, in candidate order
    grades: np.ndarray  # (C,) grade of every candidate against the active set before selection


def select_add(active_set: ActiveSet, candidates: SiteRows, threshold: float = SELECTION_THRESHOLD,
               limit: int | None = None) -> Selection:
    """Candidates whose rows maximise the active set's volume (at most `limit` of them)."""
    if threshold < 1.0:
        raise ValueError(f"the selection threshold must be at least 1, got {threshold}")
    if limit is not None and limit < 0:
        raise ValueError(f"the selection limit must be >= 0, got {limit}")
    grades = configuration_grades(active_set, candidates).grades
    counts = np.diff(candidates.atom_starts)
    if active_set.mode == "cfg":
        candidate_rows = candidates.configuration_rows()
        groups = np.arange(len(counts))
    else:
        candidate_rows = candidates.rows
        groups = np.repeat(np.arange(len(counts)), counts)
    if not len(candidate_rows) or limit == 0 or grades.max() <= threshold:
        return Selection(np.zeros(0, dtype=np.int64), grades)
    pool = np.concatenate([active_set.rows, candidate_rows[:, active_set.columns] * active_set.column_scale])
    pool_groups = np.concatenate([np.full(active_set.size, -1), groups])
    result = maxvol(pool, selected=np.arange(active_set.size), inverse=active_set.inverse, threshold=threshold,
                    row_groups=pool_groups, group_limit=limit)
    chosen = pool_groups[result.selected]
    return Selection(np.unique(chosen[chosen >= 0]), grades)
