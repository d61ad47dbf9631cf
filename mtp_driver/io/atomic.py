"""Writing a file so that it is never seen half-written, even after a crash or Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator, TextIO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False) -> Iterator[TextIO | BinaryIO]:
    """Open a text (or, with ``binary``, a byte) stream whose content replaces ``path`` only when the
    block ends without error.

    The text goes to a temporary file in the same directory, which is flushed, fsynced and
    renamed over ``path`` (``os.replace`` is atomic within one file system). On an exception the
    temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    # A unique name next to the target: same file system for os.replace, and the umask applies.
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        text_options = {} if binary else {"encoding": "utf-8", "newline": "\n"}
        with open(temporary, "xb" if binary else "x", **text_options) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; other systems cannot open a directory)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
