"""Walkers on other machines: the learner server's TCP address and its shared secret.

A TCP walker proves it holds the run's secret (RUN/learner.token, mode 0600) by an HMAC of a nonce
the server sends (challenge-response: the secret never crosses the wire), and the server proves it
holds it too by an HMAC of the walker's nonce, so a walker never takes forces from a stranger. The
two directions use different labels, so a reply cannot be reflected back as a proof.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path

TOKEN_FILE = "learner.token"
NONCE_BYTES = 32
MIN_SECRET_BYTES = 16
LOOPBACK = "127.0.0.1"


class TokenError(ValueError):
    """A token file that is missing, unreadable, too open or not a token."""


def create_token(path: Path) -> bytes:
    """The secret in `path`, created with mode 0600 (a new random one) if the file does not exist."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return read_token(path)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(secrets.token_hex(NONCE_BYTES) + "\n")
    return read_token(path)


def read_token(path: str | os.PathLike) -> bytes:
    """The secret in a token file; refused if others may read it (as ssh does with private keys)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise TokenError(f"cannot read the learner token {path}: {exc.strerror} (the learner server creates it as "
                         f"RUN_DIR/{TOKEN_FILE} when it listens on TCP; copy it to the walker's machine)") from None
    with os.fdopen(descriptor) as stream:
        mode = os.fstat(stream.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise TokenError(f"the learner token {path} is not a regular file")
        if mode & 0o077:
            raise TokenError(f"the learner token {path} may be read by others (mode {stat.S_IMODE(mode):o}): "
                             f"chmod 600 {path}")
        text = stream.read(4096).strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise TokenError(f"{path} is not a learner token (expected hex digits)") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenError(f"the learner token {path} is too short ({len(secret)} bytes, at least {MIN_SECRET_BYTES})")
    return secret


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def proof(secret: bytes, nonce: str, role: str) -> str:
    """HMAC-SHA256 of the other side's nonce, labelled with who proves ("walker" or "server")."""
    return hmac.new(secret, f"mtp-driver learner {role} {nonce}".encode(), hashlib.sha256).hexdigest()


def proves(secret: bytes, nonce: str, role: str, answer) -> bool:
    """Whether `answer` is the proof of `role` for `nonce` (a constant-time comparison)."""
    return isinstance(answer, str) and hmac.compare_digest(proof(secret, nonce, role), answer)


def parse_listen(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` (an IPv6 host in brackets) as (host, port); the host defaults to the loopback address."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or LOOPBACK
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--listen {text!r}: expected [HOST:]PORT, e.g. 5555 or 10.0.0.5:5555") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--listen {text!r}: the port must be 0..65535")
    return host, number


def parse_tcp_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a `tcp://HOST:PORT` learner address; None for a UNIX socket path."""
    if not address.startswith("tcp://"):
        return None
    host, port = parse_listen(address[len("tcp://"):])
    if ":" not in address[len("tcp://"):]:
        raise ValueError(f"the learner address {address!r} has no port: tcp://HOST:PORT")
    return host, port


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
