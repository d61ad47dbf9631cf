"""Walkers on other machines: the learner server on TCP (loopback here), authenticated by the run's
token, optionally over TLS; strangers, garbage and slow connections are refused while walkers are served."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time

import pytest

from mtp_driver.learn.auth import TokenError, create_token, new_nonce, parse_listen, parse_tcp_address, read_token
from mtp_driver.learn.client import LearnerClient, LearnerConnectionError, RemoteLearnerError
from mtp_driver.learn.frames import MAGIC, PREFIX, PROTOCOL, receive_frame, send_frame
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.server import MAX_HANDSHAKES_PER_HOST, LearnerServer
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp
from test_learn_server import collapsed, cu32, wait_for

pytestmark = pytest.mark.timeout(120)

HANDSHAKE_TIMEOUT = 2.0


def test_the_token_file_is_private_and_checked(tmp_path):
    path = tmp_path / "learner.token"
    secret = create_token(path)
    assert len(secret) == 32 and oct(path.stat().st_mode & 0o777) == "0o600"
    assert create_token(path) == secret == read_token(path)  # created once
    path.chmod(0o644)
    with pytest.raises(TokenError, match=f"may be read by others \\(mode 644\\): chmod 600 {path}"):
        read_token(path)
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(TokenError, match="cannot read the learner token"):
        read_token(tmp_path / "link")
    (tmp_path / "short").write_text("abcd")
    (tmp_path / "short").chmod(0o600)
    with pytest.raises(TokenError, match="too short"):
        read_token(tmp_path / "short")


def test_addresses():
    assert parse_listen("5555") == ("127.0.0.1", 5555)  # loopback unless a host is given
    assert parse_listen("0.0.0.0:5555") == ("0.0.0.0", 5555)
    assert parse_listen("[::1]:7") == ("::1", 7)
    assert parse_tcp_address("tcp://10.0.0.5:5555") == ("10.0.0.5", 5555)
    assert parse_tcp_address("/run/learner.sock") is None
    for bad in ("tcp://host", "x:99999"):
        with pytest.raises(ValueError):
            parse_tcp_address(bad) if bad.startswith("tcp") else parse_listen(bad)


def self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=learner"], check=True, capture_output=True)
    return cert, key


@pytest.fixture(params=["plain", "tls"])
def tcp_learner(tmp_path, request):
    """A real learner (untrained level-6 MTP, EMT) behind a `LearnerServer` on loopback TCP."""
    import ssl

    learner = Learner(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), tmp_path / "run",
                      LearnSettings(species=("Cu",), refit_iterations=0))
    token = tmp_path / "run" / "learner.token"
    tls, ca = None, None
    if request.param == "tls":
        ca, key = self_signed(tmp_path)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(ca, key)
    server = LearnerServer(tmp_path / "learner.sock", listen=("127.0.0.1", 0), secret=create_token(token), tls=tls,
                           handshake_timeout=HANDSHAKE_TIMEOUT)
    thread = threading.Thread(target=server.serve, args=(learner,), daemon=True)
    thread.start()
    server.client = lambda **kw: LearnerClient(f"tcp://127.0.0.1:{server.tcp_address[1]}",
                                               **dict(dict(token_file=token, tls_ca=ca), **kw))
    server.ca = ca
    yield server
    server.stop()
    thread.join(30)
    server.close()
    learner.close(final_refit=False)


def served(client) -> bool:
    atoms = collapsed()
    with pytest.raises(RemoteLearnerError, match="UnphysicalStructure"):  # answered by the learner, no call
        client.compute(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    return True


def raw_connection(server, source="127.0.0.1"):
    sock = socket.create_connection(("127.0.0.1", server.tcp_address[1]), timeout=10, source_address=(source, 0))
    if server.tls is None:
        return sock
    import ssl

    context = ssl.create_default_context(cafile=str(server.ca))
    context.check_hostname = False
    return context.wrap_socket(sock)


def closed_by_peer(sock) -> bool:
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass  # the error message, if any
        return True
    except (ConnectionResetError, OSError):
        return True


def no_proof(server):
    sock = raw_connection(server)
    challenge = receive_frame(sock)[0]
    send_frame(sock, {"type": "hello", "protocol": PROTOCOL, "pid": 0, "nonce": new_nonce()})
    reply = receive_frame(sock)[0]
    assert challenge["type"] == "challenge" and reply["kind"] == "AuthenticationFailed"
    return sock


def garbage(server):
    sock = raw_connection(server)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def oversized(server):
    sock = raw_connection(server)
    sock.sendall(PREFIX.pack(MAGIC, 1 << 30, 0))  # a 1 GiB header: refused before anything is allocated
    return sock


def slow(server):
    sock = raw_connection(server)
    sock.sendall(MAGIC)  # then nothing: the handshake's deadline ends it
    return sock


@pytest.mark.processes
@pytest.mark.parametrize("stranger, logged", [
    ("wrong-token", "refused: a wrong token"),
    (no_proof, "refused: no proof of the token"),
    (garbage, "does not start with b'MTPL'"),
    (oversized, "beyond the limits of 4096 and 0 bytes"),
    (slow, f"no valid hello within {HANDSHAKE_TIMEOUT:g} s"),
], ids=["wrong-token", "no-token", "garbage", "oversized", "slow-loris"])
def test_strangers_are_refused_and_logged_while_walkers_are_served(tmp_path, tcp_learner, caplog, stranger, logged):
    caplog.set_level(logging.INFO, logger="mtp_driver.learn.server")
    walker = tcp_learner.client()  # connected before the stranger
    started = time.monotonic()
    if stranger == "wrong-token":
        other = tmp_path / "other.token"
        create_token(other)
        with pytest.raises(LearnerConnectionError, match="refused: a wrong token"):
            tcp_learner.client(token_file=other)
    else:
        sock = stranger(tcp_learner)
        assert closed_by_peer(sock)
        sock.close()
    wait_for(lambda: logged in caplog.text, 10, "the refusal in the log")
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 5
    assert f"from 127.0.0.1:" in caplog.text
    for client in (walker, tcp_learner.client()):  # the walker and a new one are answered
        assert served(client)
        client.close()
    assert tcp_learner.walkers == 2  # strangers never count as walkers


@pytest.mark.processes
def test_no_token_file_and_a_server_without_the_token_are_refused_by_the_walker(tmp_path, tcp_learner):
    with pytest.raises(LearnerConnectionError, match="is on TCP: give --token-file"):
        LearnerClient(f"tcp://127.0.0.1:{tcp_learner.tcp_address[1]}")
    # a stranger's server: it sends a challenge and welcomes anybody, without the proof only the token gives
    listener = socket.create_server(("127.0.0.1", 0))

    def impostor():
        connection = listener.accept()[0]
        send_frame(connection, {"type": "challenge", "nonce": new_nonce()})
        receive_frame(connection)
        send_frame(connection, {"type": "welcome", "protocol": PROTOCOL, "proof": "0" * 64})
        time.sleep(1)
        connection.close()

    threading.Thread(target=impostor, daemon=True).start()
    token = tmp_path / "run" / "learner.token"
    with pytest.raises(LearnerConnectionError, match="does not hold the token given: not this run's learner"):
        LearnerClient(f"tcp://127.0.0.1:{listener.getsockname()[1]}", token_file=token)
    listener.close()


@pytest.mark.processes
def test_a_flood_of_idle_connections_from_one_host_does_not_lock_out_the_walkers(tcp_learner, caplog):
    caplog.set_level(logging.INFO, logger="mtp_driver.learn.server")
    idle = [socket.create_connection(("127.0.0.1", tcp_learner.tcp_address[1]), source_address=("127.0.0.2", 0))
            for _ in range(MAX_HANDSHAKES_PER_HOST + 3)]
    wait_for(lambda: caplog.text.count("too many connections still authenticating") == 3, 10, "three refusals")
    walker = tcp_learner.client()  # from 127.0.0.1: not held up by 127.0.0.2's connections
    assert served(walker)
    walker.close()
    for sock in idle:
        sock.close()


@pytest.mark.processes
@pytest.mark.parametrize("tcp_learner", ["tls"], indirect=True)
def test_a_plain_walker_is_refused_by_a_tls_server(tcp_learner, caplog):
    caplog.set_level(logging.INFO, logger="mtp_driver.learn.server")
    walker = tcp_learner.client()
    with pytest.raises(LearnerConnectionError):
        tcp_learner.client(tls_ca=None, payload_timeout=1.0)
    wait_for(lambda: "refused: no valid hello" in caplog.text, 10, "the refusal in the log")
    assert served(walker)
    walker.close()


@pytest.mark.processes
def test_learn_server_refuses_tls_without_listen_or_without_a_key(tmp_path):
    import sys

    from mtp_driver.io.mtp_file import write_mtp

    potential = tmp_path / "untrained.mtp"
    write_mtp(untrained_mtp(6, 1, 2.0, 5.0, species=["Cu"]), potential)
    base = [sys.executable, "-m", "mtp_driver.cli", "learn-server", str(potential), "--species", "Cu",
            "--run-dir", str(tmp_path / "run")]
    for options, message in ((["--tls-cert", "c.pem"], "--tls-cert/--tls-key need --listen"),
                             (["--listen", "0", "--tls-cert", "c.pem"], "TLS needs both --tls-cert and --tls-key")):
        done = subprocess.run(base + options, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr
