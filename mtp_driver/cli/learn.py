"""`mtp-driver learn`."""

from __future__ import annotations

import json
import sys

from .options import add_learning_arguments, learner_from_args


def add(commands) -> None:
    from mtp_driver.ipi.options import add_endpoint_arguments

    p = commands.add_parser(
        "learn", help="serve a potential to i-PI or ASE and learn it on the fly from a reference calculator",
        description="Like `serve`, but every request is graded; when the MTP extrapolates the request is held "
        "while the reference computes D-optimally selected structures and the MTP is retrained. Everything "
        "is journaled in RUN_DIR: run the same command again to resume after a crash.",
    )
    add_learning_arguments(p)
    p.add_argument("--template", required=True, metavar="FILE", help="ASE-readable structure: species and order of the atoms")
    add_endpoint_arguments(p)
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="S")
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.ipi import DriverError, make_driver, run
    from mtp_driver.ipi.options import endpoint_from_args

    learner = learner_from_args(args)
    try:
        driver = make_driver(learner, args.template)
    except DriverError as exc:
        print(f"mtp-driver learn: error: {exc}", file=sys.stderr)
        learner.close(final_refit=False)
        return 2
    # Ctrl-C also stops the reference calls: they stay pending, and the request held for them ends the session
    code = run(driver, endpoint_from_args(args), connect_timeout=args.connect_timeout, on_signal=learner.interrupt)
    print(f"i-PI/ASE finished ({code}); final refit on {len(learner.training)} reference structures ...",
          file=sys.stderr)
    learner.close()
    print(json.dumps(learner.summary()))
    return code
