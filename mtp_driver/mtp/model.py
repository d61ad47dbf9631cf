"""The MTP model as data: a small dataclass of NumPy arrays.

Layout and meaning follow MLIP's `.mtp` format (version 1.1.0):

* ``radial_coeffs[a, b, mu, beta]``: coefficient of Chebyshev polynomial ``beta`` in radial
  function ``mu`` for a central atom of type ``a`` and a neighbour of type ``b``.
* ``alpha_index_basic[k] = (mu, i, j, l)``: basic moment
  ``M_k = sum_j f_mu(r_ij) x^i y^j z^l / r^(i+j+l)`` (components of unit vectors).
* ``alpha_index_times[t] = (p, q, mult, k)``: ``M_k += mult * M_p * M_q``, in file order.
* ``alpha_moment_mapping[s]``: index of the moment that is scalar basis function ``s``.
* Site energy of atom i of type a: ``species_coeffs[a] + sum_s moment_coeffs[s] * M_mapping[s]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class MTP:
    """Parameters and basis tables of a Moment Tensor Potential (lengths in Å, energies in eV)."""

    species_count: int
    min_dist: float
    max_dist: float
    radial_basis_size: int
    radial_funcs_count: int
    alpha_moments_count: int
    alpha_index_basic: np.ndarray  # (n_basic, 4) int64
    alpha_index_times: np.ndarray  # (n_times, 4) int64
    alpha_moment_mapping: np.ndarray  # (n_scalar,) int64
    radial_coeffs: np.ndarray | None = None  # (S, S, K, R) float64; None = untrained
    species_coeffs: np.ndarray | None = None  # (S,) float64
    moment_coeffs: np.ndarray | None = None  # (n_scalar,) float64
    scaling: float = 1.0
    potential_name: str = "MTP1m"
    potential_tag: str = ""
    version: str = "1.1.0"
    radial_basis_type: str = "RBChebyshev"
    species: tuple[str, ...] | None = None  # chemical symbol of each type, if known
    level: int | None = field(default=None)

    def __post_init__(self):
        self.alpha_index_basic = np.ascontiguousarray(self.alpha_index_basic, dtype=np.int64).reshape(-1, 4)
        self.alpha_index_times = np.ascontiguousarray(self.alpha_index_times, dtype=np.int64).reshape(-1, 4)
        self.alpha_moment_mapping = np.ascontiguousarray(self.alpha_moment_mapping, dtype=np.int64).ravel()
        for name in ("radial_coeffs", "species_coeffs", "moment_coeffs"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.ascontiguousarray(value, dtype=np.float64))
        if self.species is not None:
            self.species = tuple(self.species)
        if self.level is None:
            self.level = basis_level(self.alpha_index_basic, self.alpha_index_times, self.alpha_moment_mapping)

    @property
    def alpha_scalar_moments(self) -> int:
        return len(self.alpha_moment_mapping)

    @property
    def is_trained(self) -> bool:
        return self.radial_coeffs is not None and self.moment_coeffs is not None

    @property
    def parameter_count(self) -> int:
        """S^2*K*R radial + S species + scalar moment coefficients (MLIP's count)."""
        S, K, R = self.species_count, self.radial_funcs_count, self.radial_basis_size
        return S * S * K * R + S + self.alpha_scalar_moments

    def copy(self, **changes) -> "MTP":
        """A deep copy with the given fields replaced."""
        copied = {
            name: (getattr(self, name).copy() if isinstance(getattr(self, name), np.ndarray) else getattr(self, name))
            for name in self.__dataclass_fields__
        }
        copied.update(changes)
        return MTP(**copied)

    def validate(self) -> None:
        """Raise ValueError if the arrays are inconsistent with each other."""
        S, K, R = self.species_count, self.radial_funcs_count, self.radial_basis_size
        nb = len(self.alpha_index_basic)
        if not (0 <= self.min_dist < self.max_dist):
            raise ValueError(f"need 0 <= min_dist < max_dist, got {self.min_dist}, {self.max_dist}")
        if nb and (self.alpha_index_basic[:, 0].max() >= K or self.alpha_index_basic.min() < 0):
            raise ValueError("alpha_index_basic refers to a radial function >= radial_funcs_count")
        if len(self.alpha_index_times):
            t = self.alpha_index_times
            if t[:, [0, 1, 3]].max() >= self.alpha_moments_count or t[:, [0, 1, 3]].min() < 0:
                raise ValueError("alpha_index_times refers to a moment outside alpha_moments_count")
            if np.any(t[:, 3] < nb):
                raise ValueError("alpha_index_times writes into a basic moment")
        if len(self.alpha_moment_mapping) and (
            self.alpha_moment_mapping.max() >= self.alpha_moments_count or self.alpha_moment_mapping.min() < 0
        ):
            raise ValueError("alpha_moment_mapping refers to a moment outside alpha_moments_count")
        if self.radial_coeffs is not None and self.radial_coeffs.shape != (S, S, K, R):
            raise ValueError(f"radial_coeffs must have shape {(S, S, K, R)}, got {self.radial_coeffs.shape}")
        if self.species_coeffs is not None and self.species_coeffs.shape != (S,):
            raise ValueError(f"species_coeffs must have shape {(S,)}, got {self.species_coeffs.shape}")
        if self.moment_coeffs is not None and self.moment_coeffs.shape != self.alpha_moment_mapping.shape:
            raise ValueError(
                f"moment_coeffs must have {len(self.alpha_moment_mapping)} entries, got {len(self.moment_coeffs)}"
            )
        if self.species is not None and len(self.species) != S:
            raise ValueError(f"species names {self.species} do not match species_count = {S}")


def basis_level(alpha_index_basic, alpha_index_times, alpha_moment_mapping) -> int:
    """Largest level of a scalar basis function: lev(M_mu,nu) = 2 + 4 mu + nu, additive in products."""
    basic = np.asarray(alpha_index_basic).reshape(-1, 4)
    times = np.asarray(alpha_index_times).reshape(-1, 4)
    n_moments = max([len(basic)] + [int(t[3]) + 1 for t in times])
    level = np.zeros(n_moments, dtype=np.int64)
    level[: len(basic)] = 2 + 4 * basic[:, 0] + basic[:, 1:].sum(axis=1)
    for p, q, _, k in times:
        level[k] = level[p] + level[q]
    mapping = np.asarray(alpha_moment_mapping, dtype=np.int64)
    return int(level[mapping].max()) if len(mapping) else 0

