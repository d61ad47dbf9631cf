"""mtp-driver: Moment Tensor Potentials in Numba for ASE and i-PI."""

__version__ = "0.1.0"

from .calculator import MTPCalculator
from .mtp.model import MTP

__all__ = ["MTP", "MTPCalculator", "__version__"]
