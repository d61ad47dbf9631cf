"""A `Potential` (see `mtp_driver.ipi.potential`) answered by a learner in another process: each
`compute` goes to a learner server (`server.py`, `mtp-driver learn-server`) over its UNIX socket.

`mtp-driver serve --learner PATH` serves it to i-PI like any potential, so several driver
processes (the beads of a PIMD run, independent MD runs) share one learner.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np

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
    the rest of a reply must come within `payload_timeout` seconds."""

    def __init__(self, address: str | os.PathLike, connect_timeout: float = 60.0, payload_timeout: float = 30.0):
        self.address = str(address)
        self.payload_timeout = payload_timeout
        self.lock = threading.Lock()  # one request at a time on the connection
        self.sock = _connect(self.address, connect_timeout)
        try:
            welcome = self._exchange({"type": "hello", "protocol": PROTOCOL, "pid": os.getpid()}, {})[0]
        except LearnerConnectionError:
            self.close()
            raise
        if welcome.get("type") != "welcome":
            self.close()
            raise LearnerConnectionError(f"{self.address} answered hello with {welcome.get('type')!r}: "
                                         f"{welcome.get('message', 'not a learner server')}")

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

    def close(self) -> None:
        self.sock.close()

    def _exchange(self, header: dict, arrays: dict) -> tuple[dict, dict]:
        with self.lock:
            try:
                send_frame(self.sock, header, arrays)
                return receive_frame(self.sock, self.payload_timeout)
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
