"""An exclusive lock that lasts as long as its process: one writer per run directory or socket path."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import TextIO


class InUseError(OSError):
    """Another process holds the lock."""


def hold_exclusive(lock_path: str | os.PathLike, busy: str) -> TextIO:
    """Lock `lock_path` (created if missing) with flock, and write the holder's process and host into it.

    The lock lasts until the returned file is closed or the process dies (the kernel releases it, so a
    killed run leaves nothing to clean up). If another process holds it, raises InUseError with
    `busy`, the holder and what to do."""
    lock_path = Path(lock_path)
    try:  # O_NOFOLLOW: a symbolic link planted at the lock path must not make us write through it
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise OSError(exc.errno, f"the lock file {lock_path} is a symbolic link: remove it (nobody should have "
                                 "placed one there) and start again") from None
    handle = os.fdopen(descriptor, "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InUseError(f"{busy} ({holder}; lock file {lock_path}): stop that one first, or choose another path") \
            from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle
