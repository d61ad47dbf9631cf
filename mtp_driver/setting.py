"""A field of a settings dataclass that carries its own help: the command line's option help comes from it."""

from __future__ import annotations

from dataclasses import field


def setting(default, help: str, **metadata):
    """A dataclass field with `default` and `help` (and e.g. `choices`) in its metadata."""
    return field(default=default, metadata=dict(help=help, **metadata))
