"""The driver loop: one connection to an i-PI (or ASE) server, answering force requests.

Stateless across beads: each POSDATA is computed on arrival and answered at GETFORCE, whichever
bead it is; with i-PI's batched requests (`batch_size` announced in INIT) one POSDATA carries several
structures, computed in one call and answered in i-PI's batched layout. Handles i-PI's consolidated order (POSDATA then GETFORCE, no STATUS between) and
ASE's (STATUS before each). A stop (signal or `stop()`) shuts the socket for reading: what the
server already sent is still answered, anything later is refused by the kernel (on UNIX sockets
the server sees a broken pipe and hands the request to another driver), then the loop ends.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import numpy as np
from ase import Atoms

from mtp_driver.ipi import protocol as wire
from mtp_driver.ipi.evaluate import DriverError, Evaluator, read_template, template_label
from mtp_driver.potential import Potential
from mtp_driver.ipi.protocol import Endpoint
from mtp_driver.ipi.sources import PotentialSpec

log = logging.getLogger("mtp_driver.ipi")

# after a fatal error: how long to keep reading what the server already sent
DRAIN_SECONDS = 1.0
# an INIT string longer than this is a malformed message, not a parameter string
MAX_INIT_BYTES = 1 << 20
MAX_BATCH = 4096  # structures per batched request: more is a malformed INIT, not a PIMD run


@dataclass(frozen=True)
class Summary:
    requests: int
    compute_seconds: float
    wall_seconds: float
    reason: str

    def __str__(self) -> str:
        per = 1e3 * self.compute_seconds / self.requests if self.requests else 0.0
        return (
            f"served {self.requests} requests in {self.wall_seconds:.1f} s "
            f"({per:.3f} ms computing each); {self.reason}"
        )


class Driver:
    """Serves one `Evaluator` to one server connection at a time."""

    def __init__(self, evaluator: Evaluator, *, payload_timeout: float = 30.0):
        self.evaluator = evaluator
        # a header may take forever (i-PI waits for other work), the rest of a message may not
        self.payload_timeout = payload_timeout
        self.stop_reason: str | None = None
        self._sock: socket.socket | None = None
        self._requests, self._compute_before = 0, 0.0
        self.batch_size = 1  # structures per request: i-PI announces more in INIT (<ffsocket> batch_size)

    def stop(self, reason: str = "stop requested") -> None:
        """Ends `serve` once the requests already received are answered; safe from signal
        handlers and other threads."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._refuse_more()

    def _refuse_more(self) -> None:
        sock = self._sock
        if sock is not None and self.stop_reason is not None:
            try:
                # wakes a blocked recv, which then returns what is buffered and finally EOF
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already closed

    def serve(self, endpoint: Endpoint, connect_timeout: float = 60.0) -> Summary:
        """Connects (with retries), answers requests until the server leaves or a stop; raises
        `DriverError` on anything fatal, after draining the connection."""
        start = time.monotonic()
        self._requests, self._compute_before = 0, self.evaluator.compute_seconds
        log.info("connecting to %s", endpoint)
        try:
            sock, attempts = wire.connect(endpoint, connect_timeout, lambda: self.stop_reason is not None)
        except wire.Stopped:
            return self._finish(start, f"{self.stop_reason} before a server appeared")
        except wire.ConnectTimeout as exc:
            log.error("fatal: %s", exc)
            raise DriverError(str(exc)) from None
        log.info("connected to %s after %d attempt(s)", endpoint, attempts)
        self._sock = sock
        self._refuse_more()  # a stop that came while connecting
        with sock:
            try:
                reason = self._session(sock)
            except (BrokenPipeError, ConnectionResetError):
                reason = "the server closed the connection while we answered"
            except DriverError as exc:
                log.error("fatal: %s", exc)
                _drain(sock)
                log.info("%s", self._summary(start, "stopped by the error above"))
                raise
            finally:
                self._sock = None
        return self._finish(start, reason)

    def _summary(self, start: float, reason: str) -> Summary:
        computed = self.evaluator.compute_seconds - self._compute_before
        return Summary(self._requests, computed, time.monotonic() - start, reason)

    def _finish(self, start: float, reason: str) -> Summary:
        summary = self._summary(start, reason)
        log.info("%s", summary)
        return summary

    def _session(self, sock: socket.socket) -> str:
        head = memoryview(bytearray(wire.HEADER_LEN))
        prefix = memoryview(bytearray(wire.POSDATA_PREFIX))
        positions = memoryview(bytearray(0))
        status, reply = wire.NEEDINIT, None
        while True:
            try:
                # blocking without a timeout: i-PI may take any time before its next request
                got = sock.recv_into(head, wire.HEADER_LEN)
            except ConnectionResetError:
                return "the server reset the connection"
            if got == 0:
                return self.stop_reason or "the server closed the connection"
            self._receive(sock, head[got:], "header")
            msg = head.tobytes()
            if msg == wire.STATUS:
                sock.sendall(status)
            elif msg == wire.POSDATA and self.batch_size > 1:
                reply = self._batch(sock)
                status = wire.HAVEDATA
            elif msg == wire.POSDATA:
                self._receive(sock, prefix, "POSDATA")
                h = np.frombuffer(prefix, np.float64, 9)
                natoms = int(np.frombuffer(prefix, np.int32, 1, offset=144)[0])
                self.evaluator.check_natoms(natoms)
                if len(positions) != 24 * natoms:
                    positions = memoryview(bytearray(24 * natoms))
                self._receive(sock, positions, "POSDATA")
                reply = wire.pack_forceready(*self.evaluator(h, np.frombuffer(positions, np.float64)))
                status = wire.HAVEDATA
            elif msg == wire.GETFORCE:
                if reply is None:
                    raise DriverError("the server asked for forces (GETFORCE) before sending positions")
                sock.sendall(reply)
                self._requests += self.batch_size
                reply, status = None, wire.READY
            elif msg == wire.INIT:
                self._read_init(sock)
                status = wire.READY
            elif msg == wire.EXIT:
                return "the server sent EXIT"
            else:
                raise DriverError(
                    f"unknown message header {msg!r}: the server does not speak the i-PI socket "
                    "protocol (or uses i-PI's shm mode, which is not supported: use mode unix or inet)"
                )

    def _batch(self, sock: socket.socket) -> bytes:
        """A batched POSDATA (the atom count, every structure's cell h and its inverse, every structure's
        positions) answered as one batched FORCEREADY, ready to send."""
        count = memoryview(bytearray(4))
        self._receive(sock, count, "POSDATA")
        natoms = int(np.frombuffer(count, np.int32)[0])
        self.evaluator.check_natoms(natoms)
        cells = memoryview(bytearray(144 * self.batch_size))
        positions = memoryview(bytearray(24 * natoms * self.batch_size))
        self._receive(sock, cells, "POSDATA")
        self._receive(sock, positions, "POSDATA")
        hs = np.frombuffer(cells, np.float64).reshape(self.batch_size, 18)[:, :9]
        return wire.pack_forceready_batch(
            self.evaluator.batch(hs, np.frombuffer(positions, np.float64).reshape(self.batch_size, -1)))

    def _receive(self, sock: socket.socket, buf: memoryview, what: str) -> None:
        try:
            wire.recv_exact(sock, buf, self.payload_timeout)
        except (wire.Truncated, ConnectionResetError) as exc:
            raise DriverError(
                f"the server sent a truncated {what} message ({exc}); "
                "is the server an i-PI server of a compatible version?"
            ) from None

    def _read_init(self, sock: socket.socket) -> None:
        fixed = memoryview(bytearray(8))
        self._receive(sock, fixed, "INIT")
        bead, length = (int(x) for x in np.frombuffer(fixed, np.int32))
        if not 0 <= length <= MAX_INIT_BYTES:
            raise DriverError(f"malformed INIT message: parameter string of {length} bytes")
        text = memoryview(bytearray(length))
        self._receive(sock, text, "INIT")
        params = text.tobytes().decode("utf-8", "replace").strip("\x00 ")
        for token in params.replace(",", " ").split():
            key, _, value = token.partition(":")
            if key == "batch_size":
                try:
                    self.batch_size = int(value)
                except ValueError:
                    self.batch_size = 0
                if not 1 <= self.batch_size <= MAX_BATCH:
                    raise DriverError(f"malformed INIT message: {token!r} is not a batch size of 1 to {MAX_BATCH}")
        batched = f", {self.batch_size} structures per request" if self.batch_size > 1 else ""
        log.info("initialised by the server (bead %d%s%s)", bead, batched,
                 f", parameters {params!r}" if params else "")


def _drain(sock: socket.socket) -> None:
    """Reads what the server already sent before closing: closing on unread data resets the
    connection, and i-PI 3.3.1 hangs forever on a reset after POSDATA."""
    deadline = time.monotonic() + DRAIN_SECONDS
    sock.settimeout(0.1)
    try:
        while time.monotonic() < deadline and sock.recv(1 << 16):
            pass
    except OSError:
        pass


def make_driver(
    spec: PotentialSpec | Potential, template: str | Atoms, *, min_distance: float | None = None, **options
) -> Driver:
    """A ready `Driver` for a potential (or a spec of one) and a template (an ASE-readable path,
    '-' for stdin, or Atoms)."""
    if isinstance(template, Atoms):
        atoms, label = template, "the template"
    else:
        atoms, label = read_template(str(template)), template_label(template)
    potential = spec.build() if isinstance(spec, PotentialSpec) else spec
    evaluator = Evaluator(potential, atoms, min_distance=min_distance, template_name=label)
    return Driver(evaluator, **options)


def run(driver: Driver, endpoint: Endpoint, *, connect_timeout: float = 60.0,
        on_signal: Callable[[], None] | None = None) -> int:
    """Serves in the main thread with SIGTERM/SIGINT as graceful stops, which also call `on_signal`
    (e.g. a learner stopping its reference calls); returns an exit code."""

    def graceful(number, frame):
        driver.stop(f"received {signal.Signals(number).name}")
        if on_signal is not None:
            on_signal()

    handlers = {sig: signal.signal(sig, graceful) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        driver.serve(endpoint, connect_timeout)
    except DriverError:
        return 1
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    return 0


class DriverThread(threading.Thread):
    """Runs a `Driver` in a background thread; `stop()` ends it between requests."""

    def __init__(self, driver: Driver, endpoint: Endpoint, *, connect_timeout: float = 60.0):
        super().__init__(name=f"mtp-driver {endpoint}", daemon=True)
        self.driver, self.endpoint, self.connect_timeout = driver, endpoint, connect_timeout
        self.summary: Summary | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.summary = self.driver.serve(self.endpoint, self.connect_timeout)
        except BaseException as exc:  # handed to the owner by result()
            self.error = exc

    def stop(self) -> None:
        self.driver.stop("stopped by its owner")

    def result(self, timeout: float | None = None) -> Summary:
        """Waits for the thread; returns its summary or raises its error."""
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"the driver thread for {self.endpoint} is still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.summary


def driver_command(spec: PotentialSpec, template: str, endpoint: Endpoint, *options: str) -> list[str]:
    """The `mtp-driver serve` command line (with this interpreter) for a spec and an endpoint."""
    return [
        sys.executable, "-m", "mtp_driver.cli", "serve",
        *spec.cli_args(), "--template", template, *endpoint.cli_args(), *options,
    ]


def start_driver_process(
    spec: PotentialSpec,
    template: str | Atoms,
    endpoint: Endpoint,
    *options: str,
    **popen_kwargs,
) -> subprocess.Popen:
    """Starts `mtp-driver serve` as a separate process; an Atoms template is passed on stdin."""
    if not isinstance(template, Atoms):
        return subprocess.Popen(driver_command(spec, str(template), endpoint, *options), **popen_kwargs)
    import ase.io

    text = io.StringIO()
    ase.io.write(text, template, format="extxyz")
    # our own pipe rather than stdin=PIPE, so the caller can still use communicate()
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(driver_command(spec, "-", endpoint, *options), stdin=read_end, **popen_kwargs)
    finally:
        os.close(read_end)
    with open(write_end, "w") as pipe:
        pipe.write(text.getvalue())
    return proc


def socket_calculator(spec: PotentialSpec, *options: str, name: str | None = None):
    """An ASE `SocketIOCalculator` on a fresh UNIX socket whose client is our driver, started at
    the first calculation; close it (or use `with`) to stop the driver."""
    from ase.calculators.socketio import SocketIOCalculator

    name = name or f"mtp_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    return SocketIOCalculator(launch_client=SocketClientLauncher(spec, *options), unixsocket=name)


class SocketClientLauncher:
    """For `ase.calculators.socketio.SocketIOCalculator(launch_client=...)`: starts our driver
    for the atoms ASE is about to compute, on the socket ASE opened."""

    def __init__(self, spec: PotentialSpec, *options: str, **popen_kwargs):
        self.spec, self.options, self.popen_kwargs = spec, options, popen_kwargs

    def __call__(self, atoms, properties=None, port=None, unixsocket=None) -> subprocess.Popen:
        endpoint = Endpoint(unix=unixsocket) if unixsocket is not None else Endpoint(port=port)
        return start_driver_process(self.spec, atoms, endpoint, *self.options, **self.popen_kwargs)
