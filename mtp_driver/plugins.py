"""User-supplied objects named by import path ('package.module:Name'): calculators, potentials."""

from __future__ import annotations

import importlib


def import_object(path: str):
    """'package.module:Name' -> the object; ValueError with a message that says what to fix."""
    module_name, sep, name = path.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for {path!r}: {exc}") from exc
    try:
        return getattr(module, name)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no {name!r} (from {path!r})") from None


def construct(path: str, *args, **kwargs):
    """Import `path` and call it; ValueError naming the path when either step fails."""
    factory = import_object(path)
    try:
        return factory(*args, **kwargs)
    except Exception as exc:
        raise ValueError(f"could not create {path}: {type(exc).__name__}: {exc}") from exc
