"""The active set on disk: a ``.npz`` beside the potential (JSON header + arrays, no pickle).

The convention is ``POT.active.npz`` next to ``POT.mtp``. The header records the format name and
version, the mode, the parameter choice and the fingerprint of the potential; loading it for a
potential with another fingerprint fails with a clear message, because grades against a stale
active set are meaningless.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mtp_driver.io.atomic import atomic_write
from mtp_driver.mtp.model import MTP

from .active_set import ActiveSet

FORMAT = "mtp-driver active set"
VERSION = 2  # 2 added the dropped columns; a version-1 file reads without them (no outside-span grades)
_ARRAYS = ("columns", "column_scale", "rows", "inverse", "sources")
_ARRAYS_SINCE_2 = ("dropped_columns", "dropped_rows")


def save_active_set(active_set: ActiveSet, path: str | os.PathLike) -> None:
    """Write `active_set` to `path` (.npz) atomically: a crash never leaves half a file."""
    header = {"format": FORMAT, "version": VERSION, "mode": active_set.mode, "parameters": active_set.parameters,
              "fingerprint": active_set.fingerprint, "parameter_count": active_set.parameter_count,
              "species": None if active_set.species is None else list(active_set.species),
              "requested_mode": active_set.requested_mode}
    with atomic_write(path, binary=True) as stream:
        np.savez(stream, header=np.array(json.dumps(header)),
                 **{name: getattr(active_set, name) for name in _ARRAYS + _ARRAYS_SINCE_2})


class _Refused(Exception):
    """A file with an active set header this program does not read."""


def _check_header(header: dict, path) -> None:
    if header.get("format") != FORMAT:
        raise _Refused(f"{path}: not an active set file (format {header.get('format')!r})")
    if header.get("version") not in (1, VERSION):
        raise _Refused(f"{path}: active set format version {header.get('version')}, this program reads 1 to {VERSION}")


def load_active_set(path: str | os.PathLike, mtp: MTP | None = None) -> ActiveSet:
    """Read an active set; with `mtp`, also check that it belongs to that potential."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            _check_header(header, path)  # before the arrays: another version may have others
            arrays = {name: data[name] for name in _ARRAYS + (_ARRAYS_SINCE_2 if header["version"] >= 2 else ())}
    except _Refused as refused:
        raise ValueError(str(refused)) from None
    except (KeyError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not an active set file ({error})") from None
    active_set = ActiveSet(mode=header["mode"], parameters=header["parameters"], fingerprint=header["fingerprint"],
                           parameter_count=int(header["parameter_count"]),
                           species=None if header["species"] is None else tuple(header["species"]),
                           requested_mode=header["requested_mode"], **arrays)
    if mtp is not None:
        try:
            active_set.check_potential(mtp)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    return active_set
