"""MLIP's `.mtp` potential files (format version 1.1.0, read by MLIP-2 and MLIP-3).

Layout, one ``key = value`` per line, in this order (``[...]`` = optional)::

    MTP
    version = 1.1.0
    [potential_name = MTP1m]          one word: MLIP reads it with ``>>``
    [scaling = 0.0409]                multiplies every radial basis function
    species_count = 1
    [potential_tag = ...]             MLIP skips the rest of this line
    radial_basis_type = RBChebyshev
        [scaling = ...]               MLIP folds it into the scaling above
        min_dist = 2.0                Å
        max_dist = 5.0                Å (the cutoff)
        radial_basis_size = 8
        radial_funcs_count = 4
        [radial_coeffs                absent in untrained files
            0-0                       central type - neighbour type, in row-major order
                {c_0, ..., c_7}       one row per radial function
            0-1 ...]
    alpha_moments_count = 350
    alpha_index_basic_count = 130
    alpha_index_basic = {{mu, i, j, l}, ...}
    alpha_index_times_count = 969
    alpha_index_times = {{p, q, multiplicity, k}, ...}
    alpha_scalar_moments = 92
    alpha_moment_mapping = {0, 84, ...}
    [species_coeffs = {e_0, ...}      eV, one per type; absent in untrained files
    moment_coeffs = {x_0, ...}]       eV, one per scalar basis function
    [species_symbols = {Nb, Mo}]      ours: the chemical symbol of each type

What MLIP's reader accepts (MLIP-2 ``MLMTPR::Load`` in ``dev_src/mtpr.cpp``, MLIP-3 in
``src/mtpr.cpp``): the lines above in this order; values follow ``key`` after exactly `` = ``
(it skips two or four characters blindly, so the writer keeps that spacing); the labels of
``radial_coeffs`` blocks are read by MLIP-3 as type numbers; it stops reading after
``moment_coeffs``, or after ``alpha_moment_mapping`` when ``species_coeffs`` does not follow.
That last point is why ``species_symbols`` goes at the very end: MLIP-2 and MLIP-3 ignore it.
They refuse a file whose largest radial function index in ``alpha_index_basic`` is not
``radial_funcs_count - 1``; this reader refuses it too, with the line.

Declared sizes above the ``MAX_*`` limits below are refused at their line before anything of that
size is allocated, so a damaged file fails at once instead of exhausting memory in the reader or
the kernels.

Numbers are written with ``repr``, the shortest text that reads back to the same double, so
``read_mtp(write_mtp(mtp))`` reproduces every array bit for bit.
"""

from __future__ import annotations

import io
import math
import os
from typing import NamedTuple

import numpy as np

from mtp_driver.io.atomic import atomic_write
from mtp_driver.io.lines import LineCursor, shortened
from mtp_driver.io.species import checked_species
from mtp_driver.mtp.model import MTP

SUPPORTED_VERSION = "1.1.0"
SUPPORTED_RADIAL_BASIS = "RBChebyshev"

# Limits on declared sizes, with a wide margin over real potentials (a larger basis needs a change here).
MAX_SPECIES = 128  # one type per chemical element, and there are 118
MAX_RADIAL_BASIS_SIZE = 64  # MLIP's default, `mtp-driver init`'s and every file in shared/data: 8
MAX_RADIAL_FUNCS = 32  # MLIP's bases of levels 2..28 use at most 6
MAX_MOMENTS = 100_000  # the level-28 basis (the largest of MLIP and `mtp-driver init`) has 15,992
MAX_BASIC_MOMENTS = 10_000  # the level-28 basis has 866
MAX_PRODUCTS = 1_000_000  # the level-28 basis has 181,327 rows in alpha_index_times
MAX_MONOMIAL_DEGREE = 20  # MLIP's bases use moments of rank at most 10


class _Limit(NamedTuple):
    value: int
    constant: str  # the name of the constant, for the message
    real: str  # what real potentials have

    def exceeded(self, what: str, found: int) -> str:
        return (f"{what} = {found} exceeds the limit of {self.value} ({self.real}); if a genuine potential is "
                f"this large, raise {self.constant} in mtp_driver/io/mtp_file.py")


_LIMITS = {
    "species_count": _Limit(MAX_SPECIES, "MAX_SPECIES", "a real potential has at most one type per chemical element, 118"),
    "radial_basis_size": _Limit(MAX_RADIAL_BASIS_SIZE, "MAX_RADIAL_BASIS_SIZE", "real potentials use 8 or so"),
    "radial_funcs_count": _Limit(MAX_RADIAL_FUNCS, "MAX_RADIAL_FUNCS", "MLIP's bases up to level 28 use at most 6"),
    "alpha_moments_count": _Limit(MAX_MOMENTS, "MAX_MOMENTS", "a level-28 potential, the largest MLIP ships, has 15992"),
    "alpha_index_basic_count": _Limit(MAX_BASIC_MOMENTS, "MAX_BASIC_MOMENTS", "a level-28 potential has 866"),
    "alpha_index_times_count": _Limit(MAX_PRODUCTS, "MAX_PRODUCTS", "a level-28 potential has 181327"),
    "monomial degree": _Limit(MAX_MONOMIAL_DEGREE, "MAX_MONOMIAL_DEGREE", "MLIP's bases use degrees up to 10"),
}

_BRACES_AND_COMMAS_TO_SPACES = str.maketrans("{},", "   ")


def read_mtp(path: str | os.PathLike) -> MTP:
    """Read an MLIP `.mtp` file; raise MLIPFormatError (file and line) if it is malformed."""
    with open(path, encoding="utf-8") as stream:
        return _MTPReader(LineCursor(path, stream)).read()


def parse_mtp(text: str, source: str = "<text>") -> MTP:
    """An MLIP `.mtp` file's content (`format_mtp`'s output) as an MTP; `source` names it in errors."""
    return _MTPReader(LineCursor(source, io.StringIO(text))).read()


def write_mtp(mtp: MTP, path: str | os.PathLike) -> None:
    """Write ``mtp`` as an MLIP `.mtp` file that MLIP-2 and MLIP-3 can read, atomically.

    Raises ValueError for a model that MLIP could not read back (see ``check_writable``).
    """
    check_writable(mtp)
    with atomic_write(path) as stream:
        stream.write(format_mtp(mtp))


def check_writable(mtp: MTP) -> None:
    """Raise ValueError unless ``mtp`` is consistent and expressible in a file MLIP reads."""
    mtp.validate()
    if mtp.version != SUPPORTED_VERSION:
        raise ValueError(f"MLIP reads only version {SUPPORTED_VERSION} .mtp files, not {mtp.version!r}")
    if mtp.radial_basis_type != SUPPORTED_RADIAL_BASIS:
        raise ValueError(f"only radial_basis_type {SUPPORTED_RADIAL_BASIS} is supported, not {mtp.radial_basis_type!r}")
    if len(mtp.potential_name.split()) != 1:
        raise ValueError(f"potential_name must be one word (MLIP reads one), got {mtp.potential_name!r}")
    if "\n" in mtp.potential_tag or "\r" in mtp.potential_tag:
        raise ValueError(f"potential_tag must be one line, got {mtp.potential_tag!r}")
    if (mtp.species_coeffs is None) != (mtp.moment_coeffs is None):
        raise ValueError("species_coeffs and moment_coeffs must be given together (MLIP reads both or neither)")
    if len(mtp.alpha_index_basic) and mtp.alpha_index_basic[:, 0].max() != mtp.radial_funcs_count - 1:
        raise ValueError(
            f"radial_funcs_count = {mtp.radial_funcs_count} but alpha_index_basic uses radial functions "
            f"up to {mtp.alpha_index_basic[:, 0].max()}; MLIP requires the largest to be radial_funcs_count - 1"
        )
    if mtp.species is not None:
        checked_species(mtp.species)
    basic, times = mtp.alpha_index_basic, mtp.alpha_index_times
    sizes = {"species_count": mtp.species_count, "radial_basis_size": mtp.radial_basis_size,
             "radial_funcs_count": mtp.radial_funcs_count, "alpha_moments_count": mtp.alpha_moments_count,
             "alpha_index_basic_count": len(basic), "alpha_index_times_count": len(times),
             "monomial degree": int(basic[:, 1:].sum(axis=1).max(initial=0))}
    for what, size in sizes.items():
        limit = _LIMITS[what]
        if size > limit.value:
            raise ValueError(f"read_mtp would refuse this model: {limit.exceeded(what, size)}")
    for name in ("scaling", "min_dist", "max_dist", "radial_coeffs", "species_coeffs", "moment_coeffs"):
        value = getattr(mtp, name)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or infinity, which MLIP cannot read")


def format_mtp(mtp: MTP) -> str:
    """The text of ``mtp`` in MLIP's layout, with every float written by ``repr``."""
    lines = ["MTP", f"version = {mtp.version}", f"potential_name = {mtp.potential_name}"]
    if mtp.scaling != 1.0:
        lines.append(f"scaling = {_float_text(mtp.scaling)}")
    lines += [
        f"species_count = {mtp.species_count}",
        f"potential_tag = {mtp.potential_tag}",
        f"radial_basis_type = {mtp.radial_basis_type}",
        f"\tmin_dist = {_float_text(mtp.min_dist)}",
        f"\tmax_dist = {_float_text(mtp.max_dist)}",
        f"\tradial_basis_size = {mtp.radial_basis_size}",
        f"\tradial_funcs_count = {mtp.radial_funcs_count}",
    ]
    if mtp.radial_coeffs is not None:
        lines.append("\tradial_coeffs")
        for central in range(mtp.species_count):
            for neighbour in range(mtp.species_count):
                lines.append(f"\t\t{central}-{neighbour}")
                lines += [f"\t\t\t{_float_list_text(row)}" for row in mtp.radial_coeffs[central, neighbour]]
    lines += [
        f"alpha_moments_count = {mtp.alpha_moments_count}",
        f"alpha_index_basic_count = {len(mtp.alpha_index_basic)}",
        f"alpha_index_basic = {_int_table_text(mtp.alpha_index_basic)}",
        f"alpha_index_times_count = {len(mtp.alpha_index_times)}",
        f"alpha_index_times = {_int_table_text(mtp.alpha_index_times)}",
        f"alpha_scalar_moments = {mtp.alpha_scalar_moments}",
        f"alpha_moment_mapping = {{{', '.join(map(str, mtp.alpha_moment_mapping.tolist()))}}}",
    ]
    if mtp.species_coeffs is not None:
        lines.append(f"species_coeffs = {_float_list_text(mtp.species_coeffs)}")
        lines.append(f"moment_coeffs = {_float_list_text(mtp.moment_coeffs)}")
    if mtp.species is not None:
        lines.append(f"species_symbols = {{{', '.join(mtp.species)}}}")
    return "\n".join(lines) + "\n"


def _float_text(value: float) -> str:
    return repr(float(value))


def _float_list_text(values: np.ndarray) -> str:
    return "{" + ", ".join(map(repr, values.tolist())) + "}"


def _int_table_text(table: np.ndarray) -> str:
    return "{" + ", ".join("{%d, %d, %d, %d}" % tuple(row) for row in table.tolist()) + "}"


class _MTPReader:
    """Reads the sections of one `.mtp` file in order, checking counts and index ranges."""

    def __init__(self, lines: LineCursor):
        self.lines = lines

    def read(self) -> MTP:
        lines = self.lines
        number, text = lines.next("'MTP' on the first line")
        if text != "MTP":
            raise lines.error(number, f"expected 'MTP', got {text!r}: not an MLIP .mtp file")
        number, version = self.value("version")
        if version != SUPPORTED_VERSION:
            raise lines.error(number, f"MLIP reads only version {SUPPORTED_VERSION}, got {version!r}")
        fields: dict = {"version": version}  # text fields absent from the file keep the MTP defaults
        if self.next_key() == "potential_name":
            number, name = self.value("potential_name")
            if len(name.split()) != 1:
                raise lines.error(number, f"potential_name must be one word, got {name!r}")
            fields["potential_name"] = name
        scaling = self.optional_float("scaling")
        species_count = self.positive_int("species_count")
        if self.next_key() == "potential_tag":
            fields["potential_tag"] = self.value("potential_tag")[1]
        number, radial_basis_type = self.value("radial_basis_type")
        if radial_basis_type != SUPPORTED_RADIAL_BASIS:
            raise lines.error(number, f"only radial_basis_type = {SUPPORTED_RADIAL_BASIS} is supported, got {radial_basis_type!r}")
        # MLIP multiplies a scaling inside the radial basis block into the global one.
        scaling *= self.optional_float("scaling")
        min_dist = self.float_value("min_dist")
        max_dist = self.float_value("max_dist")
        if not 0 <= min_dist < max_dist:
            raise lines.error(lines.line, f"need 0 <= min_dist < max_dist, got {min_dist} and {max_dist}")
        radial_basis_size = self.positive_int("radial_basis_size")
        radial_funcs_count = self.positive_int("radial_funcs_count")
        radial_coeffs = None
        if self.next_key() == "radial_coeffs":
            radial_coeffs = self.radial_coeffs(species_count, radial_funcs_count, radial_basis_size)
        alpha_moments_count = self.positive_int("alpha_moments_count")
        n_basic = self.count_value("alpha_index_basic_count")
        self.check_within_moments("alpha_index_basic_count", n_basic, alpha_moments_count,
                                  "the basic moments are the first of the moments")
        alpha_index_basic = self.index_table("alpha_index_basic", n_basic)
        self.check_basic(alpha_index_basic, radial_funcs_count)
        alpha_index_times = self.index_table("alpha_index_times", self.count_value("alpha_index_times_count"))
        self.check_times(alpha_index_times, alpha_moments_count, n_basic)
        n_scalar = self.count_value("alpha_scalar_moments")
        self.check_within_moments("alpha_scalar_moments", n_scalar, alpha_moments_count,
                                  "each scalar basis function is a different moment")
        number, text = self.value("alpha_moment_mapping")
        mapping = self.numbers(number, text, "alpha_moment_mapping", (n_scalar,), int)
        self.check_range(number, mapping, alpha_moments_count, "alpha_moment_mapping", "alpha_moments_count")
        species_coeffs = moment_coeffs = None
        if self.next_key() == "species_coeffs":
            species_coeffs = self.float_list("species_coeffs", species_count)
            moment_coeffs = self.float_list("moment_coeffs", n_scalar)
        species = None
        if self.next_key() == "species_symbols":
            species = self.species_symbols(species_count)
        if lines.peek() is not None:
            number, text = lines.next("")
            raise lines.error(number, f"unexpected line at the end of the potential: {text!r}")
        return MTP(
            species_count=species_count,
            min_dist=min_dist,
            max_dist=max_dist,
            radial_basis_size=radial_basis_size,
            radial_funcs_count=radial_funcs_count,
            alpha_moments_count=alpha_moments_count,
            alpha_index_basic=alpha_index_basic,
            alpha_index_times=alpha_index_times,
            alpha_moment_mapping=mapping,
            radial_coeffs=radial_coeffs,
            species_coeffs=species_coeffs,
            moment_coeffs=moment_coeffs,
            scaling=scaling,
            species=species,
            **fields,
        )

    # --- one line ---------------------------------------------------------------------------

    def next_key(self) -> str | None:
        """The key of the next line, without consuming it."""
        text = self.lines.peek()
        return None if text is None else text.partition("=")[0].strip()

    def value(self, key: str) -> tuple[int, str]:
        """Line number and value of the next line, which must read ``key = value``."""
        number, text = self.lines.next(f"'{key} = ...'")
        found_key, equals, value = text.partition("=")
        if found_key.strip() != key or not equals:
            raise self.lines.error(number, f"expected '{key} = ...', got {text!r}")
        return number, value.strip()

    def float_value(self, key: str) -> float:
        number, text = self.value(key)
        return self.lines.to_float(text, number, key)

    def optional_float(self, key: str) -> float:
        return self.float_value(key) if self.next_key() == key else 1.0

    def count_value(self, key: str) -> int:
        """A non-negative integer, within its limit in ``_LIMITS`` if it has one."""
        number, text = self.value(key)
        count = self.lines.to_int(text, number, key)
        if count < 0:
            raise self.lines.error(number, f"{key} must not be negative, got {count}")
        limit = _LIMITS.get(key)
        if limit is not None and count > limit.value:
            raise self.lines.error(number, limit.exceeded(key, count))
        return count

    def positive_int(self, key: str) -> int:
        count = self.count_value(key)
        if count == 0:
            raise self.lines.error(self.lines.line, f"{key} must be positive, got 0")
        return count

    # --- lists in braces --------------------------------------------------------------------

    def numbers(self, number: int, text: str, what: str, shape: tuple[int, ...], kind: type) -> np.ndarray:
        """The numbers of a brace list ``{a, b}`` (shape (n,)) or ``{{a, b}, {c, d}}`` (shape (n, m))."""
        if not (text.startswith("{") and text.endswith("}")):
            raise self.lines.error(number, f"expected {what} in braces {{...}}, got {shortened(text)}")
        if text.count("{") != text.count("}"):
            raise self.lines.error(number, f"unbalanced braces in {what}")
        if len(shape) == 2 and text.count("{") - 1 != shape[0]:
            raise self.lines.error(number, f"expected {shape[0]} entries {{...}} in {what}, got {text.count('{') - 1}")
        if len(shape) == 1 and text.count("{") != 1:
            raise self.lines.error(number, f"expected a flat list of numbers in {what}, got nested braces")
        tokens = text.translate(_BRACES_AND_COMMAS_TO_SPACES).split()
        expected = math.prod(shape)
        if len(tokens) != expected:
            per_group = f" ({shape[1]} per entry)" if len(shape) == 2 else ""
            raise self.lines.error(number, f"expected {expected} numbers{per_group} in {what}, got {len(tokens)}")
        return self.lines.to_array(tokens, kind, what, lambda _: number).reshape(shape)

    def index_table(self, key: str, count: int) -> np.ndarray:
        """The ``key = {{...}, ...}`` line of ``count`` entries, as a (count, 4) array."""
        number, text = self.value(key)
        return self.numbers(number, text, key, (count, 4), int)

    def float_list(self, key: str, count: int) -> np.ndarray:
        number, text = self.value(key)
        return self.numbers(number, text, key, (count,), float)

    def radial_coeffs(self, species_count: int, radial_funcs_count: int, radial_basis_size: int) -> np.ndarray:
        lines = self.lines
        lines.next("radial_coeffs")
        rows = []  # not preallocated: memory grows only with the rows the file really holds
        for central in range(species_count):
            for neighbour in range(species_count):
                label = f"{central}-{neighbour}"
                number, text = lines.next(f"the radial_coeffs block '{label}'")
                if text != label:
                    raise lines.error(number, f"expected the radial_coeffs block '{label}', got {shortened(text)}")
                for mu in range(radial_funcs_count):
                    what = f"radial function {mu} of block {label} ({radial_basis_size} coefficients)"
                    number, text = lines.next(what)
                    rows.append(self.numbers(number, text, what, (radial_basis_size,), float))
        return np.array(rows).reshape(species_count, species_count, radial_funcs_count, radial_basis_size)

    def species_symbols(self, species_count: int) -> tuple[str, ...]:
        number, text = self.value("species_symbols")
        if not (text.startswith("{") and text.endswith("}")):
            raise self.lines.error(number, f"expected species_symbols in braces {{...}}, got {text!r}")
        symbols = text.translate(_BRACES_AND_COMMAS_TO_SPACES).split()
        if len(symbols) != species_count:
            raise self.lines.error(number, f"expected {species_count} species_symbols, got {len(symbols)}")
        try:
            return checked_species(symbols)
        except ValueError as problem:
            raise self.lines.error(number, str(problem)) from None

    # --- sizes and index ranges, so that the kernels never index out of bounds -----------------

    def check_within_moments(self, key: str, count: int, alpha_moments_count: int, why: str) -> None:
        if count > alpha_moments_count:
            raise self.lines.error(
                self.lines.line, f"{key} = {count} exceeds alpha_moments_count = {alpha_moments_count} ({why}): "
                                 "one of the two counts is wrong")

    def check_range(self, number: int, values: np.ndarray, limit: int, what: str, limit_name: str) -> None:
        if len(values) and (values.min() < 0 or values.max() >= limit):
            bad = values[(values < 0) | (values >= limit)][0]
            raise self.lines.error(number, f"{what} contains {bad}, outside 0..{limit_name} - 1 = {limit - 1}")

    def check_basic(self, basic: np.ndarray, radial_funcs_count: int) -> None:
        number = self.lines.line
        if len(basic) and basic.min() < 0:
            raise self.lines.error(number, "alpha_index_basic contains a negative index")
        degrees = np.minimum(basic[:, 1:], MAX_MONOMIAL_DEGREE + 1).sum(axis=1)  # capped: the sum cannot overflow
        if len(basic) and degrees.max() > MAX_MONOMIAL_DEGREE:
            row = basic[degrees.argmax()].tolist()
            reason = _LIMITS["monomial degree"].exceeded("monomial degree", sum(row[1:]))
            raise self.lines.error(number, f"alpha_index_basic entry {row}: {reason}")
        if len(basic) and basic[:, 0].max() != radial_funcs_count - 1:
            raise self.lines.error(
                number,
                f"alpha_index_basic uses radial functions up to {basic[:, 0].max()}, but radial_funcs_count = "
                f"{radial_funcs_count}: MLIP requires the largest to be radial_funcs_count - 1",
            )

    def check_times(self, times: np.ndarray, alpha_moments_count: int, n_basic: int) -> None:
        number = self.lines.line
        self.check_range(number, times[:, [0, 1, 3]].ravel(), alpha_moments_count, "alpha_index_times", "alpha_moments_count")
        if len(times) and times[:, 3].min() < n_basic:
            raise self.lines.error(number, "alpha_index_times writes into a basic moment (target index < alpha_index_basic_count)")
        early = np.flatnonzero(np.maximum(times[:, 0], times[:, 1]) >= times[:, 3])
        if len(early):
            raise self.lines.error(number, f"alpha_index_times entry {times[early[0]].tolist()} (p, q, multiplicity, k) "
                                           "has a factor p or q >= k: a product must come after both its factors")
