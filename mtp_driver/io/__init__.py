"""Readers and writers for MLIP's `.mtp` and `.cfg` files."""

from mtp_driver.io.cfg import iter_cfg, read_cfg, write_cfg
from mtp_driver.io.errors import MLIPFormatError
from mtp_driver.io.mtp_file import read_mtp, write_mtp

__all__ = ["MLIPFormatError", "iter_cfg", "read_cfg", "read_mtp", "write_cfg", "write_mtp"]
