"""Training configurations as one flat batch for the kernels, and their split over MPI ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

from mtp_driver.io.species import atom_types
from mtp_driver.io.structures import read_structures
from mtp_driver.mtp.kernels import BLOCK
from mtp_driver.mtp.neighbors import build_neighbor_list

from .mlearn import read_mlearn


def read_training_structures(path: str | os.PathLike, species: Sequence[str] | None = None) -> list:
    """Labelled configurations from an MLIP `.cfg`, an mlearn ``.json[.xz]`` or any ASE format."""
    name = Path(path).name.lower()
    if name.endswith(".json.xz") or (name.endswith(".json") and _starts_with_list(path)):
        return read_mlearn(path)
    return read_structures(path, species=species)


def _starts_with_list(path) -> bool:
    with open(path, encoding="utf-8") as handle:
        return handle.read(64).lstrip().startswith("[")


@dataclass(eq=False)
class Batch:
    """Configurations concatenated: atoms, CSR neighbour lists (at the potential's cutoff) and
    reference values. Configuration c owns atoms atom_starts[c]:atom_starts[c+1] and pairs
    pair_starts[c]:pair_starts[c+1]; `index` is its position in the whole training set."""

    index: np.ndarray  # (C,)
    types: np.ndarray  # (N,)
    offsets: np.ndarray  # (N + 1,)
    centers: np.ndarray  # (P,)
    neighbors: np.ndarray  # (P,)
    vectors: np.ndarray  # (P, 3) Å
    atom_starts: np.ndarray  # (C + 1,)
    pair_starts: np.ndarray  # (C + 1,)
    energy: np.ndarray  # (C,) eV, 0 where absent
    forces: np.ndarray  # (N, 3) eV/Å
    virial: np.ndarray  # (C, 3, 3) strain derivative dE/d(strain) = volume * ASE stress, eV
    has_energy: np.ndarray  # (C,) bool
    has_forces: np.ndarray  # (C,) bool
    has_virial: np.ndarray  # (C,) bool
    weight: np.ndarray  # (C,) per-configuration weight
    block_starts: np.ndarray  # (B + 1,) atom ranges of at most BLOCK atoms, never across configurations

    @property
    def size(self) -> int:
        return len(self.index)

    @property
    def atom_counts(self) -> np.ndarray:
        return np.diff(self.atom_starts)

    @property
    def neighbor_types(self) -> np.ndarray:
        return self.types[self.neighbors]

    @property
    def max_neighbors(self) -> int:
        return max(int(np.diff(self.offsets).max(initial=0)), 1)

    @property
    def atom_config(self) -> np.ndarray:
        return np.repeat(np.arange(self.size), self.atom_counts)

    @property
    def pair_config(self) -> np.ndarray:
        return np.repeat(np.arange(self.size), np.diff(self.pair_starts))

    @property
    def block_config(self) -> np.ndarray:
        return np.searchsorted(self.atom_starts, self.block_starts[:-1], side="right") - 1

    def shortest_distance(self) -> float:
        if not len(self.vectors):
            return np.inf
        return float(np.sqrt(np.einsum("pa,pa->p", self.vectors, self.vectors).min()))


def make_batch(images, species: Sequence[str] | None, cutoff: float, index=None, weights=None) -> Batch:
    """A batch of `images` (ase.Atoms with reference results) with neighbour lists at `cutoff`."""
    index = np.arange(len(images)) if index is None else np.asarray(index, dtype=np.int64)
    weights = np.ones(len(images)) if weights is None else np.asarray(weights, dtype=np.float64)
    parts = {key: [] for key in ("types", "centers", "neighbors", "vectors", "offsets", "forces")}
    n_configs = len(images)
    atom_starts = np.zeros(n_configs + 1, dtype=np.int64)
    pair_starts = np.zeros(n_configs + 1, dtype=np.int64)
    energy = np.zeros(n_configs)
    virial = np.zeros((n_configs, 3, 3))
    has = {key: np.zeros(n_configs, dtype=bool) for key in ("energy", "forces", "virial")}
    for c, atoms in enumerate(images):
        n = len(atoms)
        neighbor_list = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        parts["types"].append(atom_types(atoms, species))
        parts["centers"].append(neighbor_list.centers + atom_starts[c])
        parts["neighbors"].append(neighbor_list.neighbors + atom_starts[c])
        parts["vectors"].append(neighbor_list.vectors)
        parts["offsets"].append(neighbor_list.offsets[:-1] + pair_starts[c])
        atom_starts[c + 1] = atom_starts[c] + n
        pair_starts[c + 1] = pair_starts[c] + len(neighbor_list.neighbors)
        results = atoms.calc.results if atoms.calc is not None else {}
        forces = results.get("forces")
        has["forces"][c] = forces is not None
        parts["forces"].append(np.zeros((n, 3)) if forces is None else np.asarray(forces, dtype=np.float64))
        if results.get("energy") is not None:
            has["energy"][c] = True
            energy[c] = results["energy"]
        stress = results.get("stress")
        if stress is not None and atoms.pbc.all():
            has["virial"][c] = True
            virial[c] = atoms.get_volume() * voigt_6_to_full_3x3_stress(np.asarray(stress, dtype=np.float64))
    offsets = np.append(np.concatenate(parts["offsets"]) if n_configs else np.zeros(0, np.int64), pair_starts[-1])
    return Batch(
        index=index, types=_joined(parts["types"], np.int64), offsets=offsets.astype(np.int64),
        centers=_joined(parts["centers"], np.int64), neighbors=_joined(parts["neighbors"], np.int64),
        vectors=_joined(parts["vectors"], np.float64, (0, 3)), atom_starts=atom_starts, pair_starts=pair_starts,
        energy=energy, forces=_joined(parts["forces"], np.float64, (0, 3)), virial=virial,
        has_energy=has["energy"], has_forces=has["forces"], has_virial=has["virial"], weight=weights,
        block_starts=_block_starts(atom_starts),
    )


def _joined(arrays, dtype, empty_shape=(0,)) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate(arrays) if arrays else np.zeros(empty_shape), dtype=dtype)


def _block_starts(atom_starts: np.ndarray) -> np.ndarray:
    """Starts of atom blocks of at most BLOCK atoms that never span two configurations."""
    starts = [np.arange(begin, end, BLOCK) for begin, end in zip(atom_starts[:-1], atom_starts[1:])]
    return np.append(np.concatenate(starts) if starts else np.zeros(0, np.int64), atom_starts[-1]).astype(np.int64)


def shard_bounds(atom_counts: np.ndarray, shard_count: int) -> np.ndarray:
    """Split configurations 0..C-1 into `shard_count` contiguous groups of similar atom counts:
    shard s is configurations bounds[s]:bounds[s+1] (possibly empty)."""
    before = np.concatenate([[0], np.cumsum(atom_counts)[:-1]]).astype(np.float64)
    total = max(float(np.sum(atom_counts)), 1.0)
    shard_of = np.minimum((before * shard_count / total).astype(np.int64), shard_count - 1)
    return np.searchsorted(shard_of, np.arange(shard_count + 1), side="left").astype(np.int64)


def shards_of_rank(bounds: np.ndarray, atom_counts: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Shards assigned to `rank`: largest first to the least loaded rank (the same on every rank)."""
    work = np.array([atom_counts[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
    load = np.zeros(size)
    owner = np.empty(len(work), dtype=np.int64)
    for shard in np.argsort(-work, kind="stable"):
        owner[shard] = int(np.argmin(load))
        load[owner[shard]] += work[shard]
    return np.flatnonzero(owner == rank)
