"""MaxVol: the n rows of a tall (m x n) matrix whose square submatrix has a locally maximal |det|.

Greedy start from a column-pivoted QR of B^T (the most linearly independent rows), then swaps
(Goreinov et al. 2010): with C = B A^-1, the entry of largest |C_ij| names the row i whose swap
into position j multiplies |det A| by |C_ij|. Swapping stops when no |C_ij| exceeds the threshold,
so every row of B is then a combination of the active rows with coefficients at most the threshold
in magnitude: that bound is the extrapolation grade. A^-1 and C follow each swap by rank-1
(Sherman-Morrison) updates; A is inverted from scratch only at the start and once at the end, to
check that rounding in the updates has not hidden a swap.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

SWAP_THRESHOLD = 1.0 + 1e-7  # swap while some |C_ij| exceeds this (MLIP's default)
_REFINEMENTS = 3  # fresh inversions after the swap loop before giving up on rounding drift


class MaxVolResult(NamedTuple):
    selected: np.ndarray  # (n,) row indices of B forming A, in position order
    inverse: np.ndarray  # (n, n) A^-1
    swaps: tuple  # ((position, row), ...) in the order made


def initial_rows(matrix: np.ndarray) -> np.ndarray:
    """Indices of n rows of the (m x n) matrix chosen greedily by a column-pivoted QR of its transpose."""
    m, n = matrix.shape
    if m < n:
        raise ValueError(f"MaxVol needs at least as many rows ({m}) as columns ({n})")
    _, _, pivots = scipy.linalg.qr(matrix.T, mode="economic", pivoting=True)
    return np.sort(pivots[:n])


def maxvol(matrix: np.ndarray, selected: np.ndarray | None = None, inverse: np.ndarray | None = None,
           threshold: float = SWAP_THRESHOLD, row_groups: np.ndarray | None = None,
           group_limit: int | None = None) -> MaxVolResult:
    """Swap rows of `matrix` into the active set until max |matrix @ A^-1| <= threshold.

    selected/inverse: a starting active set (default: `initial_rows`, inverted here).
    row_groups/group_limit: rows with a group >= 0 count towards a limit on the number of distinct
    groups present in the active set; the loop stops before a swap would exceed it (select-add
    uses it for the number of configurations)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    selected = initial_rows(matrix) if selected is None else np.array(selected, dtype=np.int64)
    if inverse is None:
        inverse = _checked_inverse(matrix[selected])
    else:
        inverse = np.array(inverse, dtype=np.float64)
    swaps = []
    for _ in range(_REFINEMENTS):
        coefficients = matrix @ inverse
        limited = _swap_loop(matrix, selected, inverse, coefficients, threshold, row_groups, group_limit, swaps)
        inverse = _checked_inverse(matrix[selected])  # after the loop only: rounding check
        if limited or np.abs(matrix @ inverse).max() <= threshold:
            break
    return MaxVolResult(selected, inverse, tuple(swaps))


def _swap_loop(matrix, selected, inverse, coefficients, threshold, row_groups, group_limit, swaps) -> bool:
    """Swaps in place; True if it stopped at the group limit."""
    n = len(selected)
    while True:
        flat = int(np.argmax(np.abs(coefficients)))
        row, position = divmod(flat, n)
        pivot = coefficients[row, position]
        if abs(pivot) <= threshold:
            return False
        if group_limit is not None:
            groups_after = row_groups[selected]
            groups_after[position] = row_groups[row]
            if len(np.unique(groups_after[groups_after >= 0])) > group_limit:
                return True
        # Sherman-Morrison for A with row `position` replaced by matrix[row]; C follows as B A^-1
        change = coefficients[row].copy()
        change[position] -= 1.0
        column = coefficients[:, position].copy()
        inverse -= np.outer(inverse[:, position], change / pivot)
        coefficients -= np.outer(column, change / pivot)
        selected[position] = row
        swaps.append((position, row))


def _checked_inverse(square: np.ndarray) -> np.ndarray:
    """A^-1, or ValueError when A is singular to working precision (condition number ~ 1 / (n eps))."""
    if np.linalg.cond(square) * len(square) * np.finfo(float).eps > 1.0:
        raise ValueError("the active rows are linearly dependent: the data do not determine these parameters")
    return np.linalg.inv(square)
