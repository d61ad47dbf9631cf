"""The learner server: one learner shared by several walker processes (the driver processes of
PIMD beads, independent MD runs) over a local UNIX socket and, for walkers on other machines,
TCP, one thread per walker.

Each walker is a `LearnerClient` (`client.py`; `mtp-driver serve --learner PATH` serves one to
i-PI). Its requests go to `learner.compute` in the walker's own thread, so everything the learner
does for walker threads holds across processes: candidates are pooled and selected together, no
structure is computed twice, only a walker that extrapolates waits, and the others switch to the
new model at their next request. Messages are `frames.py` frames; errors of the learner are sent
back as error messages and raised in the walker.

On TCP a walker must prove it holds the run's token before anything else (`auth.py`): until then
its frames are small and must all arrive within `handshake_timeout`, and few such connections
may wait at once (`MAX_HANDSHAKES_PER_HOST`, `MAX_HANDSHAKES`), so strangers, garbage and slow connections are
refused (and logged) without taking memory or threads from the walkers. TLS is optional.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import ssl
import stat
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mtp_driver.io.lock import hold_exclusive

from .auth import is_loopback, new_nonce, proof, proves
from .calls import LearningStopped
from .frames import PROTOCOL, ConnectionClosed, FrameError, receive_frame, send_frame

log = logging.getLogger("mtp_driver.learn.server")

MAX_SOCKET_PATH = 107  # bytes: sun_path holds 108 with the terminating NUL
BACKLOG = 64  # walkers that may wait to be accepted (e.g. while the learner restarts)
# TCP connections not yet authenticated at once, from one host and in all; more are closed at once
MAX_HANDSHAKES_PER_HOST, MAX_HANDSHAKES = 4, 64
HANDSHAKE_HEADER_BYTES = 4096  # a hello is small: a stranger cannot make the server allocate more


class Refused(Exception):
    """A TCP connection that did not prove it holds the token."""


class LearnerServer:
    """Listens at `path` (a UNIX socket file of mode 0600, created so that it is never
    connectable by others) and serves a learner to every walker that connects.

    Refuses to start if a server already answers at `path`; replaces a stale socket file; removes
    its own socket when it stops. `stop()` (or, with `stop_when_walkers_leave`, the last walker
    leaving once at least one had connected) stops accepting; requests already received are
    answered, then `serve` returns. A frame's pieces must arrive within `payload_timeout` seconds.

    With `listen` (host, port; port 0: any free one, see `tcp_address`) it also accepts walkers on
    TCP that prove they hold `secret` (see `auth.py`), over TLS if `tls` (a server-side SSL context)."""

    def __init__(self, path: str | os.PathLike, *, stop_when_walkers_leave: bool = False,
                 payload_timeout: float = 30.0, listen: tuple[str, int] | None = None, secret: bytes | None = None,
                 tls: ssl.SSLContext | None = None, handshake_timeout: float = 10.0):
        if listen is not None and not secret:
            raise ValueError("a learner server on TCP needs a secret (RUN_DIR/learner.token) to authenticate walkers")
        self.path = Path(path).absolute()
        self.stop_when_walkers_leave = stop_when_walkers_leave
        self.payload_timeout = payload_timeout
        self.secret, self.tls, self.handshake_timeout = secret, tls, handshake_timeout
        self.stop_reason: str | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # two servers starting at once on one path: the second would replace the first one's socket
        self._path_lock = hold_exclusive(self.path.with_name(self.path.name + ".lock"),
                                         f"another learner server is using the socket path {self.path}")
        self.tcp_listener = None
        try:
            self.listener, self._inode = _listen(self.path)
            if listen is not None:
                self.tcp_listener = socket.create_server(listen, backlog=BACKLOG, family=_family(listen[0]))
        except BaseException:
            if hasattr(self, "listener"):
                self._remove_socket()
            else:
                self._path_lock.close()
            raise
        self.tcp_address = self.tcp_listener.getsockname()[:2] if self.tcp_listener else None
        self._handshakes: dict[str, int] = {}  # host -> TCP connections authenticating now
        self._wake_read, self._wake_write = socket.socketpair()  # wakes the accept loop on stop()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []  # of the connections still open
        self._accepted = 0
        self.walkers = 0  # walkers that said hello, in all
        self.walkers_now = 0
        self.requests = 0
        self._potential = None

    def serve(self, potential) -> None:
        """Answers walkers with `potential.compute_batch` until stopped; returns when every request
        received has been answered. Closing the learner (final refit) is the caller's part."""
        self._potential = potential
        log.info("listening at %s", self.path)
        listeners = [self.listener, self._wake_read]
        if self.tcp_listener is not None:
            host, port = self.tcp_address
            log.info("listening at tcp://%s:%d%s (walkers: serve --learner tcp://HOST:%d --token-file TOKEN)",
                     host, port, " with TLS" if self.tls else "", port)
            if not is_loopback(host):
                log.warning("listening beyond this machine at %s: walkers must present the token%s", host,
                            "" if self.tls else "; the traffic is not encrypted (--tls-cert/--tls-key)")
            listeners.append(self.tcp_listener)
        try:
            while self.stop_reason is None:
                ready = select.select(listeners, [], [])[0]
                if self.stop_reason is not None:
                    break
                if self.listener in ready:
                    self._start_walker(self.listener.accept()[0], None)
                if self.tcp_listener in ready:
                    self._accept_tcp()
        finally:
            self.stop(self.stop_reason or "stopped by an error")
            self._remove_socket()
            with self._lock:
                for connection in self._connections:
                    _refuse_more(connection)
            for thread in self._threads:
                thread.join()
        log.info("served %d requests from %d walker(s); %s", self.requests, self.walkers, self.stop_reason)

    def stop(self, reason: str = "stop requested") -> None:
        """Stop accepting and end `serve` once the requests received are answered; safe from
        signal handlers and other threads."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        log.info("stopping: %s", reason)
        try:
            self._wake_write.send(b"x")
        except OSError:
            pass  # already closed: serve has ended

    def close(self) -> None:
        """Stop (if serving) and remove the socket file."""
        self.stop("closed")
        self._remove_socket()
        self._wake_read.close()
        self._wake_write.close()

    def __enter__(self) -> LearnerServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _remove_socket(self) -> None:
        self.listener.close()
        if self.tcp_listener is not None:
            self.tcp_listener.close()
        try:
            if self.path.stat().st_ino == self._inode:  # not a successor's socket
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._path_lock.close()

    def _accept_tcp(self) -> None:
        connection, peer = self.tcp_listener.accept()
        host = peer[0]
        with self._lock:
            waiting = self._handshakes.get(host, 0)
            full = waiting >= MAX_HANDSHAKES_PER_HOST or sum(self._handshakes.values()) >= MAX_HANDSHAKES
            if not full:
                self._handshakes[host] = waiting + 1
        if full:
            log.warning("connection from %s refused: too many connections still authenticating (%d from there)",
                        _peer_name(peer), waiting)
            connection.close()
        else:
            self._start_walker(connection, peer)

    def _handshake_done(self, host: str) -> None:
        with self._lock:
            self._handshakes[host] -= 1
            if not self._handshakes[host]:
                del self._handshakes[host]

    def _start_walker(self, connection: socket.socket, peer) -> None:
        with self._lock:
            self._connections.add(connection)
            self._accepted += 1
            thread = threading.Thread(target=self._serve_walker, args=(connection, self._accepted, peer),
                                      name=f"connection {self._accepted}", daemon=True)
            self._threads = [alive for alive in self._threads if alive.is_alive()] + [thread]
        thread.start()

    def _serve_walker(self, connection: socket.socket, number: int, peer) -> None:
        name, walker = f"connection {number}" + (f" from {_peer_name(peer)}" if peer else ""), False
        welcome = {"type": "welcome", "protocol": PROTOCOL}
        try:
            if peer is None:
                hello = receive_frame(connection, self.payload_timeout)[0]
                _check_hello(hello)
            else:
                try:
                    if self.tls is not None:
                        connection = self._wrap_tls(connection)
                    hello = self._authenticate(connection)
                finally:
                    self._handshake_done(peer[0])
                welcome["proof"] = proof(self.secret, hello["nonce"], "server")
            with self._lock:
                walker = self.stop_reason is None
                self.walkers += walker
                self.walkers_now += walker
            if not walker:
                send_frame(connection, {"type": "error", "kind": "ServerStopping",
                                        "message": f"the learner server at {self.path} is stopping"})
                return
            where = f", {_peer_name(peer)}" if peer else ""
            name = threading.current_thread().name = f"walker {number} (pid {hello.get('pid')}{where})"
            log.info("%s connected; %d walker(s) connected", name, self.walkers_now)
            send_frame(connection, welcome)
            while True:
                self._answer(connection, *receive_frame(connection, self.payload_timeout))
        except ConnectionClosed as exc:
            if exc.partial:
                log.error("%s: dropped the connection: %s", name, exc)
            elif walker:
                log.info("%s left", name)
        except FrameError as exc:
            log.error("%s: dropped the connection: %s", name, exc)
        except Refused as exc:
            log.warning("%s refused: %s", name, exc)
        except Exception:  # a bug must not take the other walkers down
            log.exception("%s: dropped the connection after an unexpected error", name)
        finally:
            with self._lock:
                self._connections.discard(connection)
                if walker:
                    self.walkers_now -= 1
                last = walker and self.walkers_now == 0
            connection.close()
            if last and self.stop_when_walkers_leave:
                self.stop(f"all {self.walkers} walker(s) left")

    def _wrap_tls(self, plain: socket.socket) -> ssl.SSLSocket:
        """The connection as a TLS server socket (its handshake comes in `_authenticate`, within the deadline)."""
        connection = self.tls.wrap_socket(plain, server_side=True, do_handshake_on_connect=False)
        with self._lock:  # stop() must reach the connection in use
            self._connections.discard(plain)
            self._connections.add(connection)
        return connection

    def _authenticate(self, connection: socket.socket) -> dict:
        """The hello of a TCP walker that proved it holds the secret: everything before must arrive within
        handshake_timeout, in small frames."""
        deadline = time.monotonic() + self.handshake_timeout
        try:
            if isinstance(connection, ssl.SSLSocket):
                connection.settimeout(self.handshake_timeout)
                connection.do_handshake()
            nonce = new_nonce()
            send_frame(connection, {"type": "challenge", "protocol": PROTOCOL, "nonce": nonce})
            hello = receive_frame(connection, self.payload_timeout, deadline=deadline,
                                  max_header=HANDSHAKE_HEADER_BYTES, max_body=0)[0]
        except (FrameError, ConnectionClosed, OSError) as exc:  # OSError: TLS errors, resets, timeouts
            raise Refused(f"no valid hello within {self.handshake_timeout:g} s ({type(exc).__name__}: {exc})") from None
        _check_hello(hello)
        reason = ("no proof of the token (a walker without --token-file?)" if "proof" not in hello
                  else None if proves(self.secret, nonce, "walker", hello["proof"]) else "a wrong token")
        if reason is None and not (isinstance(hello.get("nonce"), str) and len(hello["nonce"]) >= 32):
            reason = "no nonce for the server's own proof"
        if reason is not None:
            send_frame(connection, {"type": "error", "kind": "AuthenticationFailed",
                                    "message": f"refused: {reason}; the token is RUN_DIR/learner.token of the learner"})
            raise Refused(reason)
        return hello

    def _answer(self, connection: socket.socket, header: dict, arrays: dict) -> None:
        batched = header["type"] == "compute_batch"
        structures = _batch_request(header, arrays) if batched else [_compute_request(header, arrays)]
        try:
            results = self._potential.compute_batch(structures)
        except Exception as exc:  # the walker raises it; the server goes on with the others
            if isinstance(exc, LearningStopped):
                log.error("%s: %s: %s", threading.current_thread().name, type(exc).__name__, exc)
            else:
                log.exception("%s: the learner failed", threading.current_thread().name)
            send_frame(connection, {"type": "error", "kind": type(exc).__name__, "message": str(exc)})
            return
        with self._lock:
            self.requests += len(structures)
        if not batched:
            energy, forces, virial, extras = results[0]
            send_frame(connection, {"type": "result", "energy": float(energy), "extras": extras},
                       {"forces": forces, "virial": virial})
            return
        energies, forces, virials, extras = zip(*results)
        send_frame(connection, {"type": "results", "energies": [float(e) for e in energies], "extras": list(extras)},
                   {"forces": np.array(forces), "virials": np.array(virials)})


def _check_hello(header: dict) -> None:
    if header["type"] != "hello":
        raise FrameError(f"expected a hello message, got {header['type']!r}")
    if header.get("protocol") != PROTOCOL:
        raise FrameError(f"the walker speaks learner protocol {header.get('protocol')!r}, this server {PROTOCOL}: "
                         "use the same mtp-driver version on both sides")


def _compute_request(header: dict, arrays: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions (N,3) Å, cell (3,3) Å, pbc (3,), numbers (N,)) of a compute message, checked."""
    if header["type"] != "compute":
        raise FrameError(f"expected a compute message, got {header['type']!r}")
    try:
        positions, cell, numbers = arrays["positions"], arrays["cell"], arrays["numbers"]
        pbc = np.array(header["pbc"], dtype=bool)
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"a compute message without a valid {exc}") from None
    natoms = len(positions)
    if (positions.shape != (natoms, 3) or positions.dtype.kind != "f" or cell.shape != (3, 3)
            or cell.dtype.kind != "f" or numbers.shape != (natoms,) or numbers.dtype.kind != "i" or pbc.shape != (3,)):
        raise FrameError(f"a compute message with positions {positions.shape}, cell {cell.shape}, numbers "
                         f"{numbers.shape}, pbc {pbc.shape}: expected (N, 3) floats, (3, 3) floats, (N,) integers, "
                         "(3,)")
    return positions, cell, pbc, numbers


def _peer_name(peer) -> str:
    return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _batch_request(header: dict, arrays: dict) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The structures of a compute_batch message (positions (B,N,3), cells (B,3,3), numbers (B,N), pbc B x 3),
    each checked as a compute message."""
    try:
        positions, cells, numbers, pbc = arrays["positions"], arrays["cells"], arrays["numbers"], header["pbc"]
        count = len(positions)
        if not (count and len(cells) == len(numbers) == len(pbc) == count):
            raise ValueError("arrays of different lengths")
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"a compute_batch message without valid structures ({exc})") from None
    return [_compute_request({"type": "compute", "pbc": pbc[k]},
                             {"positions": positions[k], "cell": cells[k], "numbers": numbers[k]}) for k in range(count)]


def _refuse_more(connection: socket.socket) -> None:
    """Wakes a walker thread waiting for the next request: it reads what is buffered, then EOF."""
    try:
        connection.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # already closed


def _listen(path: Path) -> tuple[socket.socket, int]:
    """A listening socket at `path` with mode 0600 and its inode: bound in a fresh private directory
    (mode 0700), so nobody else can connect before the mode is set, then moved into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise FileExistsError(f"{path} exists and is not a socket: give another --socket path")
        _refuse_if_answered(path)
        log.warning("replacing the stale socket file %s (no server answers there)", path)
    private = Path(tempfile.mkdtemp(prefix=".learner-", dir=path.parent))
    staged = private / "s"
    if max(len(os.fsencode(staged)), len(os.fsencode(path))) > MAX_SOCKET_PATH:
        private.rmdir()
        raise ValueError(f"the socket path {path} is too long for a UNIX socket (at most {MAX_SOCKET_PATH} bytes, "
                         f"{len(os.fsencode(staged)) - len(os.fsencode(path))} of them taken while it is created): "
                         "give a shorter --socket path")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(staged))
        os.chmod(staged, 0o600)
        listener.listen(BACKLOG)
        os.replace(staged, path)
        inode = path.stat().st_ino
    except BaseException:
        listener.close()
        raise
    finally:
        staged.unlink(missing_ok=True)
        private.rmdir()
    return listener, inode


def _refuse_if_answered(path: Path) -> None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return  # stale: its server is gone
    except OSError as exc:
        raise FileExistsError(f"cannot tell whether a server still listens at {path} ({exc}): remove it if not, "
                              "or give another --socket path") from None
    finally:
        probe.close()
    raise FileExistsError(f"a learner server already answers at {path}: stop it first (SIGINT/SIGTERM), "
                          "or give another --socket path")


def run(server: LearnerServer, learner) -> None:
    """Serves `learner` until SIGINT/SIGTERM (or the walkers' leaving, if the server stops then),
    then closes it (final refit). A signal stops the running reference calls, which stay pending
    for a restart (their walkers get a `CallsInterrupted` error). A second signal ends the process
    at once; the journal keeps every finished reference call for a restart."""

    def graceful(number, frame):
        for sig, old in handlers.items():
            signal.signal(sig, old)
        server.stop(f"received {signal.Signals(number).name}")
        learner.interrupt()

    handlers = {sig: signal.signal(sig, graceful) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve(learner)
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    log.info("closing the learner (final refit) ...")
    learner.close()
