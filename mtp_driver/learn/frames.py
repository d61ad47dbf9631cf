"""The wire format between a learner server and its walkers (`server.py`, `client.py`): framed
messages over a local UNIX socket, no pickle.

One frame:

    prefix  12 bytes: magic b"MTPL", header length, body length (uint32, little-endian)
    header  a UTF-8 JSON object; "type" says what the message is, "arrays" lists the body's
            arrays as [name, dtype, shape]
    body    the arrays' raw bytes one after another, C order, little-endian float64 ('<f8') or
            int64 ('<i8')

Lengths are bounded and the listed arrays must fill the body exactly, so garbage on the socket
ends in a `FrameError` with a message, never in a huge allocation.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import numpy as np

PROTOCOL = 2  # the message types and their fields; a server refuses a walker of another version (2: batches)
MAGIC = b"MTPL"
PREFIX = struct.Struct("<4sII")
MAX_HEADER_BYTES = 1 << 20
MAX_BODY_BYTES = 1 << 28  # 256 MiB: the positions of ten million atoms
DTYPES = ("<f8", "<i8")


class FrameError(ValueError):
    """A frame that breaks the format: nothing more on this connection can be trusted."""


class ConnectionClosed(ConnectionError):
    """The other end closed (or reset) the connection; `partial` if it did so inside a frame."""

    def __init__(self, message: str, partial: bool = False):
        super().__init__(message)
        self.partial = partial


def send_frame(sock: socket.socket, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    """Sends one frame: `header` (JSON-serialisable, numpy scalars allowed) and `arrays` in its body."""
    arrays = {name: np.ascontiguousarray(value, dtype=_wire_dtype(value)) for name, value in (arrays or {}).items()}
    described = dict(header, arrays=[[name, value.dtype.str, list(value.shape)] for name, value in arrays.items()])
    text = json.dumps(described, default=_plain).encode("utf-8")
    body = [value.tobytes() for value in arrays.values()]
    size = sum(len(part) for part in body)
    if len(text) > MAX_HEADER_BYTES or size > MAX_BODY_BYTES:
        raise FrameError(f"a {described.get('type')} message of {len(text)} + {size} bytes is beyond the limits "
                         f"({MAX_HEADER_BYTES} + {MAX_BODY_BYTES} bytes)")
    try:
        sock.sendall(b"".join([PREFIX.pack(MAGIC, len(text), size), text, *body]))
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise ConnectionClosed(f"the connection was closed by the other end ({exc.strerror})") from None


def receive_frame(sock: socket.socket, payload_timeout: float | None = 30.0, *, deadline: float | None = None,
                  max_header: int = MAX_HEADER_BYTES, max_body: int = MAX_BODY_BYTES) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of the next frame. Waits as long as it takes for the frame to begin (the
    other side may be busy), then at most `payload_timeout` seconds for each piece of the rest; with a
    `deadline` (time.monotonic()), the whole frame must have arrived by then (a peer not yet trusted).
    Smaller limits keep what a peer not yet trusted can make this side allocate small."""
    magic, header_length, body_length = PREFIX.unpack(_receive(sock, PREFIX.size, payload_timeout, deadline,
                                                               begin=True))
    if magic != MAGIC:
        raise FrameError(f"the frame does not start with {MAGIC!r} but {magic!r}: the other end does not speak the "
                         "learner protocol (is this the socket of a `mtp-driver learn-server`?)")
    if header_length > max_header or body_length > max_body:
        raise FrameError(f"a frame announces a {header_length}-byte header and a {body_length}-byte body, beyond "
                         f"the limits of {max_header} and {max_body} bytes")
    try:
        header = json.loads(_receive(sock, header_length, payload_timeout, deadline).decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise FrameError(f"a frame header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise FrameError("a frame header is not a JSON object with a 'type'")
    body = _receive(sock, body_length, payload_timeout, deadline)
    return header, _arrays(header.get("arrays", []), body)


def _arrays(listed, body: bytes) -> dict[str, np.ndarray]:
    arrays, offset = {}, 0
    try:
        for name, dtype, shape in listed:
            if dtype not in DTYPES or not all(isinstance(n, int) and n >= 0 for n in shape):
                raise FrameError(f"array {name!r}: dtype {dtype!r} or shape {shape!r} not allowed")
            size = 8 * int(np.prod(shape, dtype=np.int64))
            if offset + size > len(body):
                raise FrameError(f"array {name!r} {dtype}{tuple(shape)} does not fit in the {len(body)}-byte body")
            arrays[str(name)] = np.frombuffer(body, dtype, size // 8, offset).reshape(shape)
            offset += size
    except (TypeError, ValueError) as exc:
        if isinstance(exc, FrameError):
            raise
        raise FrameError(f"the header's array list is malformed ({exc})") from None
    if offset != len(body):
        raise FrameError(f"the arrays fill {offset} bytes of a {len(body)}-byte body")
    return arrays


def _receive(sock: socket.socket, size: int, timeout: float | None, deadline: float | None,
             begin: bool = False) -> bytes:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    try:
        while got < size:
            # before the first byte of a frame: no limit (a learner may hold a request for hours), unless a deadline
            wait = None if begin and got == 0 else timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FrameError(f"only {got} of {size} bytes of a frame arrived before the deadline")
                wait = left if wait is None else min(wait, left)
            sock.settimeout(wait)
            try:
                received = sock.recv_into(view[got:], size - got)
            except TimeoutError:
                raise FrameError(f"only {got} of {size} bytes of a frame arrived within {wait:g} s") from None
            except ConnectionResetError:
                received = 0
            if received == 0:
                partial = got > 0 or not begin
                raise ConnectionClosed(f"the connection was closed by the other end{' inside a frame' * partial}",
                                       partial)
            got += received
    finally:
        sock.settimeout(None)
    return bytes(buffer)


def _wire_dtype(value) -> str:
    kind = np.asarray(value).dtype.kind
    return "<i8" if kind in "iub" else "<f8"


def _plain(value):
    """NumPy scalars and arrays in a header as plain JSON numbers and lists."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
