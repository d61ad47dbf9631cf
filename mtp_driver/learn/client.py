"""A `Potential` (see `mtp_driver.potential`) answered by a learner in another process: each
`compute` goes to a learner server (`server.py`, `mtp-driver learn-server`) over its UNIX socket,
or over TCP (`tcp://HOST:PORT`) with the run's token (`auth.py`) from another machine.

`mtp-driver serve --learner PATH` serves it to i-PI like any potential, so several driver
processes (the beads of a PIMD run, independent MD runs) share one learner.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import numpy as np

from .auth import TokenError, new_nonce, parse_tcp_address, proof, proves, read_token
from .frames import PROTOCOL, ConnectionClosed, FrameError, receive_frame, send_frame


class RemoteLearnerError(RuntimeError):
    """The learner raised an error on this request (e.g. `UnphysicalStructure`, `LearningStopped`);
    `kind` is the learner's exception class name, the message is the learner's own."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class LearnerConnectionError(ConnectionError):
    """The learner server cannot be reached, left, or does not speak the learner protocol."""


class LearnerClient:
    """Forwards `compute(positions Å, cell Å, pbc, numbers)` to the learner server at `address`
    and returns its `(energy eV, forces eV/Å, virial eV, extras)`.

    Connects at construction, retrying for `connect_timeout` seconds (the server may still be
    starting). Waits as long as the learner holds a request (reference calls and retraining);
    the rest of a reply must come within `payload_timeout` seconds.

    A `tcp://HOST:PORT` address needs `token_file` (a copy of the learner's RUN_DIR/learner.token):
    the walker proves it holds the token and checks that the server does too. `tls_ca`: the server's
    certificate (or its CA) for TLS; without it the connection is not encrypted."""

    def __init__(self, address: str | os.PathLike, connect_timeout: float = 60.0, payload_timeout: float = 30.0,
                 token_file: str | os.PathLike | None = None, tls_ca: str | os.PathLike | None = None):
        self.address = str(address)
        self.payload_timeout = payload_timeout
        self.lock = threading.Lock()  # one request at a time on the connection
        try:
            tcp = parse_tcp_address(self.address)
            secret = None if tcp is None or token_file is None else read_token(token_file)
        except (ValueError, TokenError) as exc:
            raise LearnerConnectionError(str(exc)) from None
        if tcp is not None and secret is None:
            raise LearnerConnectionError(f"the learner at {self.address} is on TCP: give --token-file (a copy of "
                                         "the learner's RUN_DIR/learner.token, mode 0600)")
        if tcp is None:
            self.sock = _connect(self.address, connect_timeout)
        else:
            self.sock = _connect_tcp(tcp, connect_timeout, tls_ca)
        try:
            self._greet(secret)
        except LearnerConnectionError:
            self.close()
            raise

    def _greet(self, secret: bytes | None) -> None:
        hello = {"type": "hello", "protocol": PROTOCOL, "pid": os.getpid()}
        if secret is not None:
            challenge = self._receive()[0]
            if challenge.get("type") != "challenge" or not isinstance(challenge.get("nonce"), str):
                raise LearnerConnectionError(f"{self.address} did not send a learner challenge: not a learner "
                                             "server on TCP")
            hello.update(proof=proof(secret, challenge["nonce"], "walker"), nonce=new_nonce())
        welcome = self._exchange(hello, {})[0]
        if welcome.get("type") != "welcome":
            raise LearnerConnectionError(f"{self.address} answered hello with {welcome.get('type')!r}: "
                                         f"{welcome.get('message', 'not a learner server')}")
        if secret is not None and not proves(secret, hello["nonce"], "server", welcome.get("proof")):
            raise LearnerConnectionError(f"the server at {self.address} does not hold the token given: not this "
                                         "run's learner (a wrong address or token file?)")

    def compute(self, positions, cell, pbc, numbers):
        arrays = dict(positions=np.asarray(positions, dtype=np.float64), cell=np.asarray(cell, dtype=np.float64),
                      numbers=np.asarray(numbers, dtype=np.int64))
        header, results = self._exchange({"type": "compute", "pbc": [bool(p) for p in np.broadcast_to(pbc, 3)]},
                                         arrays)
        if header["type"] == "error":
            raise RemoteLearnerError(str(header.get("kind")), str(header.get("message")))
        try:
            if header["type"] != "result":
                raise KeyError(f"a {header['type']!r} message instead of a result")
            return float(header["energy"]), results["forces"], results["virial"], dict(header["extras"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LearnerConnectionError(f"bad answer from the learner at {self.address}: {exc}") from None

    def compute_batch(self, structures) -> list:
        """`compute` of several (positions, cell, pbc, numbers) of one atom count in one message: the learner grades
        them together and learns once for all of them (the beads of a batched i-PI request)."""
        positions, cells, pbc, numbers = zip(*structures)
        arrays = dict(positions=np.asarray(positions, dtype=np.float64), cells=np.asarray(cells, dtype=np.float64),
                      numbers=np.asarray(numbers, dtype=np.int64))
        header, results = self._exchange(
            {"type": "compute_batch", "pbc": [[bool(p) for p in np.broadcast_to(each, 3)] for each in pbc]}, arrays)
        if header["type"] == "error":
            raise RemoteLearnerError(str(header.get("kind")), str(header.get("message")))
        try:
            if header["type"] != "results" or len(header["energies"]) != len(structures):
                raise KeyError(f"a {header['type']!r} message instead of {len(structures)} results")
            return [(float(energy), forces, virial, dict(extras)) for energy, forces, virial, extras
                    in zip(header["energies"], results["forces"], results["virials"], header["extras"], strict=True)]
        except (KeyError, TypeError, ValueError) as exc:
            raise LearnerConnectionError(f"bad answer from the learner at {self.address}: {exc}") from None

    def close(self) -> None:
        self.sock.close()

    def _receive(self) -> tuple[dict, dict]:
        return self._exchange(None, {})

    def _exchange(self, header: dict | None, arrays: dict) -> tuple[dict, dict]:
        """Send `header` with `arrays` (nothing if None) and receive the reply."""
        with self.lock:
            try:
                if header is not None:
                    send_frame(self.sock, header, arrays)
                return receive_frame(self.sock, self.payload_timeout)
            except ssl.SSLError as exc:
                raise _tls_failure(self.address, exc) from None
            except ConnectionClosed:
                raise LearnerConnectionError(
                    f"the learner at {self.address} closed the connection (it was stopped or died; its log says "
                    "why): start `mtp-driver learn-server` again with the same run directory (it resumes from its "
                    "journal), then this driver") from None
            except FrameError as exc:
                raise LearnerConnectionError(f"bad message from the learner at {self.address}: {exc}") from None


def _connect(address: str, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            if time.monotonic() > deadline:
                raise LearnerConnectionError(
                    f"no learner server answered at {address} within {timeout:g} s ({exc.strerror}): start "
                    "`mtp-driver learn-server ... --socket PATH` first, or check the path") from None
            time.sleep(0.2)
        except OSError as exc:  # e.g. permission denied, a path too long: retrying will not help
            sock.close()
            raise LearnerConnectionError(f"cannot connect to the learner at {address}: {exc}") from None


def _connect_tcp(address: tuple[str, int], timeout: float, tls_ca) -> socket.socket:
    host, port = address
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=max(deadline - time.monotonic(), 1.0))
            break
        except (ConnectionRefusedError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise LearnerConnectionError(
                    f"no learner server answered at tcp://{host}:{port} within {timeout:g} s ({exc}): start "
                    "`mtp-driver learn-server ... --listen [HOST:]PORT` first, or check the address") from None
            time.sleep(0.2)
        except OSError as exc:  # e.g. an unknown host: retrying will not help
            raise LearnerConnectionError(f"cannot connect to the learner at tcp://{host}:{port}: {exc}") from None
    if tls_ca is None:
        sock.settimeout(None)
        return sock
    context = ssl.create_default_context(cafile=str(tls_ca))
    context.check_hostname = False  # the token authenticates the server; the certificate is pinned by tls_ca
    try:
        sock.settimeout(max(timeout, 10.0))
        wrapped = context.wrap_socket(sock)
        wrapped.settimeout(None)
        return wrapped
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise _tls_failure(f"tcp://{host}:{port}", exc) from None


def _tls_failure(address: str, exc: Exception) -> LearnerConnectionError:
    return LearnerConnectionError(f"TLS with the learner at {address} failed: {exc} (does the server use TLS, and is "
                                  "--tls-ca its certificate?)")
