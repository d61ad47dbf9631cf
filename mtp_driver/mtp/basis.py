"""Generate the MTP basis of any even level as MLIP's ``alpha_*`` tables.

A moment ``M_{mu,nu} = sum_j f_mu(r_ij) rhat_ij^(x)nu`` is a symmetric tensor of level
``2 + 4 mu + nu``. A basis function is a full contraction of a product of moments, that is a
multigraph: one vertex per moment (labelled by ``mu``; its degree is ``nu``), one edge per
contracted index pair, no loops (a self-contraction of ``M_{mu,nu}`` is just ``M_{mu,nu-2}``).
Its level is the sum of the levels of its moments. The basis of level L is the set of all
non-isomorphic such multigraphs of level <= L within MLIP's three limits below. These limits
reproduce the number of basis functions of MLIP's bases at every level 2..28 (the limit of four
moments alone does up to level 24; mu <= 5 and ranks <= 10 then take out 2 functions at level 26
and 10 at level 28); the tests check that the functions are the very ones of MLIP's own tables.

Tables (see ``model.py``): basic moments are stored by monomial, one entry per ``(a, b, c)``;
``alpha_index_times`` rows ``(p, q, mult, k)`` mean ``M_k += mult * M_p * M_q`` in row order.
A connected multigraph is evaluated through intermediate tensors whose open indices come in
groups. A group stored "by destination" collects the open indices that go to one later moment;
that moment is symmetric, so the group may be symmetrised and stored by monomial. It is stored
weighted (entry = sum over all index sequences with that monomial), which keeps every ``mult`` an
integer. A group stored "by source" holds the open indices of one moment: exact, unweighted.
Contracting a by-destination group with a by-source group (or a moment) is then exact.
Several evaluation plans exist per multigraph; the plans are chosen so that the graphs share
intermediate tensors and the tables have few rows (about as many as MLIP's own).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from math import factorial, prod
from typing import NamedTuple

import numpy as np

from mtp_driver.mtp.model import MTP

# MLIP's limits: radial functions mu <= 5, moments of rank nu <= 10, at most 4 moments per function
MAX_MU = 5
MAX_NU = 10
MAX_MOMENTS_PER_FUNCTION = 4
MIN_LEVEL, MAX_LEVEL = 2, 28

# A multigraph: the label mu of each vertex and the edge multiplicities of the vertex pairs
# (0,1), (0,2), ..., (n-2,n-1) (the upper triangle, row by row).
Graph = tuple[tuple[int, ...], tuple[int, ...]]

# Intermediate tensors are described by nested tuples, which double as keys for sharing them:
#   ("basic", mu, nu)                          the moment M_{mu,nu}
#   ("pair", (mu1, legs1), (mu2, legs2), shared, by_destination)
#                                              M_{mu1} and M_{mu2} contracted over `shared` index
#                                              pairs; legs[g] = open indices of each in group g
#                                              (weighted groups if by_destination, else by source:
#                                              then each group has the indices of one moment only)
#   ("absorb", blob, mu, pieces)               the first group of `blob` contracted with M_mu;
#                                              pieces[g] = (takes the next group of blob, legs of M_mu)
#   ("dot", by_destination, by_source)         full contraction of two tensors of equal layout
#   ("product", scalar1, scalar2)              a product of two scalars
Tensor = tuple


class Basis(NamedTuple):
    """MLIP's basis tables (the arrays are read-only: the cache shares them)."""

    alpha_index_basic: np.ndarray  # (n_basic, 4): mu, a, b, c
    alpha_index_times: np.ndarray  # (n_times, 4): p, q, mult, k
    alpha_moment_mapping: np.ndarray  # (n_scalars,): moment index of each basis function
    alpha_moments_count: int
    radial_funcs_count: int


# ---------------------------------------------------------------- monomials

@lru_cache(maxsize=None)
def monomials(degree: int) -> np.ndarray:
    """Exponents (a, b, c) with a + b + c = degree in MLIP's order (lexicographically descending)."""
    return np.array([(a, b, degree - a - b) for a in range(degree, -1, -1) for b in range(degree - a, -1, -1)],
                    dtype=np.int64).reshape(-1, 3)


def monomial_count(degree: int) -> int:
    return (degree + 1) * (degree + 2) // 2


def monomial_index(exponents: np.ndarray) -> np.ndarray:
    """Position of each (a, b, c) (last axis) within ``monomials(a + b + c)``."""
    b_plus_c = exponents[..., 1] + exponents[..., 2]
    return b_plus_c * (b_plus_c + 1) // 2 + exponents[..., 2]


_FACTORIALS = np.array([factorial(n) for n in range(MAX_NU + 1)], dtype=np.int64)


def multinomial(exponents: np.ndarray) -> np.ndarray:
    """Number of index sequences with each monomial (last axis): (a+b+c)! / (a! b! c!)."""
    return _FACTORIALS[exponents.sum(axis=-1)] // _FACTORIALS[exponents].prod(axis=-1)


@lru_cache(maxsize=None)
def _choices(degrees: tuple[int, ...]) -> np.ndarray:
    """Every choice of one monomial per degree: shape (n_choices, len(degrees), 3)."""
    grids = np.meshgrid(*(np.arange(monomial_count(d)) for d in degrees), indexing="ij")
    return np.stack([monomials(d)[g.ravel()] for d, g in zip(degrees, grids)], axis=1).reshape(-1, len(degrees), 3)


def _component(group_monomials: np.ndarray, layout: tuple[int, ...]) -> np.ndarray:
    """Index of a tensor component: mixed radix over the monomial index of each group."""
    index = np.zeros(group_monomials.shape[0], dtype=np.int64)
    for g, degree in enumerate(layout):
        index = index * monomial_count(degree) + monomial_index(group_monomials[:, g])
    return index


# ---------------------------------------------------------------- multigraphs

def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _multiplicity(graph: Graph) -> dict[tuple[int, int], int]:
    """Edge multiplicity of each ordered vertex pair, both orders, zero on the diagonal."""
    mus, edges = graph
    between = {(i, i): 0 for i in range(len(mus))}
    for (i, j), m in zip(_pairs(len(mus)), edges):
        between[i, j] = between[j, i] = m
    return between


def _degrees(graph: Graph) -> list[int]:
    mus, edges = graph
    degree = [0] * len(mus)
    for (i, j), m in zip(_pairs(len(mus)), edges):
        degree[i] += m
        degree[j] += m
    return degree


def graph_level(graph: Graph) -> int:
    mus, edges = graph
    return sum(2 + 4 * mu for mu in mus) + 2 * sum(edges)


def _is_connected(graph: Graph) -> bool:
    n, between = len(graph[0]), _multiplicity(graph)
    reached, frontier = {0}, [0]
    while frontier:
        i = frontier.pop()
        for j in range(n):
            if between[i, j] and j not in reached:
                reached.add(j)
                frontier.append(j)
    return len(reached) == n


def _relabel(graph: Graph, order: tuple[int, ...]) -> Graph:
    """The same graph with vertex a of the result being vertex order[a] of the input."""
    between = _multiplicity(graph)
    return tuple(graph[0][v] for v in order), tuple(between[order[a], order[b]] for a, b in _pairs(len(order)))


def _edge_vectors(pair_count: int, max_edges: int):
    """All edge multiplicity vectors of this length with at most max_edges edges in total."""
    if pair_count == 0:
        yield ()
        return
    for first in range(max_edges + 1):
        for rest in _edge_vectors(pair_count - 1, max_edges - first):
            yield (first,) + rest


def _is_canonical(graph: Graph) -> bool:
    """Whether this labelling represents its isomorphism class: vertices sorted by (mu, degree),
    then the least edge vector among the relabellings that keep them sorted."""
    labels = list(zip(graph[0], _degrees(graph)))
    if labels != sorted(labels):
        return False
    n = len(labels)
    return all(
        graph[1] <= _relabel(graph, order)[1]
        for order in itertools.permutations(range(n))
        if all(labels[v] == labels[a] for a, v in enumerate(order))
    )


@lru_cache(maxsize=None)
def connected_graphs(level: int) -> tuple[Graph, ...]:
    """Canonical forms of the connected multigraphs of level <= `level` within MLIP's limits."""
    found = []
    for n in range(1, MAX_MOMENTS_PER_FUNCTION + 1):
        for mus in itertools.combinations_with_replacement(range(MAX_MU + 1), n):
            edge_budget = (level - sum(2 + 4 * mu for mu in mus)) // 2
            if edge_budget < n - 1:
                continue  # too few edges left to connect the moments
            for edges in _edge_vectors(n * (n - 1) // 2, edge_budget):
                graph = (mus, edges)
                if _is_canonical(graph) and max(_degrees(graph)) <= MAX_NU and _is_connected(graph):
                    found.append(graph)
    return tuple(sorted(found, key=lambda g: (graph_level(g), len(g[0]), g)))


@lru_cache(maxsize=None)
def basis_functions(level: int) -> tuple[tuple[Graph, ...], ...]:
    """Every basis function as the tuple of its connected factors, ordered by level."""
    graphs = connected_graphs(level)
    levels = [graph_level(graph) for graph in graphs]
    functions = []

    def extend(factors: tuple[int, ...], level_left: int, moments_left: int):
        if factors:
            functions.append(factors)
        for index in range(factors[-1] if factors else 0, len(graphs)):
            if levels[index] > level_left:
                break  # graphs are sorted by level
            if len(graphs[index][0]) <= moments_left:
                extend(factors + (index,), level_left - levels[index], moments_left - len(graphs[index][0]))

    extend((), level, MAX_MOMENTS_PER_FUNCTION)
    functions.sort(key=lambda f: (sum(levels[i] for i in f), len(f), f))
    return tuple(tuple(graphs[i] for i in f) for f in functions)


# ---------------------------------------------------------------- intermediate tensors

@lru_cache(maxsize=None)
def _layout(tensor: Tensor) -> tuple[int, ...]:
    """Degrees of the index groups of a tensor (scalars: no group)."""
    kind = tensor[0]
    if kind == "basic":
        return (tensor[2],)
    if kind == "pair":
        (_, legs1), (_, legs2) = tensor[1], tensor[2]
        return tuple(a + b for a, b in zip(legs1, legs2))
    if kind == "absorb":
        later = iter(_layout(tensor[1])[1:])
        return tuple((next(later) if takes else 0) + legs for takes, legs in tensor[3])
    return ()


def _size(tensor: Tensor) -> int:
    return prod(monomial_count(d) for d in _layout(tensor))


@lru_cache(maxsize=None)
def _operands(tensor: Tensor) -> tuple[Tensor, ...]:
    kind = tensor[0]
    if kind == "pair":
        (mu1, legs1), (mu2, legs2), shared = tensor[1:4]
        return ("basic", mu1, shared + sum(legs1)), ("basic", mu2, shared + sum(legs2))
    if kind == "absorb":
        blob, mu, pieces = tensor[1:]
        return blob, ("basic", mu, _layout(blob)[0] + sum(legs for _, legs in pieces))
    if kind in ("dot", "product"):
        return tensor[1], tensor[2]
    return ()


def _terms(tensor: Tensor, start1: int, start2: int) -> tuple[np.ndarray, ...]:
    """Product terms (p, q, mult, component) of a tensor whose operands start at start1, start2."""
    kind = tensor[0]
    if kind == "pair":
        (_, legs1), (_, legs2), shared, by_destination = tensor[1:]
        groups = len(legs1)
        choice = _choices((shared,) + legs1 + legs2)
        contracted, open1, open2 = choice[:, 0], choice[:, 1 : 1 + groups], choice[:, 1 + groups :]
        p = start1 + monomial_index(contracted + open1.sum(axis=1))
        q = start2 + monomial_index(contracted + open2.sum(axis=1))
        mult = multinomial(contracted)
        if by_destination:
            mult = mult * multinomial(open1).prod(axis=1) * multinomial(open2).prod(axis=1)
        return p, q, mult, _component(open1 + open2, _layout(tensor))
    if kind == "absorb":
        blob, _, pieces = tensor[1:]
        blob_layout = _layout(blob)
        own_legs = tuple(legs for _, legs in pieces)
        choice = _choices(blob_layout + own_legs)
        blob_part, own = choice[:, : len(blob_layout)], choice[:, len(blob_layout) :]
        # the blob's open groups land in the output groups that take them
        into = np.zeros_like(own)
        into[:, [g for g, (takes, _) in enumerate(pieces) if takes]] = blob_part[:, 1:]
        p = start1 + _component(blob_part, blob_layout)
        q = start2 + monomial_index(blob_part[:, 0] + own.sum(axis=1))
        return p, q, multinomial(own).prod(axis=1), _component(into + own, _layout(tensor))
    if kind == "dot":
        component = np.arange(_size(tensor[1]))
        return start1 + component, start2 + component, np.ones_like(component), np.zeros_like(component)
    return np.array([start1]), np.array([start2]), np.array([1]), np.array([0])


def _merged_rows(p, q, mult, component) -> np.ndarray:
    """Rows (p, q, mult, component) with equal products of one component summed, sorted."""
    p, q = np.minimum(p, q), np.maximum(p, q)
    span = int(q.max()) + 1
    keys, inverse = np.unique((component * span + p) * span + q, return_inverse=True)
    total = np.bincount(inverse.ravel(), weights=mult).astype(np.int64)  # exact: sums far below 2**53
    return np.stack([keys // span % span, keys % span, total, keys // (span * span)], axis=1)


@lru_cache(maxsize=None)
def _row_estimate(tensor: Tensor) -> int:
    """Rows computing a tensor from its operands, to compare plans: the number of product terms,
    halved when both factors come from one moment (M_p M_q and M_q M_p merge). Exact except
    for a few pairs whose terms merge further."""
    kind = tensor[0]
    if kind == "absorb":
        blob, _, pieces = tensor[1:]
        return _size(blob) * prod(monomial_count(legs) for _, legs in pieces)
    if kind == "dot":
        return _size(tensor[1])
    if kind == "product":
        return 1
    (_, legs1), (_, legs2), shared = tensor[1], tensor[2], tensor[3]
    terms = monomial_count(shared) * prod(monomial_count(a) * monomial_count(b) for a, b in zip(legs1, legs2))
    first, second = _operands(tensor)
    return terms // 2 if first == second else terms


class _TableBuilder:
    """Places tensors in the moment array and collects their rows, each distinct tensor once."""

    def __init__(self, basic_tensors: list[tuple[int, int]]):
        self.start: dict[Tensor, int] = {}
        self.moments_count = 0
        basic_rows = []
        for mu, nu in basic_tensors:
            self.start["basic", mu, nu] = self.moments_count
            self.moments_count += monomial_count(nu)
            basic_rows.append(np.column_stack([np.full(monomial_count(nu), mu), monomials(nu)]))
        self.alpha_index_basic = np.concatenate(basic_rows).astype(np.int64)
        self.rows: list[np.ndarray] = []

    def build(self, tensor: Tensor) -> int:
        """Index of the first component of `tensor`, building it and its operands if new."""
        if tensor not in self.start:
            first, second = (self.build(operand) for operand in _operands(tensor))
            rows = _merged_rows(*_terms(tensor, first, second))
            rows[:, 3] += self.moments_count
            self.rows.append(rows)
            self.start[tensor] = self.moments_count
            self.moments_count += _size(tensor)
        return self.start[tensor]


# ---------------------------------------------------------------- contraction plans

# A plan is the final tensor of a graph; the vertices' labels `mus` and the edge multiplicities
# `between[v, w]` of the graph describe it.

def _pair(mus, between, first: int, second: int, groups: list[int]) -> Tensor:
    """Moments `first` and `second` contracted; their open indices grouped by destination vertex."""
    legs = [tuple(between[v, w] for w in groups) for v in (first, second)]
    kept = [g for g in range(len(groups)) if legs[0][g] or legs[1][g]]
    ends = sorted((mus[v], tuple(legs[i][g] for g in kept)) for i, v in enumerate((first, second)))
    return ("pair", ends[0], ends[1], between[first, second], True)


def _chain(mus, between, order: tuple[int, ...]) -> Tensor:
    """Contract the first two moments of `order`, then absorb the others one by one."""
    blob = _pair(mus, between, order[0], order[1], order[2:])
    blob_groups = [w for w in order[2:] if between[order[0], w] + between[order[1], w]]
    for position in range(2, len(order)):
        v, later = order[position], order[position + 1 :]
        pieces = tuple((w in blob_groups, between[v, w]) for w in later if w in blob_groups or between[v, w])
        blob = ("absorb", blob, mus[v], pieces)
        blob_groups = [w for w in later if w in blob_groups or between[v, w]]
    return blob


def _split(mus, between, first_pair: tuple[int, int], second_pair: tuple[int, int]) -> Tensor:
    """Two pairs contracted separately, the first by destination, the second by source, then together."""
    by_destination = _pair(mus, between, *first_pair, second_pair)
    legs = [sum(between[v, w] for w in first_pair) for v in second_pair]
    kept = [g for g in range(2) if legs[g]]
    ends = sorted((mus[v], tuple(legs[g] if g == i else 0 for g in kept)) for i, v in enumerate(second_pair))
    by_source = ("pair", ends[0], ends[1], between[second_pair], False)
    return ("dot", by_destination, by_source)


def _plans(graph: Graph) -> list[Tensor]:
    """Ways to evaluate a connected graph: chains in every order, and for 4 moments pair splits."""
    mus, n = graph[0], len(graph[0])
    if n == 1:
        return [("basic", mus[0], 0)]
    between = _multiplicity(graph)
    plans = [
        _chain(mus, between, order)
        for order in itertools.permutations(range(n))
        if order[0] < order[1] and all(any(between[v, w] for w in order[:i]) for i, v in enumerate(order) if i >= 2)
    ]
    if n == 4:
        plans += [_split(mus, between, (a, b), (c, d)) for a, b, c, d in itertools.permutations(range(4)) if a < b]
    return list(dict.fromkeys(plans))


# ---------------------------------------------------------------- the basis

@lru_cache(maxsize=None)
def _intermediates(tensor: Tensor) -> frozenset[Tensor]:
    """The tensors (basic moments excepted) that computing `tensor` needs, itself included."""
    if tensor[0] == "basic":
        return frozenset()
    return frozenset([tensor]).union(*map(_intermediates, _operands(tensor)))


def _choose_plans(graphs: tuple[Graph, ...]) -> dict[Graph, Tensor]:
    """A plan per graph making the total number of rows small, with intermediates shared.

    Greedy first (highest levels first), then each graph in turn switches to its cheapest plan
    given the others' choices, until no switch helps (the total strictly decreases).
    """
    tensor_ids: dict[Tensor, int] = {}  # small integers: cheaper to look up than nested tuples
    options = {}  # per graph: (plan, [(id, rows) of each tensor the plan needs])
    for graph in graphs:
        options[graph] = [
            (plan, [(tensor_ids.setdefault(t, len(tensor_ids)), _row_estimate(t)) for t in _intermediates(plan)])
            for plan in _plans(graph)
        ]
    users = [0] * len(tensor_ids)  # number of chosen plans needing each tensor

    def extra_rows(option) -> int:
        return sum(rows for tensor, rows in option[1] if not users[tensor])

    def use(option, change: int):
        for tensor, _ in option[1]:
            users[tensor] += change

    chosen = {}
    for graph in sorted(graphs, key=lambda g: (-graph_level(g), len(g[0]), g)):
        chosen[graph] = min(options[graph], key=extra_rows)
        use(chosen[graph], +1)
    improved = True
    while improved:
        improved = False
        for graph in graphs:
            use(chosen[graph], -1)
            best = min(options[graph], key=extra_rows)
            if extra_rows(best) < extra_rows(chosen[graph]):
                chosen[graph], improved = best, True
            use(chosen[graph], +1)
    return {graph: plan for graph, (plan, _) in chosen.items()}


@lru_cache(maxsize=None)
def generate_basis(level: int) -> Basis:
    """MLIP-compatible basis tables of an even level 2..28 (single species)."""
    if level % 2 or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"MTP level must be even and in [{MIN_LEVEL}, {MAX_LEVEL}], got {level}")
    graphs = connected_graphs(level)
    basic_tensors = sorted({(mu, nu) for graph in graphs for mu, nu in zip(graph[0], _degrees(graph))})
    builder = _TableBuilder(basic_tensors)

    scalar_of = _choose_plans(graphs)

    def product(factors: tuple[Graph, ...]) -> Tensor:
        if len(factors) == 1:
            return scalar_of[factors[0]]
        return ("product", product(factors[:-1]), scalar_of[factors[-1]])

    mapping = np.array([builder.build(product(factors)) for factors in basis_functions(level)], dtype=np.int64)
    times = np.concatenate(builder.rows) if builder.rows else np.zeros((0, 4), dtype=np.int64)
    tables = (builder.alpha_index_basic, times.astype(np.int64), mapping)
    for table in tables:
        table.flags.writeable = False
    return Basis(*tables, alpha_moments_count=builder.moments_count,
                 radial_funcs_count=1 + max(mu for mu, _ in basic_tensors))


def untrained_mtp(
    level: int,
    species_count: int,
    min_dist: float,
    max_dist: float,
    radial_basis_size: int = 8,
    species=None,
) -> MTP:
    """An untrained MTP of the given level: basis tables only, no radial, species or moment coefficients."""
    basis = generate_basis(level)
    mtp = MTP(
        species_count=species_count,
        min_dist=float(min_dist),
        max_dist=float(max_dist),
        radial_basis_size=radial_basis_size,
        radial_funcs_count=basis.radial_funcs_count,
        alpha_moments_count=basis.alpha_moments_count,
        alpha_index_basic=basis.alpha_index_basic.copy(),
        alpha_index_times=basis.alpha_index_times.copy(),
        alpha_moment_mapping=basis.alpha_moment_mapping.copy(),
        species=species,
        level=level,
    )
    mtp.validate()
    return mtp
