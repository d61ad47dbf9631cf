"""Verifying the hull with the reference: every structure the model puts within a window of the hull is
relaxed again with the reference, from the model's relaxed geometry, and the hull is rebuilt with those
energies; repeated while a structure the rebuilt hull brings into the window is still unverified.

Relaxed, not single points: the model's minimum is not the reference's, and a single point there is only an
upper bound of the reference's relaxed energy (and the reference's forces there are not zero). The
relaxation from the model's geometry takes a few reference steps; the answer is then the reference's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from ase import Atoms

from mtp_driver.learn.journal import JournalReader
from mtp_driver.learn.reference import Reference
from mtp_driver.learn.settings import stored_settings

from .hull import Hull, build_hull
from .relax import relax_structure
from .settings import RelaxSettings


class ReferencePotential:
    """A `Potential` over a learning run's `Reference` (an ASE calculator or a command), counting its calls."""

    def __init__(self, reference: Reference):
        self.reference = reference
        self.calls = 0

    def compute(self, positions, cell, pbc, numbers):
        labelled = self.reference.compute(Atoms(numbers, positions=positions, cell=cell, pbc=pbc))
        self.calls += 1
        virial = -labelled.get_stress(voigt=False) * labelled.get_volume() if labelled.pbc.all() else np.zeros((3, 3))
        return labelled.get_potential_energy(), labelled.get_forces(), virial, {"model_version": "reference",
                                                                                 "mtp_grade": None}


class Verification(NamedTuple):
    hull: Hull
    structures: list[Atoms]  # the input, the verified ones replaced by their reference relaxation
    verified: list[bool]
    reference_calls: int  # force calls of the reference relaxations
    rounds: int


def run_reference(run_dir: str | Path) -> Reference:
    """The reference of a learning run, as its settings.json stored it."""
    settings = stored_settings(Path(run_dir) / "settings.json")
    if settings is None:
        raise ValueError(f"{run_dir} has no settings.json: not the run directory of `mtp-driver learn` or `relax --learn`")
    return Reference(**settings["reference"])


def run_energy_error(run_dir: str | Path) -> float:
    """The model's energy error estimate of a learning run, eV/atom, from its final fit (the journal's last
    `validated` event): the held-out results' RMSE of the fit that never saw them, or the kept model's there
    if larger."""
    validated = [event for event in JournalReader(run_dir).events() if event["event"] == "validated"]
    if not validated:
        raise ValueError(f"{run_dir}: no validated final fit in the journal (too few reference results?): give the "
                         "model's energy error with --error")
    last = validated[-1]
    kept = last["refit"] if last["kept"] == "refit" else last["answering"]
    return 1e-3 * max(last["unseen"]["energy_rmse_mev"], kept["energy_rmse_mev"])


def verify_hull(structures: Sequence[Atoms], species: Sequence[str], window: float, reference: Reference,
                settings: RelaxSettings, progress=None) -> Verification:
    """Relax with `reference` every structure within `window` eV/atom of the hull, rebuild, repeat until every
    structure within the window of the rebuilt hull is verified."""
    structures = list(structures)
    verified = [False] * len(structures)
    potential = ReferencePotential(reference)
    rounds = 0
    while True:
        hull = build_hull(structures, species, verified)
        todo = [p.index for p in hull.points if p.above_hull <= window and not verified[p.index]]
        if not todo:
            return Verification(hull, structures, verified, potential.calls, rounds)
        rounds += 1
        for index in todo:
            relaxed = relax_structure(index, structures[index], potential, settings)
            relaxed.atoms.info["verified"] = True
            relaxed.atoms.info["model_energy_per_atom"] = _energy_per_atom(structures[index])
            structures[index] = relaxed.atoms
            verified[index] = True
            if progress is not None:
                progress(relaxed)


def _energy_per_atom(atoms: Atoms) -> float:
    return float(atoms.get_potential_energy() / len(atoms))


def verification_summary(verification: Verification, model: Hull) -> dict:
    """The model's hull against the verified one: formation-energy errors of the verified structures (meV/atom,
    model minus reference), the hull's members before and after."""
    before = {p.index: p for p in model.points}
    errors = [1e3 * (before[p.index].formation_energy - p.formation_energy) for p in verification.hull.points
              if p.verified and p.index in before]
    return dict(verified=sum(verification.verified), reference_calls=verification.reference_calls,
                rounds=verification.rounds,
                formation_energy_error_mev_max=max(map(abs, errors), default=0.0),
                formation_energy_error_mev_mean=float(np.mean(errors)) if errors else 0.0,
                hull_model=sorted(p.index for p in model.on_hull()),
                hull_verified=sorted(p.index for p in verification.hull.on_hull()))
