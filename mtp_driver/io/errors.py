"""The one error raised for malformed MLIP files."""

from __future__ import annotations

import os


class MLIPFormatError(ValueError):
    """A `.mtp` or `.cfg` file that does not follow MLIP's format.

    ``path`` is the file as given, ``line`` the 1-based line where the problem shows, and
    ``reason`` what was expected and what was found. ``str(error)`` reads like
    ``"pot.mtp, line 12: expected 'species_count = ...', got 'foo = 3'"``.
    """

    def __init__(self, path: str | os.PathLike, line: int, reason: str):
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}")
