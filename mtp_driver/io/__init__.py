"""Readers and writers for MLIP's `.mtp` and `.cfg` files."""

from mtp_driver.io.errors import MLIPFormatError
from mtp_driver.io.mtp_file import read_mtp, write_mtp

__all__ = ["MLIPFormatError", "read_mtp", "write_mtp"]
