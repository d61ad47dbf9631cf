"""Command-line options for choosing a potential and a socket, shared by `mtp-driver serve` and
the scripts in protocols/. Imports nothing heavy, so building a parser stays fast."""

from __future__ import annotations

import argparse
import json

from mtp_driver.ipi.protocol import DEFAULT_UNIX_PREFIX, Endpoint


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"a\": 1}}', got {text!r}")
    return value


def add_potential_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--potential", metavar="POT.mtp", help="MTP potential file")
    source.add_argument("--emt", action="store_true", help="ASE's EMT (tests, reference runs)")
    source.add_argument(
        "--calculator", metavar="MODULE:CLASS",
        help="import path of an ASE calculator class or of a Potential class",
    )
    source.add_argument("--learner", metavar="ADDRESS", help="a learner shared by several drivers (`mtp-driver "
                        "learn-server`): its UNIX socket path, or tcp://HOST:PORT with --token-file")
    parser.add_argument("--token-file", metavar="FILE", help="with --learner tcp://...: a copy of the learner's "
                        "RUN_DIR/learner.token (mode 0600)")
    parser.add_argument("--tls-ca", metavar="CERT", help="with --learner tcp://...: the learner's TLS certificate "
                        "(its --tls-cert) or CA; encrypts the connection")
    parser.add_argument("--species", help="chemical symbols of the MTP's types in order, e.g. Cu,Ag")
    parser.add_argument(
        "--calculator-kwargs", type=json_object, default={}, metavar="JSON",
        help="keyword arguments for --calculator, as a JSON object",
    )
    parser.add_argument("--model-version", help="label sent in every reply's extras (default: file name and hash)")


def script_parser(description: str, steps: int = 1000) -> argparse.ArgumentParser:
    """The parser of a script in protocols/: its docstring, a potential, a number of steps."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_potential_arguments(parser)
    parser.add_argument("--steps", type=int, default=steps, help="at most this many steps (default: %(default)s)")
    return parser


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME", help="UNIX socket name, as in i-PI's <ffsocket mode='unix'>")
    where.add_argument("--port", type=int, help="TCP port of the server")
    parser.add_argument("--host", default="127.0.0.1", help="TCP host (default: %(default)s)")
    parser.add_argument(
        "--socket-prefix", default=DEFAULT_UNIX_PREFIX, metavar="PREFIX",
        help="UNIX socket file prefix (default: %(default)s, as i-PI and ASE)",
    )


def spec_from_args(args: argparse.Namespace):
    from mtp_driver.ipi.sources import LEARNER_CLIENT, PotentialSpec, parse_species

    if args.learner is not None:
        return PotentialSpec(calculator=LEARNER_CLIENT, calculator_kwargs=dict(
            address=args.learner, token_file=args.token_file, tls_ca=args.tls_ca))
    return PotentialSpec(
        mtp=args.potential,
        species=parse_species(args.species),
        emt=args.emt,
        calculator=args.calculator,
        calculator_kwargs=args.calculator_kwargs,
        model_version=args.model_version,
    )


def endpoint_from_args(args: argparse.Namespace) -> Endpoint:
    return Endpoint(unix=args.unix, port=args.port, host=args.host, prefix=args.socket_prefix)
