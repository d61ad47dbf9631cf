"""MLIP's `.cfg` configuration files, to and from `ase.Atoms`.

A file holds any number of configurations like this one (``[...]`` = optional)::

    BEGIN_CFG
     Size
        2
    [Supercell                       1 to 3 rows: the periodic lattice vectors, Å
        3.16 0.0 0.0
        0.0 3.16 0.0
        0.0 0.0 3.16]
     AtomData:  id type cartes_x cartes_y cartes_z fx fy fz     any of these columns, any order
        1 0 0.0 0.0 0.0 0.1 -0.2 0.0
        2 0 1.58 1.58 1.58 -0.1 0.2 0.0
    [Energy                          eV
        -21.7]
    [PlusStress:  xx yy zz yz xz xy   eV: the virial, = -volume * stress in ASE's sign
        0.1 0.1 0.1 0.0 0.0 0.0]
    [Feature   MV_grade	0.6]         any number of them
    END_CFG

How the pieces land in `ase.Atoms`:

* Supercell row ``a`` becomes cell vector ``a`` and makes the configuration periodic along it;
  missing rows are zero vectors and not periodic (MLIP's convention for 1D/2D periodicity; no
  Supercell at all means a non-periodic configuration). Fractional ``direct_x/y/z`` positions
  need all three vectors. On writing, a non-periodic direction is written as a zero row, so a
  vacuum cell vector along it is not kept.
* ``type``: with ``species`` (``species[i]`` is the chemical symbol of type ``i``) it sets the
  symbols; without, every atom is ``X`` and the type is kept in ``atoms.arrays["mlip_type"]``.
  A missing ``type`` column means type 0 for all atoms, as in MLIP.
* ``Energy``, ``fx fy fz`` and ``PlusStress`` go into a `SinglePointCalculator` as ``energy``
  and ``free_energy`` (eV), ``forces`` (eV/Å) and ``stress`` = -PlusStress / volume (eV/Å³, Voigt
  order xx yy zz yz xz xy). The PlusStress itself is kept in the calculator's results as
  ``"mlip_plus_stress"``: writing uses it when it still agrees with ``stress`` (so that a read-write
  cycle reproduces the file's numbers exactly), and it is the only record of the virial of a
  configuration that is not periodic in three directions (no volume, so no stress).
* Any other AtomData column (``site_en``, ``nbh_grades``, ``charge``, ...) is kept as a float
  array in ``atoms.arrays`` under its column name, and written back as a column.
* ``Feature name value`` lines are kept as ``atoms.info[name]``: an int or float when the value
  reads as one, else the text; repeated lines of one name are joined with newlines (MLIP's
  multi-line features). On writing, every ``atoms.info`` entry that is a string or a number is
  written as a Feature.
* ``Stress:`` and ``Virial:`` (MLIP's deprecated fields, which MLIP-2 refuses by default and
  whose sign and units vary between writers) are skipped with a warning.

What MLIP's own reader accepts (``Configuration::Load`` in MLIP-2/MLIP-3 ``src/configuration.cpp``):
the keys above plus ``SuperCell`` and ``Atomic_data:``, which are read too; ids, when present,
must be 1, 2, 3, ...; MLIP-2 knows only the AtomData columns id, type, cartes_*, direct_*, fx fy fz,
site_en and charge (MLIP-3 adds nbh_grades, magmom_*, en_der_m*, ghost), so a file with other
columns is for this package only. Floats are written with ``repr``, which reads back exactly.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers
from ase.stress import full_3x3_to_voigt_6_stress

from mtp_driver.io.atomic import atomic_write
from mtp_driver.io.lines import LineCursor, shortened
from mtp_driver.io.species import MLIP_TYPE_ARRAY, checked_species

PLUS_STRESS_RESULT = "mlip_plus_stress"
STRESS_COMPONENTS = ("xx", "yy", "zz", "yz", "xz", "xy")  # ASE's Voigt order; MLIP writes the same

_CARTESIAN = ("cartes_x", "cartes_y", "cartes_z")
_FRACTIONAL = ("direct_x", "direct_y", "direct_z")
_FORCES = ("fx", "fy", "fz")
_INTEGER_COLUMNS = ("id", "type")
_STANDARD_COLUMNS = frozenset(_INTEGER_COLUMNS + _CARTESIAN + _FRACTIONAL + _FORCES)
# Arrays that ASE itself manages: never written as AtomData columns, never read from one.
_ASE_ARRAYS = frozenset({"numbers", "positions", "momenta", "masses", "tags", "initial_magmoms", "initial_charges", MLIP_TYPE_ARRAY})
_DEPRECATED_STRESS_KEYS = ("Stress:", "Virial:")
_NUMBER_START = frozenset("0123456789+-.")


def read_cfg(path: str | os.PathLike, species: Sequence[str] | None = None) -> list[Atoms]:
    """All configurations of an MLIP `.cfg` file as `ase.Atoms` (see the module docstring).

    ``species[i]`` is the chemical symbol of type ``i``. Raises MLIPFormatError, naming the file
    and line, for malformed input.
    """
    return list(iter_cfg(path, species))


def iter_cfg(path: str | os.PathLike, species: Sequence[str] | None = None) -> Iterator[Atoms]:
    """The configurations of an MLIP `.cfg` file one at a time, for files too large for memory."""
    symbols = None if species is None else checked_species(species)
    with open(path, encoding="utf-8") as stream:
        lines = LineCursor(path, stream)
        reader = _ConfigurationReader(lines, symbols)
        while lines.peek() is not None:
            number, text = lines.next("BEGIN_CFG")
            if text != "BEGIN_CFG":
                raise lines.error(number, f"expected BEGIN_CFG, got {shortened(text)}")
            yield reader.read(number)


def write_cfg(path: str | os.PathLike, images: Atoms | Iterable[Atoms], species: Sequence[str] | None = None) -> None:
    """Write configurations as an MLIP `.cfg` file, atomically.

    Types come from the chemical symbols through ``species`` (``species[i]`` is the symbol of
    type ``i``), or, without ``species``, from ``atoms.arrays["mlip_type"]``. Raises ValueError
    for a symbol that is not in ``species``. Entries of ``atoms.info`` and ``atoms.arrays`` that
    a `.cfg` file cannot hold are skipped with a warning.
    """
    type_of_symbol = None if species is None else {symbol: i for i, symbol in enumerate(checked_species(species))}
    if isinstance(images, Atoms):
        images = [images]
    with atomic_write(path) as stream:
        for index, atoms in enumerate(images):
            stream.write(format_configuration(atoms, type_of_symbol, index))


@dataclass
class _AtomData:
    """An AtomData block: where its header is, the line of each atom, and each column as an array."""

    header: int
    line_numbers: list[int]
    columns: dict[str, np.ndarray]


class _ConfigurationReader:
    """Reads one BEGIN_CFG ... END_CFG block after another from a LineCursor."""

    def __init__(self, lines: LineCursor, species: tuple[str, ...] | None):
        self.lines = lines
        self.species = species
        self.warned_about_deprecated_stress = False

    def read(self, begin: int) -> Atoms:
        lines = self.lines
        size = lattice = atom_data = energy = plus_stress = None
        features: dict[str, str] = {}
        first_seen: dict[str, int] = {}
        while True:
            number, text = lines.next(f"END_CFG of the configuration that begins on line {begin}")
            key = text.split(None, 1)[0]
            if key == "END_CFG":
                break
            if key != "Feature":
                if key in first_seen:
                    raise lines.error(number, f"a second {key!r} in one configuration (the first is on line {first_seen[key]})")
                first_seen[key] = number
            if key == "Size":
                size = self.size()
            elif key in ("Supercell", "SuperCell"):
                lattice = self.lattice(number)
            elif key in ("AtomData:", "Atomic_data:"):
                if size is None:
                    raise lines.error(number, "AtomData before Size: the number of atom lines is unknown")
                atom_data = self.atom_data(number, text.split()[1:], size)
            elif key == "Energy":
                energy = self.single_number("the energy after Energy")
            elif key == "PlusStress:":
                plus_stress = self.stress(number, text.split()[1:])
            elif key in _DEPRECATED_STRESS_KEYS:
                self.skip_deprecated_stress(number, key)
            elif key == "Feature":
                name, value = self.feature(number, text)
                features[name] = f"{features[name]}\n{value}" if name in features else value
            elif key[0] in _NUMBER_START:
                raise lines.error(number, f"a line of numbers where a key was expected: more atom lines than Size = {size}?")
            else:
                raise lines.error(number, f"unknown key {key!r}")
        if atom_data is None:
            raise lines.error(number, f"the configuration that begins on line {begin} has no AtomData")
        return self.atoms(atom_data, lattice, energy, plus_stress, features)

    # --- the blocks of a configuration ---------------------------------------------------------

    def size(self) -> int:
        number, text = self.lines.next("the number of atoms after Size")
        size = self.lines.to_int(text, number, "Size")
        if size < 0:
            raise self.lines.error(number, f"Size must not be negative, got {size}")
        return size

    def single_number(self, what: str) -> float:
        number, text = self.lines.next(what)
        return self.lines.to_float(text, number, what)

    def lattice(self, number: int) -> np.ndarray:
        """The 1 to 3 rows of numbers after Supercell, as a (rows, 3) array in Å."""
        rows = []
        while len(rows) < 3 and (self.lines.peek() or "x")[0] in _NUMBER_START:
            row_number, text = self.lines.next("a lattice vector")
            tokens = text.split()
            if len(tokens) != 3:
                raise self.lines.error(row_number, f"a lattice vector needs 3 numbers, got {shortened(text)}")
            rows.append([self.lines.to_float(token, row_number, "a lattice vector") for token in tokens])
        if not rows:
            raise self.lines.error(number, "Supercell without lattice vectors")
        return np.array(rows)

    def atom_data(self, header: int, columns: list[str], size: int) -> _AtomData:
        """The ``size`` atom lines after an AtomData header with these column names."""
        lines = self.lines
        self.check_columns(header, columns)
        atom_lines = []
        for index in range(size):
            number, text = lines.next(f"atom line {index + 1} of Size = {size}")
            if text[0] not in _NUMBER_START:
                raise lines.error(number, f"AtomData ends after {index} atom lines, but Size = {size}")
            atom_lines.append((number, text))
        tokens = " ".join(text for _, text in atom_lines).split()
        if len(tokens) != size * len(columns):
            for number, text in atom_lines:
                if len(text.split()) != len(columns):
                    raise lines.error(number, f"expected {len(columns)} numbers ({' '.join(columns)}), got {len(text.split())}")
        table = _AtomData(header, [number for number, _ in atom_lines], {})
        for position, name in enumerate(columns):
            kind = int if name in _INTEGER_COLUMNS else float
            column = tokens[position :: len(columns)]
            table.columns[name] = lines.to_array(column, kind, f"column {name}", lambda index: atom_lines[index][0])
        self.check_ids_and_types(table)
        return table

    def check_columns(self, header: int, columns: list[str]) -> None:
        error = self.lines.error
        repeated = sorted({name for name in columns if columns.count(name) > 1})
        if repeated:
            raise error(header, f"AtomData names columns {repeated} twice")
        clashing = sorted(_ASE_ARRAYS.intersection(columns))
        if clashing:
            raise error(header, f"AtomData columns {clashing} clash with arrays that ASE manages")
        cartesian = [name in columns for name in _CARTESIAN]
        fractional = [name in columns for name in _FRACTIONAL]
        if not (all(cartesian) ^ all(fractional)) or (any(cartesian) and any(fractional)):
            raise error(header, "AtomData needs the positions as cartes_x cartes_y cartes_z or as direct_x direct_y direct_z")
        if any(name in columns for name in _FORCES) and not all(name in columns for name in _FORCES):
            raise error(header, "AtomData needs all three force columns fx fy fz, or none")

    def check_ids_and_types(self, table: _AtomData) -> None:
        columns = table.columns
        if "id" in columns:
            wrong = np.flatnonzero(columns["id"] != np.arange(1, len(table.line_numbers) + 1))
            if len(wrong):
                raise self.lines.error(table.line_numbers[wrong[0]], f"atom ids must be 1, 2, 3, ... in order; got {columns['id'][wrong[0]]}")
        if "type" in columns:
            type_count = math.inf if self.species is None else len(self.species)
            wrong = np.flatnonzero((columns["type"] < 0) | (columns["type"] >= type_count))
            if len(wrong):
                known = "types are >= 0" if self.species is None else f"species {list(self.species)} has types 0..{len(self.species) - 1}"
                raise self.lines.error(table.line_numbers[wrong[0]], f"atom type {columns['type'][wrong[0]]} is out of range: {known}")

    def stress(self, number: int, components: list[str]) -> np.ndarray:
        """The six PlusStress components (eV) in Voigt order, whatever order the header gives."""
        if sorted(components) != sorted(STRESS_COMPONENTS):
            raise self.lines.error(number, f"PlusStress needs the components {' '.join(STRESS_COMPONENTS)} once each, got {components}")
        value_number, text = self.lines.next("the six PlusStress values")
        tokens = text.split()
        if len(tokens) != 6:
            raise self.lines.error(value_number, f"expected the 6 PlusStress values, got {shortened(text)}")
        values = dict(zip(components, (self.lines.to_float(token, value_number, "PlusStress") for token in tokens)))
        return np.array([values[name] for name in STRESS_COMPONENTS])

    def skip_deprecated_stress(self, number: int, key: str) -> None:
        self.lines.next(f"the values after {key}")
        if not self.warned_about_deprecated_stress:
            self.warned_about_deprecated_stress = True
            warnings.warn(
                f"{self.lines.path}, line {number}: ignoring MLIP's deprecated {key!r} field in this file "
                "(its sign and units vary between writers and MLIP-2 refuses it); only PlusStress is read",
                stacklevel=4,
            )

    def feature(self, number: int, text: str) -> tuple[str, str]:
        parts = text.split(None, 2)
        if len(parts) < 2:
            raise self.lines.error(number, "Feature without a name")
        return parts[1], parts[2] if len(parts) == 3 else ""

    # --- the Atoms ------------------------------------------------------------------------------

    def atoms(self, table: _AtomData, lattice, energy, plus_stress, features: dict[str, str]) -> Atoms:
        size = len(table.line_numbers)
        columns = table.columns
        cell = np.zeros((3, 3))
        if lattice is not None:
            cell[: len(lattice)] = lattice
        pbc = cell.any(axis=1)
        if _FRACTIONAL[0] in columns:
            if not pbc.all() or _volume(cell) == 0:
                raise self.lines.error(table.header, "direct_x/y/z (fractional) positions need a Supercell of three lattice vectors")
            positions = np.column_stack([columns[name] for name in _FRACTIONAL]).reshape(size, 3) @ cell
        else:
            positions = np.column_stack([columns[name] for name in _CARTESIAN]).reshape(size, 3)
        types = columns.get("type", np.zeros(size, dtype=np.int64))
        if self.species is None:
            numbers = np.zeros(size, dtype=np.int64)  # "X": the element is unknown without a species map
        else:
            numbers = np.array([atomic_numbers[symbol] for symbol in self.species])[types]
        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
        if self.species is None:
            atoms.new_array(MLIP_TYPE_ARRAY, types)
        for name, values in columns.items():
            if name not in _STANDARD_COLUMNS:
                atoms.new_array(name, values)
        atoms.info.update({name: _feature_value(text) for name, text in features.items()})
        results = {}
        if energy is not None:
            results["energy"] = results["free_energy"] = energy
        if _FORCES[0] in columns:
            results["forces"] = np.column_stack([columns[name] for name in _FORCES]).reshape(size, 3)
        if plus_stress is not None:
            results[PLUS_STRESS_RESULT] = plus_stress
            if pbc.all() and _volume(cell) > 0:
                results["stress"] = -plus_stress / _volume(cell)
        if results:
            atoms.calc = SinglePointCalculator(atoms)
            atoms.calc.results.update(results)
        return atoms


def _volume(cell: np.ndarray) -> float:
    """Cell volume in Å³, the same expression on reading and writing so that stress round-trips."""
    return abs(float(np.linalg.det(cell)))


def _feature_value(text: str) -> int | float | str:
    """A Feature value as an int or finite float when it reads as one, else as the text."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    return text


# --- writing --------------------------------------------------------------------------------------


def format_configuration(atoms: Atoms, type_of_symbol: dict[str, int] | None, index: int = 0) -> str:
    """One configuration as `.cfg` text; ``index`` only numbers it in error messages."""
    size = len(atoms)
    out = ["BEGIN_CFG", " Size", f"    {size}"]
    lattice_rows = _lattice_rows(atoms, index)
    if lattice_rows:
        out.append(" Supercell")
        out += ["    " + " ".join(map(repr, row)) for row in lattice_rows]
    columns = ["id", "type", *_CARTESIAN]
    float_columns = [atoms.positions]
    forces = _result(atoms, "forces")
    if forces is not None:
        columns += _FORCES
        float_columns.append(forces)
    extra = _extra_columns(atoms)
    columns += extra
    float_columns += [atoms.arrays[name] for name in extra]
    out.append(" AtomData:  " + " ".join(columns))
    types = _types(atoms, type_of_symbol, index)
    table = np.column_stack(float_columns).astype(np.float64).reshape(size, len(columns) - 2)
    out += [f"    {i} {t} " + " ".join(map(repr, row)) for i, t, row in zip(range(1, size + 1), types, table.tolist())]
    energy = _result(atoms, "free_energy")
    if energy is None:
        energy = _result(atoms, "energy")
    if energy is not None:
        out += [" Energy", f"    {float(energy)!r}"]
    plus_stress = _plus_stress(atoms, index)
    if plus_stress is not None:
        out += [" PlusStress:  " + " ".join(STRESS_COMPONENTS), "    " + " ".join(map(repr, plus_stress.tolist()))]
    out += _feature_lines(atoms.info)
    out += ["END_CFG", "", ""]
    return "\n".join(out)


def _lattice_rows(atoms: Atoms, index: int) -> list[list[float]]:
    """Supercell rows up to the last periodic direction; a non-periodic direction is a zero row."""
    rows = [atoms.cell[a].tolist() if atoms.pbc[a] else [0.0, 0.0, 0.0] for a in range(3)]
    for a in range(3):
        if atoms.pbc[a] and not any(rows[a]):
            raise ValueError(f"configuration {index}: periodic along cell vector {a}, but that vector is zero")
    periodic = [a for a in range(3) if atoms.pbc[a]]
    return rows[: periodic[-1] + 1] if periodic else []


def _types(atoms: Atoms, type_of_symbol: dict[str, int] | None, index: int) -> list[int]:
    if type_of_symbol is None:
        if MLIP_TYPE_ARRAY not in atoms.arrays:
            raise ValueError(
                f"configuration {index}: no species given and no atoms.arrays[{MLIP_TYPE_ARRAY!r}]; "
                "pass species=[...] (species[i] is the chemical symbol of type i)"
            )
        types = atoms.arrays[MLIP_TYPE_ARRAY]
        if len(types) and types.min() < 0:
            raise ValueError(f"configuration {index}: atoms.arrays[{MLIP_TYPE_ARRAY!r}] has negative types")
        return types.tolist()
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols).difference(type_of_symbol))
    if unknown:
        raise ValueError(f"configuration {index}: chemical symbols {unknown} are not in species {list(type_of_symbol)}")
    return [type_of_symbol[symbol] for symbol in symbols]


def _extra_columns(atoms: Atoms) -> list[str]:
    """Names of the per-atom arrays that become extra AtomData columns (1-D numeric arrays)."""
    names = []
    for name, values in atoms.arrays.items():
        if name in _ASE_ARRAYS:
            continue
        if values.ndim == 1 and np.issubdtype(values.dtype, np.number) and name.split() == [name] and name not in _STANDARD_COLUMNS:
            names.append(name)
        else:
            warnings.warn(f"write_cfg: skipping atoms.arrays[{name!r}]: an AtomData column must be a 1-D numeric array with a one-word name", stacklevel=4)
    return names


def _result(atoms: Atoms, name: str):
    """A result of the attached calculator if it holds one for the current atoms, else None."""
    if atoms.calc is None:
        return None
    try:
        return atoms.calc.get_property(name, atoms, allow_calculation=False)
    except PropertyNotImplementedError:
        return None


def _plus_stress(atoms: Atoms, index: int) -> np.ndarray | None:
    """PlusStress (eV, Voigt order) = -volume * stress, or the PlusStress read from a file if it still agrees."""
    stress = _result(atoms, "stress")
    stored = _result(atoms, PLUS_STRESS_RESULT)
    if stress is None:
        return stored  # a configuration without three periodic directions keeps its virial as read
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (3, 3):
        stress = full_3x3_to_voigt_6_stress(stress)
    volume = _volume(atoms.cell.array)
    if not atoms.pbc.all() or volume == 0:
        raise ValueError(f"configuration {index}: has a stress but no volume (not periodic in three directions)")
    if stored is not None and np.array_equal(-stored / volume, stress):
        return stored
    return -stress * volume


def _feature_lines(info: dict) -> list[str]:
    lines = []
    for name, value in info.items():
        if isinstance(value, (str, bool, np.bool_)):
            text = str(value)
        elif isinstance(value, (int, np.integer)):
            text = str(int(value))
        elif isinstance(value, (float, np.floating)):
            text = repr(float(value))
        else:
            text = None
        if text is None or not isinstance(name, str) or name.split() != [name]:
            warnings.warn(f"write_cfg: skipping atoms.info[{name!r}]: a Feature needs a one-word name and a string or number", stacklevel=4)
            continue
        # MLIP reads one Feature per line and joins repeated names with newlines.
        lines += [f" Feature   {name}\t{part}" for part in text.split("\n")]
    return lines
