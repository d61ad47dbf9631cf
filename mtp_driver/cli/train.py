"""`mtp-driver train`."""

from __future__ import annotations

from mtp_driver.io.species import parse_species

from .options import add_species


def add(commands) -> None:
    from mtp_driver.fit.options import INITIALISATIONS, METHODS, WEIGHTINGS, LossWeights, TrainOptions

    p = commands.add_parser(
        "train", help="fit a potential to labelled configurations (like mlp train)",
        description="Fit every parameter of INIT.mtp (untrained from `init`, or trained: continue) to the "
        "energies, forces and stresses of TRAIN. Under mpirun/mpiexec each rank takes a share of the "
        "configurations; the result is the same for any number of ranks.",
    )
    p.add_argument("potential", metavar="INIT.mtp")
    p.add_argument("training", metavar="TRAIN", help=".cfg, mlearn .json[.xz], or any ASE-readable file")
    p.add_argument("-o", "--output", required=True, metavar="POT.mtp", help="also written during the fit, as a checkpoint")
    p.add_argument("--valid", metavar="VALID", help="validation set: its errors are shown; see --patience")
    add_species(p)
    p.add_argument("--energy-weight", type=float, default=LossWeights.energy)
    p.add_argument("--force-weight", type=float, default=LossWeights.forces)
    p.add_argument("--stress-weight", type=float, default=LossWeights.stress)
    p.add_argument("--weighting", choices=WEIGHTINGS, default=LossWeights.weighting,
                   help="per-configuration scaling of the weights, as MLIP's (default: %(default)s)")
    p.add_argument("--method", choices=METHODS, default=TrainOptions.method,
                   help="projected: L-BFGS over the radial coefficients, linear ones solved exactly at each step; "
                   "joint: L-BFGS over all (MLIP's scheme) (default: %(default)s)")
    p.add_argument("--max-iter", type=int, default=TrainOptions.max_iter)
    p.add_argument("--tolerance", type=float, default=TrainOptions.tolerance,
                   help="stop when %d loss evaluations lower the loss by less than this fraction" % TrainOptions.window)
    p.add_argument("--init", choices=INITIALISATIONS, default=TrainOptions.init,
                   help="radial coefficients of an untrained potential (default: %(default)s)")
    p.add_argument("--seed", type=int, default=TrainOptions.seed)
    p.add_argument("--update-min-dist", action="store_true", help="set min_dist to 0.99 x the shortest training distance")
    p.add_argument("--patience", type=int, default=TrainOptions.patience, metavar="N",
                   help="with --valid: stop after N validation checks without improvement, keep the best")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.calculator import MTPCalculator, predict
    from mtp_driver.fit import LossWeights, TrainOptions, train
    from mtp_driver.fit.dataset import read_training_structures
    from mtp_driver.fit.parallel import world
    from mtp_driver.io.mtp_file import read_mtp, write_mtp
    from mtp_driver.metrics import error_table, format_error_table

    comm = world()
    is_root = comm is None or comm.Get_rank() == 0
    mtp = read_mtp(args.potential)
    species = parse_species(args.species) or mtp.species
    if not species:
        raise ValueError(f"{args.potential} does not name the elements of its types: give --species, e.g. --species Cu")
    training = read_training_structures(args.training, species)
    valid = read_training_structures(args.valid, species) if args.valid else None
    options = TrainOptions(
        weights=LossWeights(args.energy_weight, args.force_weight, args.stress_weight, args.weighting),
        method=args.method, max_iter=args.max_iter, tolerance=args.tolerance, init=args.init, seed=args.seed,
        update_min_dist=args.update_min_dist, patience=args.patience,
    )
    result = train(mtp, training, valid, species, options, comm, progress=not args.no_progress,
                   checkpoint=lambda fitted: write_mtp(fitted, args.output))
    if not is_root:
        return 0
    write_mtp(result.mtp, args.output)
    print(f"{args.output}: {result.iterations} iterations, {result.evaluations} loss+gradient evaluations, "
          f"{result.seconds:.1f} s, stopped: {result.stop_reason}")
    calculator = MTPCalculator(result.mtp)
    for name, images in (("training set", training), ("validation set", valid)):
        if images:
            print(f"{name} ({len(images)} configurations):")
            print(format_error_table(error_table(images, predict(calculator, images))))
    return 0
