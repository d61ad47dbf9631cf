"""mtp-driver: Moment Tensor Potentials in Numba for ASE and i-PI."""

__version__ = "0.1.0"
