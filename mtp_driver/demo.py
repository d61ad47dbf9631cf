"""The Quick start job: i-PI NVT molecular dynamics of fcc Cu learned on the fly from nothing.

i-PI runs the MD; our driver answers its force requests with an MTP that starts untrained; the
learner holds every extrapolative step, computes it with ASE's EMT (the embedded reference),
retrains and answers. At the end the final MTP is compared with EMT on fresh MD snapshots it
never saw.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from .calculator import MTPCalculator
from .io.cfg import write_cfg
from .ipi import DriverThread, Endpoint, IPIProcess, make_driver
from .learn.learner import Learner
from .learn.settings import LearnSettings
from .mtp.basis import untrained_mtp

# the i-PI input, shipped as package data (mtp_driver/data/*); steps, seed, temperature and socket set per run
NVT_INPUT = Path(__file__).with_name("data") / "demo_nvt.xml"


def fresh_snapshots(start, temperature: float, count: int, seed: int):
    """EMT Langevin MD snapshots (every 20 steps of 2 fs, after 200 steps) the learner never saw."""
    atoms = start.copy()
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(seed))
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02,
                        fixcm=False, rng=np.random.default_rng(seed + 1))
    dynamics.run(200)
    snapshots = []
    for _ in range(count):
        dynamics.run(20)
        snapshot = atoms.copy()
        snapshot.calc = EMT()
        snapshot.get_forces()
        snapshots.append(snapshot)
    return snapshots


def run_demo(run_dir: str | os.PathLike = "mtp-driver-demo", steps: int = 1000, temperature: float = 900.0,
             level: int = 10, repeat: int = 3, seed: int = 0, refit_iterations: int = 300) -> dict:
    """NVT MD of a repeat^3 fcc Cu supercell under i-PI, learning a level-`level` MTP on the fly
    from EMT; prints the summary and returns it (energies eV, forces eV/Å, times s)."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    start.write(run_dir / "start.extxyz")
    initial = untrained_mtp(level, 1, 2.0, 5.0, species=["Cu"])
    learner = Learner(initial, run_dir / "learning", LearnSettings(species=("Cu",), seed=seed,
                                                                     refit_iterations=refit_iterations))
    endpoint = Endpoint(unix=f"mtp_demo_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    print(f"fcc Cu, {len(start)} atoms, i-PI NVT at {temperature:.0f} K, {steps} steps of 2 fs; "
          f"MTP level {level} learned on the fly from EMT, starting untrained")
    began = time.perf_counter()
    with IPIProcess(NVT_INPUT, run_dir, endpoint, name="md", total_steps=steps, seed=31415 + seed,
                    temperature=temperature) as ipi:
        thread = DriverThread(make_driver(learner, start), endpoint)
        thread.start()
        code = ipi.wait(3600)
        thread.result(60)
    print(f"i-PI finished; final refit of all parameters on the {len(learner.training)} reference structures ...",
          flush=True)
    learner.close()
    wall = time.perf_counter() - began
    if code != 0:
        raise RuntimeError(f"i-PI failed (exit {code}); see {ipi.log_path}")
    training = learner.training
    write_cfg(run_dir / "training.cfg", training, species=["Cu"])
    from ase.io import write

    write(run_dir / "training.extxyz", training)
    calculator = MTPCalculator(learner.mtp, species=["Cu"])
    errors = []
    for snapshot in fresh_snapshots(start, temperature, 10, seed + 100):
        reference = snapshot.get_forces()
        snapshot.calc = calculator
        errors.append(snapshot.get_forces() - reference)
    force_rmse = float(np.sqrt(np.mean(np.square(errors))))
    summary = dict(learner.summary(), force_rmse=force_rmse, wall_s=wall, run_dir=str(run_dir))
    print(f"{summary['steps']} force requests, {summary['reference_calls']} EMT reference calls, "
          f"{summary['retrainings']} retrainings, model version {summary['model_version']}")
    print(f"time held per retraining: median {summary['held_median_s']:.2f} s, max {summary['held_max_s']:.2f} s; "
          f"wall {wall:.0f} s")
    print(f"final MTP vs EMT on 10 fresh {temperature:.0f} K snapshots: force RMSE {force_rmse:.4f} eV/Å")
    print(f"outputs in {run_dir}: learning/journal.jsonl (event log), training.cfg and training.extxyz "
          f"(training set), learning/final.mtp (the final model), learning/models/ (every version), md.* (i-PI output)")
    return summary
