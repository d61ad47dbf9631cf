"""Process groups of a learning run, so that nothing a reference call starts outlives the learner.

A reference command runs in a session of its own (`start_new_session`): the terminal's Ctrl-C does
not reach it, and it is stopped as a whole (an `mpirun` with its ranks, a `sh -c` with its children):
SIGTERM to the group, `GRACE_SECONDS`, then SIGKILL. Each pool worker leads a group of its own too.
Every such group is recorded while it runs as an empty file RUN/processes/PGID-STARTTIME-BOOTID (the
leader's start time from /proc and the boot id: a recycled PID is never taken for one of ours).

Recorded groups are killed by a stop of the learner, by the `Reaper` when the learner dies (even by
kill -9), and, should the reaper have died with it, by the next learner on the same run directory.
Linux only (/proc). Run as a script (`python -I processes.py DIRECTORY`) this module is the reaper:
it imports nothing but the standard library.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

GRACE_SECONDS = 3.0  # between SIGTERM and SIGKILL: time for mpirun to take its ranks down
POLL_SECONDS = 0.05


class Group(NamedTuple):
    """A process group we started, named for good: its id (its leader's PID), the leader's start time
    (clock ticks after boot) and the boot id."""

    pgid: int
    start_time: int
    boot_id: str

    @classmethod
    def led_by(cls, pid: int) -> Group:
        return cls(pid, _read_stat(pid).start_time, _boot_id())

    @classmethod
    def from_name(cls, name: str) -> Group:
        pgid, start_time, boot_id = name.split("-", 2)
        return cls(int(pgid), int(start_time), boot_id)

    @property
    def name(self) -> str:
        return f"{self.pgid}-{self.start_time}-{self.boot_id}"

    def runs(self, processes: dict[int, _Stat]) -> bool:
        """Whether one of `processes` (`_running_processes()`) belongs to this group; never once its id
        names another group."""
        if self.boot_id != _boot_id():
            return False
        leader = processes.get(self.pgid)
        if leader is not None and leader.start_time != self.start_time:
            return False  # the PID was recycled: the kernel frees a group's id only once the group is empty
        return any(stat.pgrp == self.pgid and stat.state != "Z" for stat in processes.values())


class _Stat(NamedTuple):
    state: str
    pgrp: int
    start_time: int


def _read_stat(pid: int) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes().decode("latin-1")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return _Stat(fields[0], int(fields[2]), int(fields[19]))


def _running_processes() -> dict[int, _Stat]:
    stats = {int(name): _read_stat(int(name)) for name in os.listdir("/proc") if name.isdigit()}
    return {pid: stat for pid, stat in stats.items() if stat is not None}


@functools.cache
def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _alive(groups: list[Group]) -> list[Group]:
    processes = _running_processes()
    return [group for group in groups if group.runs(processes)]


def kill_groups(groups: list[Group]) -> None:
    """SIGTERM to every group, `GRACE_SECONDS` for them to end, then SIGKILL to what is left."""
    for number in (signal.SIGTERM, signal.SIGKILL):
        alive = _alive(groups)
        for group in alive:
            try:
                os.killpg(group.pgid, number)
            except ProcessLookupError:
                pass  # ended meanwhile
        deadline = time.monotonic() + GRACE_SECONDS
        while alive and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            alive = _alive(alive)
        if not alive:
            return


@dataclass(frozen=True)
class Groups:
    """The record of the process groups a learner runs, one empty file per group in `directory`;
    picklable, so pool workers record theirs in the same place."""

    directory: Path

    def add(self, group: Group) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / group.name).touch()

    def remove(self, group: Group) -> None:
        (self.directory / group.name).unlink(missing_ok=True)

    def kill_all(self) -> None:
        """Kill every recorded group that still runs, and forget them all."""
        paths = sorted(self.directory.iterdir()) if self.directory.is_dir() else []
        kill_groups([Group.from_name(path.name) for path in paths])
        for path in paths:
            path.unlink(missing_ok=True)


def run_command(argv: list[str], cwd: Path, timeout: float | None, stdout, stderr, groups: Groups | None) -> int:
    """Runs `argv` in `cwd` in a session of its own, output to the files `stdout` and `stderr`, recorded
    in `groups` while it runs; returns its exit status (negative: the signal that killed it). What is
    left of its group when it ends is killed; after `timeout` s all of it is, and TimeoutExpired raised."""
    process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                               start_new_session=True)
    group = Group.led_by(process.pid)
    try:
        if groups is not None:
            groups.add(group)
        return process.wait(timeout)
    finally:
        kill_groups([group])  # background children, an mpirun's ranks; everything after a timeout or a stop
        process.wait()
        if groups is not None:
            groups.remove(group)


class Reaper:
    """A small process that kills every group recorded in `groups` once the learner is gone, even by
    kill -9: it waits for the end of a pipe that only the learner holds (the kernel closes it)."""

    def __init__(self, groups: Groups):
        read_end, self._pipe = os.pipe()  # non-inheritable: no program the learner starts holds it
        try:
            # its own session: the terminal's Ctrl-C is the learner's to handle
            self._process = subprocess.Popen([sys.executable, "-I", __file__, str(groups.directory)],
                                             stdin=read_end, start_new_session=True)
        finally:
            os.close(read_end)

    def close(self) -> None:
        """After the learner has stopped its groups: the reaper finds none and exits."""
        os.close(self._pipe)
        self._process.wait()


if __name__ == "__main__":
    sys.stdin.buffer.read()  # returns at end of file: the learner closed the pipe or died
    Groups(Path(sys.argv[1])).kill_all()
