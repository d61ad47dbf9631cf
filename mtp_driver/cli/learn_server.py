"""`mtp-driver learn-server`."""

from __future__ import annotations

import json
import sys

from .options import add_learning_arguments, learner_from_args


def add(commands) -> None:
    p = commands.add_parser(
        "learn-server", help="one learner for several driver processes (`serve --learner SOCKET`)",
        description="Learn on the fly as `learn` does, for walkers that connect to a local UNIX socket (or, with "
        "--listen, TCP with the run's token): each `mtp-driver serve --learner ADDRESS` process (a PIMD bead "
        "driver, an independent MD run) is one walker. "
        "Candidates of all walkers are pooled, no structure is computed twice, only a walker that extrapolates "
        "waits. SIGINT/SIGTERM stop: reference calls are stopped (they stay pending for a restart), the other "
        "requests being answered are finished, then the final refit is written.",
    )
    add_learning_arguments(p)
    p.add_argument("--socket", metavar="PATH",
                   help="UNIX socket to listen at, mode 0600 (default: RUN_DIR/learner.sock)")
    p.add_argument("--listen", metavar="[HOST:]PORT",
                   help="also listen on TCP for walkers on other machines (HOST defaults to 127.0.0.1; give the "
                   "address of a network interface, or 0.0.0.0, to be reachable); walkers authenticate with "
                   "RUN_DIR/learner.token (created mode 0600 at first start): serve --learner tcp://HOST:PORT "
                   "--token-file COPY")
    p.add_argument("--tls-cert", metavar="CERT", help="with --listen: encrypt with TLS (PEM certificate; walkers "
                   "give it as --tls-ca)")
    p.add_argument("--tls-key", metavar="KEY", help="with --tls-cert: its private key (PEM)")
    p.add_argument("--stop-when-walkers-leave", action="store_true",
                   help="stop once every walker that connected has left (scripts, tests)")
    p.set_defaults(run=run)


def run(args) -> int:
    import logging
    from pathlib import Path

    from mtp_driver.learn.server import LearnerServer, run

    logging.basicConfig(level=logging.INFO, format="mtp-driver learn-server: %(message)s", stream=sys.stderr)
    path = args.socket or Path(args.run_dir) / "learner.sock"
    try:
        tcp = _tcp_options(args)
    except ValueError as exc:
        logging.getLogger("mtp_driver.learn").error("error: %s", exc)
        return 2
    # listening first: a second server on the same run directory is refused before it touches the journal
    with LearnerServer(path, stop_when_walkers_leave=args.stop_when_walkers_leave, **tcp) as server:
        learner = learner_from_args(args)
        run(server, learner)
    print(json.dumps(learner.summary()))
    return 0


def _tcp_options(args) -> dict:
    """LearnerServer's TCP keywords from --listen/--tls-cert/--tls-key: the address, the run's secret, TLS."""
    import ssl
    from pathlib import Path

    from mtp_driver.learn.auth import TOKEN_FILE, create_token, parse_listen

    if args.listen is None:
        if args.tls_cert or args.tls_key:
            raise ValueError("--tls-cert/--tls-key need --listen")
        return {}
    listen = parse_listen(args.listen)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tcp = dict(listen=listen, secret=create_token(run_dir / TOKEN_FILE))
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load --tls-cert {args.tls_cert} / --tls-key {args.tls_key}: {exc}") from None
        tcp["tls"] = context
    return tcp
