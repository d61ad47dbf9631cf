"""`mtp-driver learn-report`."""

from __future__ import annotations


def add(commands) -> None:
    p = commands.add_parser("learn-report", help="summary and plots of a learning run (`learn` or `demo`)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the learner's run directory (with journal.jsonl)")
    p.add_argument("--plot", metavar="LEARNING.png", help="grade trace, reference calls, errors, held times")
    p.add_argument("--window", type=int, default=1000, help="requests judged for convergence (default: %(default)s)")
    p.add_argument("--converged-calls", type=float, default=5.0,
                   help="converged below this many reference calls per 1000 requests (default: %(default)s)")
    p.add_argument("--target-force-rmse", type=float, default=0.05, metavar="EV_PER_A",
                   help="suggest the threshold that keeps the model's force error below this (default: %(default)s)")
    p.add_argument("--calibration-plot", metavar="CALIBRATION.png", help="grade vs actual force error")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from mtp_driver.learn.report import (calibration_pairs, format_calibration, format_summary, learning_summary,
                                         write_calibration_plot, write_plots)

    if not (Path(args.run_dir) / "journal.jsonl").exists():
        raise ValueError(f"{args.run_dir} has no journal.jsonl: not the run directory of `mtp-driver learn`")
    print(format_summary(learning_summary(args.run_dir, args.window, args.converged_calls)))
    pairs = calibration_pairs(args.run_dir)
    print(format_calibration(pairs, args.target_force_rmse))
    if args.plot:
        write_plots(args.run_dir, args.plot)
        print(f"{args.plot}: plots")
    if args.calibration_plot:
        write_calibration_plot(pairs, args.target_force_rmse, args.calibration_plot)
        print(f"{args.calibration_plot}: grade vs force error")
    return 0
