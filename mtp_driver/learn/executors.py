"""Where reference calls run: the learner's own process pool ("local"), a running Dask scheduler
("dask://HOST:PORT"), or any `concurrent.futures.Executor` a factory returns ("module:callable", e.g.
one that starts dask-jobqueue's SLURMCluster, Parsl's ParslPoolExecutor, executorlib or submitit).

Attempts on such an executor run `attempts.remote_attempt` on its workers: the functions, the
`Reference` settings and the structures travel the executor's own way (Dask and Parsl pickle them),
so its workers and scheduler must be the user's own (secure Dask with its TLS settings off a
private network). mtp-driver must be installed where the workers run.
"""

from __future__ import annotations

import importlib
import re
from concurrent.futures import Executor
from typing import Callable, NamedTuple

LOCAL = "local"
DASK = "dask://"
FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
CONNECT_TIMEOUT = 30.0  # s to reach a Dask scheduler


class OpenExecutor(NamedTuple):
    """An executor the learner submits attempts to, and how to let go of it at the end."""

    spec: str
    executor: Executor
    close: Callable[[], None]


def check_executor_spec(spec: str) -> None:
    """Refuse a spec that names no executor (before anything is started)."""
    if spec != LOCAL and not (spec.startswith(DASK) and ":" in spec[len(DASK):]) and not FACTORY.fullmatch(spec):
        raise ValueError(f"executor {spec!r}: expected 'local', 'dask://HOST:PORT' (a running Dask scheduler) or "
                         "'module:callable' (a factory returning a concurrent.futures.Executor)")


def open_executor(spec: str) -> OpenExecutor | None:
    """The executor `spec` names, connected; None for the local process pool."""
    check_executor_spec(spec)
    if spec == LOCAL:
        return None
    if spec.startswith(DASK):
        return _dask(spec)
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"executor {spec!r}: cannot import {name} from {module} ({exc})") from None
    executor = factory()
    if not isinstance(executor, Executor):
        raise ValueError(f"executor {spec!r}: {spec}() returned a {type(executor).__name__}, not a "
                         "concurrent.futures.Executor")
    return OpenExecutor(spec, executor, lambda: executor.shutdown(wait=False))


def _dask(spec: str) -> OpenExecutor:
    try:
        from distributed import Client
    except ImportError:
        raise ValueError(f"executor {spec!r} needs Dask: pip install 'mtp-driver[cluster]' (or distributed)") from None
    address = "tcp://" + spec[len(DASK):]
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except OSError as exc:
        raise ValueError(f"no Dask scheduler answered at {address} within {CONNECT_TIMEOUT:g} s ({exc}): start one "
                         "(dask scheduler, or dask-jobqueue's SLURMCluster) and give its address") from None
    # pure=False: a retried call must run again, not return the failed attempt Dask remembers under its key
    executor = client.get_executor(pure=False)

    def close() -> None:
        executor.shutdown(wait=False)
        client.close()

    return OpenExecutor(spec, executor, close)
