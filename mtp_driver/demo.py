"""The Quick start job: NVT molecular dynamics of fcc Cu with a shipped MTP, timed."""

from __future__ import annotations

import time
from importlib.resources import files

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from .calculator import MTPCalculator

SHIPPED_CU = files("mtp_driver") / "data" / "Cu_zuo2020.mtp"


def run_demo(repeat: int = 4, steps: int = 200, temperature: float = 600.0, seed: int = 0) -> dict:
    """Langevin NVT MD (2 fs steps) of a repeat^3 fcc Cu supercell with the Zuo et al. 2020 Cu MTP;
    prints a line every 50 steps and returns a summary (energies in eV, times in s)."""
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(repeat)
    calculator = MTPCalculator(SHIPPED_CU, species=["Cu"])
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False,
                        rng=np.random.default_rng(seed + 1))
    start = time.perf_counter()
    atoms.get_potential_energy()
    compile_time = time.perf_counter() - start
    print(f"fcc Cu, {len(atoms)} atoms, MTP level {calculator.mtp.level} (Zuo et al. 2020), "
          f"{temperature:.0f} K Langevin, {steps} steps of 2 fs; first call {compile_time:.2f} s")
    print(f"{'step':>6}{'E_pot/atom (eV)':>18}{'T (K)':>9}")

    def report():
        print(f"{dynamics.nsteps:>6}{atoms.get_potential_energy() / len(atoms):>18.6f}"
              f"{atoms.get_temperature():>9.1f}")

    dynamics.attach(report, interval=50)
    start = time.perf_counter()
    dynamics.run(steps)
    elapsed = time.perf_counter() - start
    per_atom_us = elapsed / steps / len(atoms) * 1e6
    print(f"{steps} steps in {elapsed:.2f} s: {per_atom_us:.1f} us per atom per step (MD integrator included)")
    return {"atoms": len(atoms), "steps": steps, "seconds": elapsed, "us_per_atom_step": per_atom_us,
            "final_temperature": atoms.get_temperature()}
