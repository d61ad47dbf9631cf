"""Training: loss, exact linear step, L-BFGS over all parameters, MPI data parallelism.

``from mtp_driver.fit import train`` loads the Numba kernels on first use; the options are plain
dataclasses (cheap to import, e.g. for the command line).
"""

from .options import LossWeights, TrainOptions

__all__ = ["LossWeights", "TrainOptions", "TrainResult", "evaluate_on", "train"]


def __getattr__(name: str):
    if name in ("train", "TrainResult", "evaluate_on"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
