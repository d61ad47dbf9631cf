"""Numba kernel for grades of many rows: max_j |(b P)_j| without a BLAS call.

A BLAS matrix product would be faster by itself, but OpenBLAS keeps its worker threads spinning
after each call, and they then slow the next force call of an MD loop (measured: the call after a
graded one took 2x). Numba's own threads do not spin, so the grade stays within its budget.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_BLOCK = 32  # rows per parallel work item


@njit(cache=True, fastmath=False, parallel=True)
def max_abs_products(rows, projection, dropped_columns, dropped_rows, outside_scale, out):
    """out[i] = max_j |c_j| with c = rows[i] @ projection (zero entries of a row are skipped: the
    columns of absent species pairs), or, if larger, the row's part outside the active rows' span:
    for each dropped column m, |b_m - sum_j c_j dropped_rows[j, m]| relative to the size of its
    terms, times `outside_scale`."""
    n_rows, n_columns = rows.shape
    n_active = projection.shape[1]
    n_dropped = len(dropped_columns)
    for block in prange((n_rows + _BLOCK - 1) // _BLOCK):
        products = np.empty(n_active)
        for i in range(block * _BLOCK, min(n_rows, (block + 1) * _BLOCK)):
            products[:] = 0.0
            for k in range(n_columns):
                value = rows[i, k]
                if value != 0.0:
                    for j in range(n_active):
                        products[j] += value * projection[k, j]
            largest = 0.0
            for j in range(n_active):
                largest = max(largest, abs(products[j]))
            for m in range(n_dropped):
                residual = rows[i, dropped_columns[m]]
                size = abs(residual)
                for j in range(n_active):
                    term = products[j] * dropped_rows[j, m]
                    residual -= term
                    size += abs(term)
                if size > 0.0:
                    largest = max(largest, outside_scale * abs(residual) / size)
            out[i] = largest
