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
    """Index arrays are unsigned: Numba then skips negative-index wraparound in the gather loops."""

    basic_mu: np.ndarray  # (n_basic,) radial function of each basic moment
    basic_monomial: np.ndarray  # (n_basic,) index of its angular monomial
    prefix_length: np.ndarray  # (K,) monomials 0..prefix_length[mu]-1 are computed for radial function mu
    monomial_parent: np.ndarray  # (n_mono,) monomial = parent * u[axis]; entry 0 is the constant 1
    monomial_axis: np.ndarray  # (n_mono,)
    monomial_degree: np.ndarray  # (n_mono,) float a + b + c
    derivative_monomial: np.ndarray  # (3, n_terms) d(u^abc)/du_axis = power * u^lower, padded with power 0
    derivative_lower: np.ndarray  # (3, n_terms)
    derivative_power: np.ndarray  # (3, n_terms) float
    product_targets: np.ndarray  # (n_targets,) moments that are sums of products, in evaluation order
    product_start: np.ndarray  # (n_targets + 1,) their product terms, CSR
    product_left: np.ndarray  # (n_times,)
    product_right: np.ndarray
    product_mult: np.ndarray  # float64
    mapping: np.ndarray  # (n_scalar,)
    moments_count: int


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
    derivative = [[], [], []]  # per axis: (monomial, lower, power)
    for k, triple in enumerate(monomials.tolist()):
        for ax in range(3):
            if triple[ax] > 0:
                lower = index[tuple(v - (ax == a) for a, v in enumerate(triple))]
                derivative[ax].append((k, lower, triple[ax]))
                parent[k], axis[k] = lower, ax  # any lowered neighbour works as parent
    n_terms = max(1, max(len(d) for d in derivative))
    derivative_table = np.zeros((3, n_terms, 3), dtype=np.int64)
    for ax in range(3):
        if derivative[ax]:
            derivative_table[ax, : len(derivative[ax])] = derivative[ax]
    basic_monomial = np.array([index[tuple(t)] for t in basic[:, 1:4].tolist()], dtype=np.int64)
    prefix_length = np.zeros(mtp.radial_funcs_count, dtype=np.int64)
    np.maximum.at(prefix_length, basic[:, 0], basic_monomial + 1)

    times = mtp.alpha_index_times
    if np.any(times[:, 0] >= times[:, 3]) or np.any(times[:, 1] >= times[:, 3]):
        raise ValueError("alpha_index_times: every product must target a moment after both of its factors")
    times = times[np.argsort(times[:, 3], kind="stable")]
    targets, starts = np.unique(times[:, 3], return_index=True)
    return KernelLayout(
        basic_mu=np.ascontiguousarray(basic[:, 0], dtype=np.uint64),
        basic_monomial=basic_monomial.astype(np.uint64),
        prefix_length=prefix_length,
        monomial_parent=parent.astype(np.uint64),
        monomial_axis=axis.astype(np.uint64),
        monomial_degree=monomials.sum(axis=1).astype(np.float64),
        derivative_monomial=np.ascontiguousarray(derivative_table[:, :, 0], dtype=np.uint64),
        derivative_lower=np.ascontiguousarray(derivative_table[:, :, 1], dtype=np.uint64),
        derivative_power=np.ascontiguousarray(derivative_table[:, :, 2], dtype=np.float64),
        product_targets=targets.astype(np.uint64),
        product_start=np.append(starts, len(times)).astype(np.uint64),
        product_left=np.ascontiguousarray(times[:, 0], dtype=np.uint64),
        product_right=np.ascontiguousarray(times[:, 1], dtype=np.uint64),
        product_mult=np.ascontiguousarray(times[:, 2], dtype=np.float64),
        mapping=mtp.alpha_moment_mapping.astype(np.uint64),
        moments_count=int(mtp.alpha_moments_count),
    )
