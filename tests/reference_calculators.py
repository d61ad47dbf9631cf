"""Reference calculators (and an executor) that misbehave on purpose, importable by path
('reference_calculators:Name') from the learner's worker processes."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ase.calculators.emt import EMT


class FlakyEMT(EMT):
    """EMT that raises for a fixed fraction of structures (decided by a hash of the positions, so
    retries of a failing structure fail again) or, with `random_failures`, on random calls."""

    def __init__(self, failure_rate=0.3, random_failures=False, **kwargs):
        super().__init__(**kwargs)
        self.failure_rate = failure_rate
        self.random_failures = random_failures

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if self.random_failures:
            draw = np.random.default_rng().random()
        else:
            digest = hashlib.sha256(np.ascontiguousarray(atoms.positions).tobytes()).digest()
            draw = int.from_bytes(digest[:8], "little") / 2**64
        if draw < self.failure_rate:
            raise RuntimeError("SCF did not converge (simulated)")
        super().calculate(atoms, properties, system_changes)


class NaNForces(EMT):
    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        self.results["forces"][0, 0] = np.nan


class Unconverged(EMT):
    """EMT that flags its result as not converged, as some DFT calculators do."""

    converged = False


class SlowEMT(EMT):
    """EMT that takes `delay` seconds, like a (very small) DFT calculation."""

    def __init__(self, delay=0.2, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        import time

        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes)


class RelaxingEMT(EMT):
    """EMT that moves the atoms it is given before computing, as a calculator running a relaxation would."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        atoms.positions += 0.05
        super().calculate(atoms, properties, system_changes)


class NoStressEMT(EMT):
    implemented_properties = ["energy", "free_energy", "energies", "forces"]


class BrokenConstructor(EMT):
    """A calculator that cannot even be built (a missing license, a bad keyword)."""

    def __init__(self, **kwargs):
        raise RuntimeError("no license for this code (simulated)")


class SkewedExecutor(ThreadPoolExecutor):
    """`--executor reference_calculators:SkewedExecutor`: workers that read every structure 0.1 Å off (another
    mtp-driver version on the cluster, say): they compute and store a result for a structure not asked for."""

    def __init__(self):
        super().__init__(max_workers=1)

    def submit(self, fn, reference, atoms, *args):
        moved = atoms.copy()
        moved.positions[0] += 0.1
        return super().submit(fn, reference, moved, *args)
