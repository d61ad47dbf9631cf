"""Flat tables derived once from an `MTP` for the Numba kernels.

Two facts make the kernels fast:
* the angular monomials x^a y^b z^c of the unit vector are shared by all radial functions mu, and
  the monomials used with one mu are all those up to some degree: a prefix of the monomials sorted
  by degree. Per neighbour the moments are then dense, contiguous multiply-adds;
* MLIP's product tables are grouped by target, so each product moment is summed in a register.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .model import MTP


class KernelLayout(NamedTuple):
    """Index arrays are unsigned (Numba then skips negative-index wraparound in the gather loops) and
    as narrow as their values allow."""

    basic_mu: np.ndarray  # (n_basic,) radial function of each basic moment
    basic_monomial: np.ndarray  # (n_basic,) index of its angular monomial
    prefix_length: np.ndarray  # (K,) monomials 0..prefix_length[mu]-1 are computed for radial function mu
    monomial_parent: np.ndarray  # (n_mono,) monomial = parent * u[axis]; entry 0 is the constant 1
    monomial_axis: np.ndarray  # (n_mono,)
    monomial_degree: np.ndarray  # (n_mono,) float a + b + c
    raise_monomial: np.ndarray  # (3, n_mono) monomial l + e_axis (0 where there is none, with power 0)
    raise_power: np.ndarray  # (3, n_mono) float: its exponent of the axis, so d(u^raised)/du_axis = power * u^l
    raised_length: np.ndarray  # (K,) lowered monomials of mu's prefix are among the first raised_length[mu]
    product_targets: np.ndarray  # (n_targets,) moments that are sums of products, in evaluation order
    product_start: np.ndarray  # (n_targets + 1,) their product terms, CSR
    product_left: np.ndarray  # (n_times,)
    product_right: np.ndarray
    product_mult: np.ndarray  # float64
    mapping: np.ndarray  # (n_scalar,)
    moments_count: int


def _index_array(values) -> np.ndarray:
    """The narrowest unsigned integer type that holds the indices: measured, uint16 instead of uint64
    tables make level 24 about 7 % faster (the product tables then stay in L2 cache)."""
    values = np.asarray(values)
    dtype = np.uint16 if values.max(initial=0) < 2**16 else np.uint32 if values.max(initial=0) < 2**32 else np.uint64
    return np.ascontiguousarray(values, dtype=dtype)


def monomials_closed_downward(powers: np.ndarray) -> np.ndarray:
    """All exponent triples needed to build `powers` one unit-vector factor at a time and to
    differentiate them: the downward closure, sorted by degree."""
    needed = {(0, 0, 0)}
    stack = [tuple(int(v) for v in p) for p in powers]
    while stack:
        triple = stack.pop()
        if triple in needed:
            continue
        needed.add(triple)
        stack.extend(tuple(v - (ax == k) for k, v in enumerate(triple)) for ax in range(3) if triple[ax] > 0)
    return np.array(sorted(needed, key=lambda t: (sum(t), tuple(-v for v in t))), dtype=np.int64)


def kernel_layout(mtp: MTP) -> KernelLayout:
    basic = mtp.alpha_index_basic
    monomials = monomials_closed_downward(basic[:, 1:4])
    index = {tuple(m): k for k, m in enumerate(monomials.tolist())}
    n_mono = len(monomials)
    parent = np.zeros(n_mono, dtype=np.int64)
    axis = np.zeros(n_mono, dtype=np.int64)
    raise_table = np.zeros((3, n_mono), dtype=np.int64)
    raise_power = np.zeros((3, n_mono))
    for k, triple in enumerate(monomials.tolist()):
        for ax in range(3):
            if triple[ax] > 0:
                lower = index[tuple(v - (ax == a) for a, v in enumerate(triple))]
                raise_table[ax, lower], raise_power[ax, lower] = k, triple[ax]
                parent[k], axis[k] = lower, ax  # any lowered neighbour works as parent
    basic_monomial = np.array([index[tuple(t)] for t in basic[:, 1:4].tolist()], dtype=np.int64)
    prefix_length = np.zeros(mtp.radial_funcs_count, dtype=np.int64)
    np.maximum.at(prefix_length, basic[:, 0], basic_monomial + 1)
    raised = raise_power > 0
    raised_length = np.array([1 + np.nonzero(raised & (raise_table < length))[1].max(initial=-1)
                              for length in prefix_length], dtype=np.int64)

    times = mtp.alpha_index_times
    if np.any(times[:, 0] >= times[:, 3]) or np.any(times[:, 1] >= times[:, 3]):
        raise ValueError("alpha_index_times: every product must target a moment after both of its factors")
    times = times[np.argsort(times[:, 3], kind="stable")]
    targets, starts = np.unique(times[:, 3], return_index=True)
    return KernelLayout(
        basic_mu=_index_array(basic[:, 0]),
        basic_monomial=_index_array(basic_monomial),
        prefix_length=prefix_length,
        monomial_parent=_index_array(parent),
        monomial_axis=_index_array(axis),
        monomial_degree=monomials.sum(axis=1).astype(np.float64),
        raise_monomial=_index_array(raise_table),
        raise_power=raise_power,
        raised_length=raised_length,
        product_targets=_index_array(targets),
        product_start=_index_array(np.append(starts, len(times))),
        product_left=_index_array(times[:, 0]),
        product_right=_index_array(times[:, 1]),
        product_mult=np.ascontiguousarray(times[:, 2], dtype=np.float64),
        mapping=_index_array(mtp.alpha_moment_mapping),
        moments_count=int(mtp.alpha_moments_count),
    )
