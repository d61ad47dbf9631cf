"""A hash of everything in a potential that its parameter rows depend on."""

from __future__ import annotations

import hashlib

import numpy as np

from mtp_driver.mtp.model import MTP


def potential_fingerprint(mtp: MTP) -> str:
    """SHA-256 (hex) of the coefficients, cutoffs, scaling and basis tables: any change to the
    potential (retraining included) changes the rows, so an active set built for another
    fingerprint is stale."""
    digest = hashlib.sha256()
    scalars = np.array([mtp.species_count, mtp.radial_basis_size, mtp.radial_funcs_count, mtp.alpha_moments_count],
                       dtype=np.int64)
    for array in (scalars, np.array([mtp.min_dist, mtp.max_dist, mtp.scaling]), mtp.alpha_index_basic,
                  mtp.alpha_index_times, mtp.alpha_moment_mapping, mtp.radial_coeffs, mtp.species_coeffs,
                  mtp.moment_coeffs):
        if array is None:
            raise ValueError("the potential is untrained: an active set needs trained coefficients")
        contiguous = np.ascontiguousarray(array)
        digest.update(str((contiguous.dtype.str, contiguous.shape)).encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()
