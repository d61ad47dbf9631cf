"""The i-PI socket protocol, client side: headers, framing, addresses and connecting.

Every message starts with a 12-byte upper-case ASCII header, space padded; numbers are
native-endian float64 / int32.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

HEADER_LEN = 12
# ASE hard-codes this prefix and it is i-PI's default: a socket NAME lives at /tmp/ipi_NAME
DEFAULT_UNIX_PREFIX = "/tmp/ipi_"


def header(name: str) -> bytes:
    return name.upper().ljust(HEADER_LEN).encode("ascii")


STATUS, INIT, POSDATA, GETFORCE, EXIT = map(header, ("STATUS", "INIT", "POSDATA", "GETFORCE", "EXIT"))
NEEDINIT, READY, HAVEDATA, FORCEREADY = map(header, ("NEEDINIT", "READY", "HAVEDATA", "FORCEREADY"))
# POSDATA before the positions: cell h (9 f64), its inverse (9 f64), natoms (int32)
POSDATA_PREFIX = 18 * 8 + 4


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens: a UNIX socket name (file PREFIX+NAME) or a TCP host and port."""

    unix: str | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    prefix: str = DEFAULT_UNIX_PREFIX

    def __post_init__(self):
        if (self.unix is None) == (self.port is None):
            raise ValueError("give exactly one of a UNIX socket name or a TCP port")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"TCP port {self.port} is outside 1..65535")

    @property
    def path(self) -> str:
        return f"{self.prefix}{self.unix}"

    def __str__(self) -> str:
        return f"unix socket {self.path}" if self.unix is not None else f"tcp {self.host}:{self.port}"

    def cli_args(self) -> list[str]:
        if self.unix is not None:
            return ["--unix", self.unix, "--socket-prefix", self.prefix]
        return ["--host", self.host, "--port", str(self.port)]

    def open(self) -> socket.socket:
        """One connection attempt; raises OSError if nobody listens yet."""
        if self.unix is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = self.path
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # without it every small reply waits for Nagle's timer (~40 ms per request)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            target = (self.host, self.port)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        return sock


class ConnectTimeout(OSError):
    """Nobody accepted a connection within the retry budget."""


class Stopped(Exception):
    """A stop was requested while waiting."""


def connect(endpoint: Endpoint, timeout: float, stopped: Callable[[], bool] = lambda: False):
    """Connects with retries: i-PI announces its socket before it listens, so early tries fail.

    Returns (socket, attempts); raises `Stopped` as soon as `stopped()` is true.
    """
    deadline = time.monotonic() + timeout
    delay, attempts = 0.05, 0
    while True:
        attempts += 1
        try:
            return endpoint.open(), attempts
        except (ConnectionRefusedError, FileNotFoundError, ConnectionResetError) as exc:
            last = exc
        except OSError as exc:
            # e.g. an unresolvable host name: retrying will not help
            raise ConnectTimeout(f"cannot connect to {endpoint}: {exc}") from exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectTimeout(
                f"no server accepted a connection on {endpoint} within {timeout:g} s "
                f"({attempts} attempts; last error: {last.strerror or last}); start i-PI "
                "(or the ASE SocketIOCalculator) first, check the socket name/port and prefix, "
                "or allow more time with --connect-timeout"
            ) from last
        if stopped():
            raise Stopped
        time.sleep(min(delay, remaining))
        if stopped():
            raise Stopped
        delay = min(delay * 1.5, 0.5)


class Truncated(Exception):
    """The server closed or went silent in the middle of a message."""


def recv_exact(sock: socket.socket, buf: memoryview, timeout: float) -> None:
    """Fills `buf` completely (a stream may deliver a message in pieces), waiting at most
    `timeout` seconds for missing pieces. One syscall when the data is already there."""
    got, size, deadline = 0, len(buf), None
    while got < size:
        try:
            n = sock.recv_into(buf[got:], size - got, socket.MSG_DONTWAIT)
        except BlockingIOError:
            deadline = deadline or time.monotonic() + timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                raise Truncated(f"only {got} of {size} bytes arrived before the {timeout:g} s timeout") from None
            continue
        if n == 0:
            raise Truncated(f"connection closed after {got} of {size} bytes")
        got += n


def pack_forceready(energy: float, forces: np.ndarray, virial: np.ndarray, extras: str) -> bytes:
    """FORCEREADY and its whole payload as one buffer, so it goes out in one write."""
    extra = extras.encode("utf-8")
    return b"".join(
        (
            FORCEREADY,
            np.float64(energy).tobytes(),
            np.int32(len(forces)).tobytes(),
            np.ascontiguousarray(forces, dtype=np.float64).tobytes(),
            np.ascontiguousarray(virial, dtype=np.float64).tobytes(),
            np.int32(len(extra)).tobytes(),
            extra,
        )
    )


def pack_forceready_batch(results: list[tuple[float, np.ndarray, np.ndarray, str]]) -> bytes:
    """FORCEREADY of a batched request (i-PI's `batch_size`): every energy, the atom count, every force
    array, every virial, then each structure's extras string, as one buffer."""
    extras = [extra.encode("utf-8") for *_, extra in results]
    return b"".join(
        (
            FORCEREADY,
            np.array([energy for energy, *_ in results], dtype=np.float64).tobytes(),
            np.int32(len(results[0][1])).tobytes(),
            *(np.ascontiguousarray(forces, dtype=np.float64).tobytes() for _, forces, _, _ in results),
            *(np.ascontiguousarray(virial, dtype=np.float64).tobytes() for _, _, virial, _ in results),
            *(np.int32(len(extra)).tobytes() + extra for extra in extras),
        )
    )
