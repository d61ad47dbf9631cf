"""Flat integer/float tables derived once from an `MTP` for the Numba kernels.

The kernels work per neighbour with the distinct angular monomials x^a y^b z^c of the unit
vector (shared by all radial functions mu), so each monomial is computed once per neighbour
instead of once per basic moment.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .model import MTP


class KernelLayout(NamedTuple):
    basic_mu: np.ndarray  # (n_basic,) radial function of each basic moment
    basic_monomial: np.ndarray  # (n_basic,) index of its angular monomial
    monomial_parent: np.ndarray  # (n_mono,) monomial = parent * u[axis]; entry 0 is the constant 1
    monomial_axis: np.ndarray  # (n_mono,)
    monomial_powers: np.ndarray  # (n_mono, 3) exponents a, b, c
    monomial_lower: np.ndarray  # (n_mono, 3) index of the monomial with one exponent lowered, -1 if 0
    times_left: np.ndarray  # (n_times,)
    times_right: np.ndarray
    times_mult: np.ndarray  # float64
    times_target: np.ndarray
    mapping: np.ndarray  # (n_scalar,)
    moments_count: int


def monomials_closed_downward(powers: np.ndarray) -> np.ndarray:
    """All exponent triples needed to build `powers` by multiplying one unit-vector component at a time
    and to differentiate them: the downward closure, sorted by degree (then lexicographically)."""
    needed = {(0, 0, 0)}
    stack = [tuple(int(v) for v in p) for p in powers]
    while stack:
        triple = stack.pop()
        if triple in needed:
            continue
        needed.add(triple)
        for axis in range(3):
            if triple[axis] > 0:
                lower = list(triple)
                lower[axis] -= 1
                stack.append(tuple(lower))
    return np.array(sorted(needed, key=lambda t: (sum(t), tuple(-v for v in t))), dtype=np.int64)


def kernel_layout(mtp: MTP) -> KernelLayout:
    basic = mtp.alpha_index_basic
    monomials = monomials_closed_downward(basic[:, 1:4])
    index = {tuple(m): k for k, m in enumerate(monomials.tolist())}
    parent = np.zeros(len(monomials), dtype=np.int64)
    axis = np.zeros(len(monomials), dtype=np.int64)
    lower = np.full((len(monomials), 3), -1, dtype=np.int64)
    for k, triple in enumerate(monomials.tolist()):
        for ax in range(3):
            if triple[ax] > 0:
                down = list(triple)
                down[ax] -= 1
                lower[k, ax] = index[tuple(down)]
        if k > 0:
            ax = int(np.argmax(np.array(triple) > 0))
            parent[k], axis[k] = lower[k, ax], ax
    times = mtp.alpha_index_times
    return KernelLayout(
        basic_mu=np.ascontiguousarray(basic[:, 0]),
        basic_monomial=np.array([index[tuple(t)] for t in basic[:, 1:4].tolist()], dtype=np.int64),
        monomial_parent=parent,
        monomial_axis=axis,
        monomial_powers=monomials,
        monomial_lower=lower,
        times_left=np.ascontiguousarray(times[:, 0]),
        times_right=np.ascontiguousarray(times[:, 1]),
        times_mult=np.ascontiguousarray(times[:, 2], dtype=np.float64),
        times_target=np.ascontiguousarray(times[:, 3]),
        mapping=mtp.alpha_moment_mapping,
        moments_count=int(mtp.alpha_moments_count),
    )
