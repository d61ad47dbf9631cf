"""`mtp-driver serve`."""

from __future__ import annotations

import sys


def add(commands) -> None:
    from mtp_driver.ipi.options import add_endpoint_arguments, add_potential_arguments

    p = commands.add_parser(
        "serve",
        help="serve a potential to i-PI or ASE over the i-PI socket protocol",
        description="Connect to an i-PI (or ASE SocketIOCalculator) server and answer its force "
        "requests until it says EXIT or goes away. SIGTERM/SIGINT stop between requests.",
    )
    add_potential_arguments(p)
    p.add_argument(
        "--template", required=True, metavar="FILE",
        help="ASE-readable structure giving the species (and periodicity) of the atoms, in the "
        "server's order; '-' reads extxyz from stdin",
    )
    add_endpoint_arguments(p)
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="S", help="keep retrying this long (default: %(default)s)")
    p.add_argument("--min-distance", type=float, default=None, metavar="ANGSTROM", help="fail if two atoms come closer")
    p.set_defaults(run=run)


def run(args) -> int:
    import logging

    from mtp_driver.ipi import DriverError, make_driver, run
    from mtp_driver.ipi.options import endpoint_from_args, spec_from_args

    logging.basicConfig(level=logging.INFO, format="mtp-driver serve: %(message)s", stream=sys.stderr)
    try:
        endpoint = endpoint_from_args(args)
        driver = make_driver(spec_from_args(args), args.template, min_distance=args.min_distance)
    except (DriverError, ValueError) as exc:
        logging.getLogger("mtp_driver.ipi").error("error: %s", exc)
        return 2
    return run(driver, endpoint, connect_timeout=args.connect_timeout)
