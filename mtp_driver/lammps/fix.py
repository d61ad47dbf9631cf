"""An MTP answering a LAMMPS `fix external ... pf/callback` on every MPI rank.

Each rank computes the site energies of its owned atoms from them and their ghost copies (a shell one cutoff + a
margin for motion deep); the forces these put on ghost copies are sent to the ranks owning the originals
(`GhostFolding`: LAMMPS's own reverse communication runs before a fix's callback). The energy is summed over the
ranks here, and so is the virial: LAMMPS takes the fix's global energy and virial as the whole system's
(measured: a rank's own share came out as 1/ranks of the total)."""

from __future__ import annotations

import numpy as np

from mtp_driver.calculator import MTPCalculator

from .ghosts import GhostFolding
from .library import World, box_cell

ERROR_VARIABLE = "mtp_error"  # a fix halt on it ends a run whose callback failed on any rank
GRADE_PROPERTY = "d_mtp_grade"  # per-atom grades (neighbourhood-mode active set), for dump and compute


class MTPFix:
    """Attach `calculator`'s MTP to the `fix ID all external pf/callback 1 1` named `fix_id` of `lmp` (units
    metal). LAMMPS type t is the potential's type t - 1, as with MLIP's pair_style mlip.

    One rank with a cell periodic in all directions evaluates its atoms as a periodic structure (no ghosts).

    With an active set in the calculator, the structure's extrapolation grade is the fix's vector (thermo
    `f_ID[1]`, and `self.grade`): the configuration's grade (cfg mode) or the largest atom's (nbh mode, whose
    per-atom grades are the per-atom property `d_mtp_grade`, e.g. for `dump`).

    `margin` (Å): the ghost shell is cutoff + margin deep; atoms may move margin / 2 between LAMMPS's neighbour
    list builds (its skin / 2 with `neigh_modify check yes`: keep margin >= the `neighbor` skin). The callback
    checks it and stops the run with an error naming what to change if not."""

    def __init__(self, lmp, calculator: MTPCalculator | None, fix_id: str, margin: float = 2.0,
                 world: World | None = None, learning=None):
        if lmp.extract_global("units") != "metal":
            raise ValueError(f"the MTP needs `units metal` (eV, Å); the input has units {lmp.extract_global('units')}")
        self.learning = learning  # a `LammpsLearning`: its model answers, and is the calculator here
        calculator = learning.calculator if learning is not None else calculator
        species = learning.species if learning is not None else calculator.species
        types = lmp.extract_global("ntypes")
        if types > len(species):
            raise ValueError(f"LAMMPS has {types} atom types; the potential has {len(species)} ({', '.join(species)})")
        self.lmp, self.calculator, self.fix_id = lmp, calculator, fix_id
        self.margin = float(margin)
        self.world = world or World()
        self.ghost_cutoff = (learning.cutoff if learning is not None else calculator.mtp.max_dist) + self.margin
        self.error: str | None = None  # what failed, on the rank where it did
        self.failed = False  # on every rank, once the MTP failed on any
        self.calls = 0
        self._listed = np.zeros((0, 3))  # positions of all atoms when LAMMPS last sent ghosts
        self._tags = np.zeros(0, dtype=np.int64)  # and their IDs
        self._folding = GhostFolding(self.world, self._tags, self._tags)
        self.grade: float | None = None  # of the last call, with an active set
        grade_mode = learning.grade_mode if learning is not None else (
            None if calculator.active_set is None else calculator.active_set.mode)
        if grade_mode is not None:
            lmp.fix_external_set_vector_length(fix_id, 1)
            if grade_mode == "nbh":
                lmp.command(f"fix {fix_id}_grades all property/atom {GRADE_PROPERTY}")
        lmp.command(f"comm_modify cutoff {self.ghost_cutoff:.6f}")
        lmp.command(f"fix_modify {fix_id} energy yes virial yes")
        lmp.command(f"variable {ERROR_VARIABLE} internal 0")
        lmp.command(f"fix {fix_id}_halt all halt 1 v_{ERROR_VARIABLE} > 0 error hard")
        lmp.set_fix_external_callback(fix_id, self._callback)

    @property
    def active_set(self):
        return None if self.calculator is None else self.calculator.active_set

    def _callback(self, caller, step, nlocal, tag, x, f):
        if self.learning is not None and self.calculator is None:  # nothing learnt yet: learn from this step first
            self._learn(step)
        if not self.failed:
            self._answer(step, nlocal, f)
        if self.learning is not None and not self.failed and self.learning.wants(self.grade) and self._learn(step):
            self._answer(step, nlocal, f)  # the held step, answered by the new model
        if self.failed:
            f[:] = 0.0
        self.calls += 1

    def _learn(self, step: int) -> bool:
        """Collective: the learner takes this step; whether its model changed (then it answers from now on)."""
        changed, error = self.learning.learn(self.lmp, step)
        if error:
            self._halt(error)
        elif self.learning.calculator is None:
            self._halt(f"step {step}: the learner has no model yet")
        self.calculator = self.learning.calculator
        return changed

    def _halt(self, error: str) -> None:
        """Stop the run at the end of this step, on every rank (all ranks call this together)."""
        self.error, self.failed = self.error or error, True
        if self.world.rank == 0:
            print(f"mtp-driver lammps: {error}", flush=True)
        self.lmp.set_internal_variable(ERROR_VARIABLE, 1.0)

    def _answer(self, step, nlocal, f):
        # an exception would not reach LAMMPS (ctypes prints and drops it): it halts the run on all ranks instead;
        # every rank makes the same collective calls whatever failed, or the others would wait for ever
        decomposed = self._decomposed()
        configuration_rows = decomposed and self.active_set is not None and self.active_set.mode == "cfg"
        # energy, virial xx yy zz xy xz yz, failed ranks, ranks with new ghosts, (cfg grades) the sum of site rows
        totals = np.zeros(9 + (self.calculator.mtp.parameter_count if configuration_rows else 0))
        try:
            result, rows, new_ghosts = self._compute(nlocal, decomposed)
            virial = result.virial
            totals[:7] = [result.energy, virial[0, 0], virial[1, 1], virial[2, 2], virial[0, 1], virial[0, 2],
                          virial[1, 2]]
            totals[8] = new_ghosts
            if configuration_rows:
                totals[9:] = rows.sum(axis=0)
        except Exception as exc:  # noqa: BLE001 - reported on the rank that failed, the run then halts
            result, totals[7] = None, 1.0
            self.error = f"rank {self.world.rank}, step {step}: {exc}"
            print(f"mtp-driver lammps: {self.error}", flush=True)
        totals = self.world.sum(totals)
        if totals[7]:
            self.failed = True
            f[:] = 0.0
            self.lmp.set_internal_variable(ERROR_VARIABLE, 1.0)
        else:
            if totals[8]:  # LAMMPS sent new ghosts (to all ranks at once)
                self._folding = GhostFolding(self.world, self._tags[:nlocal], self._tags[nlocal:])
            f[:] = result.forces if len(result.forces) == nlocal else self._folding.fold(result.forces)
            self.lmp.numpy.fix_external_set_energy_peratom(self.fix_id, result.site_energies)
            if self.active_set is not None:
                self._set_grades(result, rows, totals[9:], nlocal, decomposed)
        self.lmp.fix_external_set_energy_global(self.fix_id, float(totals[0]))
        self.lmp.fix_external_set_virial_global(self.fix_id, totals[1:7].tolist())

    def _decomposed(self) -> bool:
        """Whether this rank holds a domain with ghost copies (not the one periodic cell)."""
        return self.world.size > 1 or not all(self.lmp.extract_box()[5])

    def _compute(self, nlocal: int, decomposed: bool):
        """This rank's MTPResult (forces on its atoms and ghost copies), its site rows (decomposed, with an active
        set) and 1.0 if LAMMPS has sent new ghosts."""
        lmp = self.lmp
        if not decomposed:  # the whole periodic cell is here: no ghost copies needed
            cell, periodic = box_cell(lmp)
            positions = lmp.numpy.extract_atom("x", nelem=nlocal, dim=3)
            types = lmp.numpy.extract_atom("type", nelem=nlocal) - 1
            return self.calculator.evaluate(positions, cell, periodic, types), None, 0.0
        n_atoms = nlocal + lmp.extract_global("nghost")
        positions = lmp.numpy.extract_atom("x", nelem=n_atoms, dim=3)
        new_ghosts = self._check_ghosts(positions, lmp.numpy.extract_atom("id", nelem=n_atoms), nlocal)
        types = lmp.numpy.extract_atom("type", nelem=n_atoms) - 1
        rows = None if self.active_set is None else np.empty((nlocal, self.calculator.mtp.parameter_count))
        return self.calculator.evaluate_domain(positions, types, nlocal, rows), rows, float(new_ghosts)

    def _set_grades(self, result, rows, row_sum: np.ndarray, nlocal: int, decomposed: bool) -> None:
        """The structure's grade into the fix's vector; atoms' grades (nbh mode) into their property."""
        atom_grades = result.atom_grades
        if not decomposed:
            self.grade = result.grade
        elif self.active_set.mode == "cfg":  # MLIP's configuration row: the mean of all sites' rows
            self.grade = float(self.active_set.row_grades(row_sum / self.lmp.get_natoms())[0])
        else:
            atom_grades = self.active_set.row_grades(rows)
            self.grade = self.world.max(float(atom_grades.max(initial=0.0)))
        self.lmp.fix_external_set_vector(self.fix_id, 1, self.grade)
        if atom_grades is not None:
            self.lmp.numpy.extract_atom(GRADE_PROPERTY, nelem=nlocal)[:] = atom_grades

    def _check_ghosts(self, positions: np.ndarray, tags: np.ndarray, nlocal: int) -> bool:
        """Whether LAMMPS has sent new ghosts (then keep their IDs and positions); otherwise refuse atoms that moved
        more than margin / 2 since: the ghost shell could then miss a neighbour of an owned atom."""
        if self.lmp.extract_setting("neigh_ago") == 0 or not self._folding.matches(nlocal, len(tags) - nlocal):
            if len(tags) and tags.min() < 1:
                raise ValueError("the MTP needs atom IDs to match ghost atoms with their originals (atom_modify id yes)")
            self._tags, self._listed = tags.copy(), positions.copy()
            return True
        moved = np.einsum("ia,ia->i", positions - self._listed, positions - self._listed).max(initial=0.0)
        if moved > (0.5 * self.margin) ** 2:
            raise RuntimeError(f"an atom moved {np.sqrt(moved):.3f} Å since LAMMPS's last neighbour list build, "
                               f"more than half the MTP's ghost margin ({self.margin} Å): use a `neighbor` skin "
                               f"<= {self.margin} Å with `neigh_modify check yes`, or a larger margin")
        return False
