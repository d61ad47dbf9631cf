"""`mtp-driver demo`."""

from __future__ import annotations


def add(commands) -> None:
    p = commands.add_parser("demo", help="run the Quick start job: i-PI MD of Cu learning an MTP on the fly from EMT",
                            description="i-PI NVT MD of fcc Cu; an untrained MTP learns on the fly from ASE's EMT.")
    p.add_argument("--run-dir", default="mtp-driver-demo", help="outputs go here (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="MD steps of 2 fs (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=900.0, help="kelvin (default: %(default)s)")
    p.add_argument("--level", type=int, default=10, help="MTP level (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="supercell of repeat^3 cubic fcc cells (default: %(default)s)")
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.demo import run_demo

    run_demo(args.run_dir, steps=args.steps, temperature=args.temperature, level=args.level, repeat=args.repeat)
    return 0
