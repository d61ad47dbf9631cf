"""The structure a neighbour list is asked for, checked before vesin sees it.

One bad request must harm nothing else: vesin divides by zero (SIGFPE: the process dies, with every
walker a learner server was serving) on a cell of 1e7 Å or a very elongated one, and searches for
ever, or until memory runs out, in a flat one. `check_geometry` refuses such structures with a
message that says what is wrong. It costs two reductions over the positions and arithmetic on the
cell: 30 µs for 32 atoms, 0.2 ms for 131072, under 1 % of the search.
"""

from __future__ import annotations

import math

import numpy as np

# Å (10 µm): no structure an MTP simulates is this large, and far beyond it vesin's grid arithmetic breaks
MAX_LENGTH = 1e5
# periodic images a cutoff sphere reaches (product of ceil(cutoff / height)): 125 for one-atom fcc at 10 Å
MAX_IMAGES = 1e4
# atom pairs and cell pairs vesin examines, ~3e8 a second (and pairs kept <= this): 4e7 for 131072 Cu atoms at 5 Å
MAX_VISITS = 1e9
# vesin's MAX_NUMBER_OF_CELLS (cpu_cell_list.cpp): above it vesin rescales its grid, to 0 cells if elongated
VESIN_MAX_CELLS = 1e5
AXES = "abc"


class UnphysicalCell(ValueError):
    """A cell or positions no neighbour list is built for (non-finite, huge, flat, atoms absurdly far)."""


def check_geometry(positions: np.ndarray, cell: np.ndarray, periodic: np.ndarray, cutoff: float) -> None:
    """Raise `UnphysicalCell` unless the pairs of `positions` (N, 3) within `cutoff` in `cell` (3, 3),
    periodic along `periodic` (3 bools; the other rows are ignored), can be listed in bounded time and memory."""
    periodic = np.asarray(periodic, dtype=bool).tolist()
    vectors = [tuple(row) if p else None for row, p in zip(cell.tolist(), periodic)]
    for i, vector in enumerate(vectors):
        if vector is not None and not _norm(vector) <= MAX_LENGTH:  # NaN and inf too
            raise UnphysicalCell(
                f"cell vector {AXES[i]} is {list(vector)}, {_norm(vector):.4g} Å long, longer than the "
                f"{MAX_LENGTH:.0e} Å a cell may have: the cell is not in Å, or the simulation blew up (barostat)"
                if all(math.isfinite(x) for x in vector) else
                f"cell vector {AXES[i]} is not finite: {list(vector)}; the simulation blew up (barostat, or the "
                "potential's previous stress)")
    _check_positions(positions)
    heights = _heights(vectors)
    _check_flatness(vectors, heights, cutoff)
    extents = [h if p else _spread(positions, i) for i, (h, p) in enumerate(zip(heights, periodic))]
    _check_search(len(positions), extents, periodic, cutoff)


def _check_positions(positions: np.ndarray) -> None:
    # NaN propagates through min and max: two passes find everything
    if len(positions) and not (positions.min() >= -MAX_LENGTH and positions.max() <= MAX_LENGTH):
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        if len(bad):
            raise UnphysicalCell(f"non-finite positions for atoms {bad[:10].tolist()}" + (" ..." if len(bad) > 10 else "")
                                 + ": the simulation blew up before this structure")
        far = int(np.argmax(np.abs(positions).max(axis=1)))
        raise UnphysicalCell(f"atom {far} is at {positions[far].tolist()} Å, a coordinate beyond ±{MAX_LENGTH:.0e} Å: "
                             "positions absurdly far outside the cell (the simulation blew up?)")


def _spread(positions: np.ndarray, axis: int) -> float:
    """What vesin takes as the box along an open direction: the atoms' spread along that axis (+1 %, >= 1 Å)."""
    column = positions[:, axis]  # a strided column reduces faster than positions.min(axis=0)
    return max(1.01 * float(column.max() - column.min()), 1.0) if len(column) else 1.0


def _heights(vectors: list) -> list[float]:
    """Distance between the faces of the periodic lattice along each periodic vector (0 if degenerate)."""
    present = [v for v in vectors if v is not None]
    if len(present) == 3:
        a, b, c = present
        faces = [_norm(_cross(b, c)), _norm(_cross(c, a)), _norm(_cross(a, b))]
        volume = abs(_dot(a, _cross(b, c)))
        spans = [volume / face if face > 0.0 else 0.0 for face in faces]
    elif len(present) == 2:
        area = _norm(_cross(*present))
        spans = [area / _norm(present[1]) if area else 0.0, area / _norm(present[0]) if area else 0.0]
    else:
        spans = [_norm(v) for v in present]
    spans = iter(spans)
    return [next(spans) if v is not None else 0.0 for v in vectors]


def _check_flatness(vectors, heights, cutoff) -> None:
    periodic = [i for i, v in enumerate(vectors) if v is not None]
    images = math.prod(math.ceil(cutoff / heights[i]) if heights[i] > 0.0 else math.inf for i in periodic)
    if images > MAX_IMAGES:
        i = min(periodic, key=lambda k: heights[k])
        count = "infinitely many" if math.isinf(images) else f"{images:.3g}"
        raise UnphysicalCell(
            f"the cell is flat: vector {AXES[i]} ({_norm(vectors[i]):.3g} Å long) spans a height of {heights[i]:.3g} Å "
            f"between the cell faces, so a {cutoff:g} Å cutoff reaches {count} periodic images of the cell, more "
            f"than {MAX_IMAGES:.0e}: give a non-degenerate cell (a reduced one: ase.geometry.minkowski_reduce)")


def _check_search(natoms: int, extents: list, periodic: list, cutoff: float) -> None:
    cells = _vesin_grid(extents, cutoff)
    if min(cells) < 1:
        raise UnphysicalCell(
            f"the structure is too elongated for the neighbour list: {_describe(extents, periodic)} at a {cutoff:g} Å "
            "cutoff leave vesin's cell grid without cells (it would divide by zero): make the box less elongated, "
            f"thicker along {_name(extents.index(min(extents)), periodic)} or shorter along the others")
    search = [max(math.ceil(cutoff * n / e), 1) for n, e in zip(cells, extents)]
    if any(periodic) and not all(periodic):  # vesin then searches every cell along the open directions
        search = [s if p else max(s, n - 1) for s, p, n in zip(search, periodic, cells)]
    total = math.prod(cells)
    visits = math.prod(2 * s + 1 for s in search) * (total + natoms**2 / total)
    if visits > MAX_VISITS:
        raise UnphysicalCell(
            f"listing the neighbours of {natoms} atoms in {_describe(extents, periodic)} within {cutoff:g} Å would "
            f"examine ~{visits:.2g} pairs, more than {MAX_VISITS:.0e}: the structure has collapsed, or atoms "
            "flew far apart along an open direction")


def _vesin_grid(extents: list, cutoff: float) -> list[float]:
    """vesin's cell counts along a, b, c (cpu_cell_list.cpp, CellList::CellList)."""
    cells = [max(math.trunc(e / cutoff), 1.0) for e in extents]
    if math.prod(cells) > VESIN_MAX_CELLS:
        ratio_xy, ratio_yz = cells[0] / cells[1], cells[1] / cells[2]
        z = math.trunc(np.cbrt(VESIN_MAX_CELLS / (ratio_xy * ratio_yz * ratio_yz)))  # C's cbrt, as vesin
        y = math.trunc(ratio_yz * z)
        cells = [math.trunc(ratio_xy * y), y, z]
    return cells


def _describe(extents, periodic) -> str:
    return "a box of " + ", ".join(f"{_name(i, periodic)} {e:.4g} Å" for i, e in enumerate(extents))


def _name(i: int, periodic) -> str:
    return f"height {AXES[i]}" if periodic[i] else f"atoms' spread along {'xyz'[i]}"


def cell_volume(cell) -> float:
    """|det(cell)| in Å^3 as a triple product: np.linalg.det would wake LAPACK's threads (spinning on the
    cores the kernels use) on every force call."""
    return abs(_dot(cell[0], _cross(cell[1], cell[2])))


def _cross(u, v) -> tuple:
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


def _dot(u, v) -> float:
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]


def _norm(u) -> float:
    return math.sqrt(_dot(u, u))
