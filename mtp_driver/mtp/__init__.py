"""The model: MTP parameters as data, basis generation and Numba kernels."""

from .model import MTP

__all__ = ["MTP"]
