"""The mlearn benchmark data (Zuo et al., J. Phys. Chem. A 124, 731 (2020)) as `ase.Atoms`.

Each file is a JSON list (optionally xz-compressed) of pymatgen structures with DFT outputs:
``energy`` (eV, whole cell), ``forces`` (eV/Å) and ``virial_stress`` (kbar, VASP sign: positive
under compression). The order of the shear components of ``virial_stress`` differs between the
elements (checked on the strained ``Elastic`` cells, see the data's SOURCE.md): Li, Si and Ge use
VASP's xy yz zx, Cu, Ni and Mo have xy zx yz.
"""

from __future__ import annotations

import json
import lzma
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

# positions of ASE's Voigt components (xx yy zz yz xz xy) in each element's virial_stress
_VASP_ORDER = (0, 1, 2, 4, 5, 3)  # file: xx yy zz xy yz zx
_SWAPPED_ORDER = (0, 1, 2, 5, 4, 3)  # file: xx yy zz xy zx yz
VIRIAL_STRESS_ORDER = {"Li": _VASP_ORDER, "Si": _VASP_ORDER, "Ge": _VASP_ORDER,
                       "Cu": _SWAPPED_ORDER, "Ni": _SWAPPED_ORDER, "Mo": _SWAPPED_ORDER}
KBAR = 0.1 * GPa  # eV/Å^3


def read_mlearn(path: str | os.PathLike) -> list[Atoms]:
    """Configurations of an mlearn ``*.json`` or ``*.json.xz`` file with energy, forces and ASE
    stress (eV/Å^3, tensile positive, Voigt xx yy zz yz xz xy) attached; ``info`` keeps the
    group and description."""
    path = Path(path)
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        entries = json.load(handle)
    return [_atoms(entry, path, index) for index, entry in enumerate(entries)]


def _atoms(entry: dict, path: Path, index: int) -> Atoms:
    structure = entry["structure"]
    sites = structure["sites"]
    atoms = Atoms(
        symbols=[site["species"][0]["element"] for site in sites],
        positions=np.array([site["xyz"] for site in sites], dtype=np.float64),
        cell=np.array(structure["lattice"]["matrix"], dtype=np.float64),
        pbc=True,
    )
    outputs = entry["outputs"]
    element = atoms.get_chemical_symbols()[0]
    if element not in VIRIAL_STRESS_ORDER:
        raise ValueError(f"{path}: configuration {index} is {element}, whose mlearn stress order is unknown")
    stress = -np.asarray(outputs["virial_stress"], dtype=np.float64)[list(VIRIAL_STRESS_ORDER[element])] * KBAR
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(outputs["energy"]), free_energy=float(outputs["energy"]),
        forces=np.array(outputs["forces"], dtype=np.float64), stress=stress,
    )
    atoms.info.update(group=entry.get("group", ""), description=entry.get("description", ""))
    return atoms
