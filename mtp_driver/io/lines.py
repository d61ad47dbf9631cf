"""Reading a text file line by line while remembering line numbers for error messages."""

from __future__ import annotations

import math
import os
from typing import Callable, Iterable

import numpy as np

from mtp_driver.io.errors import MLIPFormatError

_INT64_RANGE = range(-(2**63), 2**63)


def shortened(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to ``limit`` characters, for quoting a line in an error message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class LineCursor:
    """The non-blank lines of a text file, stripped, with their 1-based numbers and one line of look-ahead.

    Blank lines carry no meaning in MLIP's formats (its C++ reader skips all whitespace), so they
    are skipped here.
    """

    def __init__(self, path: str | os.PathLike, stream: Iterable[str]):
        self.path = os.fspath(path)
        self._numbered = enumerate(stream, start=1)
        self._ahead: tuple[int, str] | None = None
        self.line = 0  # number of the line that next() returned last
        self._lines_seen = 0  # including the look-ahead and blank lines: the last line at the end of the file
        self._advance()

    def _advance(self) -> None:
        for number, text in self._numbered:
            self._lines_seen = number
            stripped = text.strip()
            if stripped:
                self._ahead = (number, stripped)
                return
        self._ahead = None

    def peek(self) -> str | None:
        """The next non-blank line without consuming it, or None at the end of the file."""
        return None if self._ahead is None else self._ahead[1]

    def next(self, expected: str) -> tuple[int, str]:
        """Consume the next non-blank line; ``expected`` describes it for the end-of-file error."""
        if self._ahead is None:
            raise self.error(max(self._lines_seen, 1), f"file ends here, expected {expected}")
        current = self._ahead
        self.line = current[0]
        self._advance()
        return current

    def error(self, line: int, reason: str) -> MLIPFormatError:
        return MLIPFormatError(self.path, line, reason)

    def to_int(self, text: str, line: int, what: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise self.error(line, f"expected an integer for {what}, got {text!r}") from None
        if value not in _INT64_RANGE:
            raise self.error(line, f"{what} is {text}, too large for a 64-bit integer")
        return value

    def to_float(self, text: str, line: int, what: str) -> float:
        """A finite float; NaN and infinities are errors because MLIP cannot use them."""
        try:
            value = float(text)
        except ValueError:
            raise self.error(line, f"expected a number for {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise self.error(line, f"{what} is {text!r}, not a finite number")
        return value

    def to_array(self, tokens: list[str], kind: type, what: str, line_of_token: Callable[[int], int]) -> np.ndarray:
        """``tokens`` as an int64 (``kind=int``) or finite float64 (``kind=float``) array.

        NumPy converts them in one call; only when that fails are they converted one by one, so
        that the error names the line (``line_of_token(index)``) of the offending token.
        """
        try:
            values = np.array(tokens, dtype=np.int64 if kind is int else np.float64)
        except (ValueError, OverflowError):
            values = None
        if values is not None and (kind is int or np.isfinite(values).all()):
            return values
        convert = self.to_int if kind is int else self.to_float
        for index, token in enumerate(tokens):
            convert(token, line_of_token(index), what)
        raise self.error(line_of_token(0), f"cannot read {what} as numbers")
