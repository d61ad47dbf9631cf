"""`mtp-driver` command line: one entry point, thin subcommands over the library API."""

from __future__ import annotations

import argparse
import json
import sys

from mtp_driver.io.species import parse_species


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtp-driver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_init(commands)
    _add_calc_efs(commands)
    _add_calc_errors(commands)
    _add_serve(commands)
    _add_learn(commands)
    _add_learn_server(commands)
    _add_learn_report(commands)
    _add_train(commands)
    _add_report(commands)
    _add_calc_grade(commands)
    _add_select_add(commands)
    return parser


def _add_demo(commands) -> None:
    p = commands.add_parser("demo", help="run the Quick start job: i-PI MD of Cu learning an MTP on the fly from EMT",
                            description="i-PI NVT MD of fcc Cu; an untrained MTP learns on the fly from ASE's EMT.")
    p.add_argument("--run-dir", default="mtp-driver-demo", help="outputs go here (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="MD steps of 2 fs (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=900.0, help="kelvin (default: %(default)s)")
    p.add_argument("--level", type=int, default=10, help="MTP level (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="supercell of repeat^3 cubic fcc cells (default: %(default)s)")
    p.set_defaults(run=_demo)


def _demo(args) -> int:
    from mtp_driver.demo import run_demo

    run_demo(args.run_dir, steps=args.steps, temperature=args.temperature, level=args.level, repeat=args.repeat)
    return 0


def _add_init(commands) -> None:
    p = commands.add_parser("init", help="write an untrained potential of a given level",
                            description="Generate the MTP basis of LEVEL and write an untrained .mtp file.")
    p.add_argument("level", type=int, help="even level 2..28")
    p.add_argument("--species", required=True, help="chemical symbols of the types, e.g. Cu,Ag")
    p.add_argument("--min-dist", type=float, required=True, metavar="ANGSTROM")
    p.add_argument("--max-dist", type=float, required=True, metavar="ANGSTROM", help="cutoff radius")
    p.add_argument("--radial-basis-size", type=int, default=8)
    p.add_argument("-o", "--output", required=True, metavar="UNTRAINED.mtp")
    p.set_defaults(run=_init)


def _init(args) -> int:
    from mtp_driver.io.mtp_file import write_mtp
    from mtp_driver.mtp.basis import untrained_mtp

    species = parse_species(args.species)
    mtp = untrained_mtp(args.level, len(species), args.min_dist, args.max_dist, args.radial_basis_size,
                        species=species)
    write_mtp(mtp, args.output)
    print(f"{args.output}: level {mtp.level}, {len(species)} species, {mtp.alpha_scalar_moments} basis functions, "
          f"{mtp.parameter_count} parameters")
    return 0


def _add_calc_efs(commands) -> None:
    p = commands.add_parser("calc-efs", help="energies, forces and stresses of configurations (like mlp calc-efs)")
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("input", metavar="IN", help=".cfg or any ASE-readable file")
    p.add_argument("output", metavar="OUT", help=".cfg or any ASE-writable file")
    p.add_argument("--species", help="chemical symbols of the potential's types, e.g. Nb,Mo,Ta,W")
    p.set_defaults(run=_calc_efs)


def _calculator_and_species(args):
    from mtp_driver.calculator import MTPCalculator

    calculator = MTPCalculator(args.potential, species=parse_species(args.species) or None)
    return calculator, calculator.species


def _calc_efs(args) -> int:
    from mtp_driver.calculator import predict
    from mtp_driver.io.structures import read_structures, write_structures

    calculator, species = _calculator_and_species(args)
    predictions = predict(calculator, read_structures(args.input, species=species))
    write_structures(args.output, predictions, species=species)
    print(f"{args.output}: {len(predictions)} configurations")
    return 0


def _add_calc_errors(commands) -> None:
    p = commands.add_parser("calc-errors", help="errors of a potential on a labelled database (like mlp calc-errors)")
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("database", metavar="DB", help=".cfg or any ASE-readable file with reference results")
    p.add_argument("--species", help="chemical symbols of the potential's types, e.g. Nb,Mo,Ta,W")
    p.set_defaults(run=_calc_errors)


def _calc_errors(args) -> int:
    from mtp_driver.calculator import predict
    from mtp_driver.io.structures import read_structures
    from mtp_driver.metrics import error_table, format_error_table

    calculator, species = _calculator_and_species(args)
    references = read_structures(args.database, species=species)
    print(f"{args.database}: {len(references)} configurations")
    print(format_error_table(error_table(references, predict(calculator, references))))
    return 0


def _add_serve(commands) -> None:
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
    p.set_defaults(run=_serve)


def _serve(args) -> int:
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


def _add_learning_arguments(p) -> None:
    """The starting potential, run directory, reference and settings of a learner (`learn`, `learn-server`)."""
    import dataclasses

    from mtp_driver.ipi.options import json_object
    from mtp_driver.learn.settings import ANSWERS, GRADE_MODES, LearnSettings
    from mtp_driver.learn.theory import DECISIONS

    p.add_argument("potential", metavar="POT.mtp", help="starting potential (untrained from `init`, or trained)")
    p.add_argument("--species", required=True, help="chemical symbols of the potential's types, e.g. Cu,Ag")
    p.add_argument("--run-dir", required=True, help="journal, reference results and model versions go here")
    p.add_argument("--training", metavar="TRAIN.cfg",
                   help="labelled structures the potential was trained on: its active set, and kept in every refit")
    reference = p.add_mutually_exclusive_group()
    reference.add_argument("--reference", metavar="MODULE:CLASS", help="ASE calculator class (default: EMT)")
    reference.add_argument("--reference-command", metavar="CMD",
                           help="external command run in a fresh directory: reads input.extxyz, writes output.extxyz")
    p.add_argument("--reference-kwargs", type=json_object, default={}, metavar="JSON")
    p.add_argument("--reference-changed", choices=DECISIONS,
                   help="RUN_DIR holds results of other reference settings: 'drop' trains only on results of the new "
                   "settings, 'keep' adopts the old ones (the change does not alter results); asked when needed")
    defaults = LearnSettings()
    for name in (field.name for field in dataclasses.fields(LearnSettings)):
        default = getattr(defaults, name)
        if type(default) in (int, float):  # every numeric setting is an option of the same name
            p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                           help="(default: %(default)s)")
    p.add_argument("--grade-mode", choices=GRADE_MODES, default=defaults.grade_mode, help="(default: %(default)s)")
    p.add_argument("--answer-with", choices=ANSWERS, default=defaults.answer_with,
                   help="answer a held request with the new model or the reference result (default: %(default)s)")
    p.add_argument("--executor", default=defaults.executor, metavar="SPEC",
                   help="where reference calls run: 'local' (a pool of --workers processes), 'dask://HOST:PORT' (a "
                   "running Dask scheduler, e.g. of dask-jobqueue's SLURMCluster), or 'module:callable' (a factory "
                   "returning a concurrent.futures.Executor) (default: %(default)s)")
    p.add_argument("--background-refit", action="store_true",
                   help="refit all parameters in a separate process between holds too (worth it with spare cores)")
    p.add_argument("--observe", action="store_true",
                   help="never call the reference: grade every request and count what the thresholds would trigger")


def _learner_from_args(args):
    import dataclasses

    from mtp_driver.fit.dataset import read_training_structures
    from mtp_driver.learn.learner import Learner
    from mtp_driver.learn.reference import Reference
    from mtp_driver.learn.settings import LearnSettings

    reference = Reference(calculator=args.reference, command=args.reference_command, kwargs=args.reference_kwargs)
    names = {field.name for field in dataclasses.fields(LearnSettings)} - {"species", "reference"}
    settings = LearnSettings(species=parse_species(args.species), reference=reference,
                             **{name: getattr(args, name) for name in names})
    training = read_training_structures(args.training, settings.species) if args.training else ()
    return Learner(args.potential, args.run_dir, settings, training=training, reference_changed=args.reference_changed)


def _add_learn(commands) -> None:
    from mtp_driver.ipi.options import add_endpoint_arguments

    p = commands.add_parser(
        "learn", help="serve a potential to i-PI or ASE and learn it on the fly from a reference calculator",
        description="Like `serve`, but every request is graded; when the MTP extrapolates the request is held "
        "while the reference computes D-optimally selected structures and the MTP is retrained. Everything "
        "is journaled in RUN_DIR: run the same command again to resume after a crash.",
    )
    _add_learning_arguments(p)
    p.add_argument("--template", required=True, metavar="FILE", help="ASE-readable structure: species and order of the atoms")
    add_endpoint_arguments(p)
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="S")
    p.set_defaults(run=_learn)


def _learn(args) -> int:
    from mtp_driver.ipi import DriverError, make_driver, run
    from mtp_driver.ipi.options import endpoint_from_args

    learner = _learner_from_args(args)
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


def _add_learn_server(commands) -> None:
    p = commands.add_parser(
        "learn-server", help="one learner for several driver processes (`serve --learner SOCKET`)",
        description="Learn on the fly as `learn` does, for walkers that connect to a local UNIX socket (or, with "
        "--listen, TCP with the run's token): each `mtp-driver serve --learner ADDRESS` process (a PIMD bead "
        "driver, an independent MD run) is one walker. "
        "Candidates of all walkers are pooled, no structure is computed twice, only a walker that extrapolates "
        "waits. SIGINT/SIGTERM stop: reference calls are stopped (they stay pending for a restart), the other "
        "requests being answered are finished, then the final refit is written.",
    )
    _add_learning_arguments(p)
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
    p.set_defaults(run=_learn_server)


def _learn_server(args) -> int:
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
        learner = _learner_from_args(args)
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


def _add_learn_report(commands) -> None:
    p = commands.add_parser("learn-report", help="summary and plots of a learning run (`learn` or `demo`)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the learner's run directory (with journal.jsonl)")
    p.add_argument("--plot", metavar="LEARNING.png", help="grade trace, reference calls, errors, held times")
    p.add_argument("--window", type=int, default=1000, help="requests judged for convergence (default: %(default)s)")
    p.add_argument("--converged-calls", type=float, default=5.0,
                   help="converged below this many reference calls per 1000 requests (default: %(default)s)")
    p.add_argument("--target-force-rmse", type=float, default=0.05, metavar="EV_PER_A",
                   help="suggest the threshold that keeps the model's force error below this (default: %(default)s)")
    p.add_argument("--calibration-plot", metavar="CALIBRATION.png", help="grade vs actual force error")
    p.set_defaults(run=_learn_report)


def _learn_report(args) -> int:
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


def _add_train(commands) -> None:
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
    p.add_argument("--species", help="chemical symbols of the potential's types, e.g. Nb,Mo,Ta,W")
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
    p.set_defaults(run=_train)


def _train(args) -> int:
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


def _add_report(commands) -> None:
    p = commands.add_parser("report", help="error table and parity plots of a potential on a labelled set")
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("database", metavar="DB", help=".cfg, mlearn .json[.xz], or any ASE-readable file")
    p.add_argument("--species", help="chemical symbols of the potential's types, e.g. Nb,Mo,Ta,W")
    p.add_argument("--plot", metavar="PARITY.png", help="parity plots: energy per atom, forces, stress")
    p.set_defaults(run=_report)


def _report(args) -> int:
    from mtp_driver.calculator import predict
    from mtp_driver.fit.dataset import read_training_structures
    from mtp_driver.metrics import error_table, format_error_table

    calculator, species = _calculator_and_species(args)
    references = read_training_structures(args.database, species)
    predictions = predict(calculator, references)
    print(f"{args.database}: {len(references)} configurations")
    print(format_error_table(error_table(references, predictions)))
    if args.plot:
        from mtp_driver.fit.report import write_parity_plot

        write_parity_plot(references, predictions, args.plot, title=f"{args.potential} on {args.database}")
        print(f"{args.plot}: parity plots")
    return 0


def _add_active_set_arguments(p) -> None:
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("training", metavar="TRAIN.cfg", help="the training set the active set is chosen from")
    p.add_argument("--species", help="chemical symbols of the potential's types, e.g. Nb,Mo,Ta,W")
    p.add_argument("--mode", choices=("cfg", "nbh"), default="cfg",
                   help="rows per configuration or per atom (neighbourhood); cfg with fewer configurations than "
                   "parameters uses nbh rows (default: %(default)s)")
    p.add_argument("--parameters", choices=("all", "linear"), default="all",
                   help="parameters the grade considers: all, as MLIP, or species+moment coefficients only")


def _add_calc_grade(commands) -> None:
    p = commands.add_parser(
        "calc-grade", help="extrapolation grades of configurations (like mlp calc-grade)",
        description="Choose the MaxVol active set of TRAIN.cfg and write IN with Feature MV_grade per "
        "configuration (and the AtomData column nbh_grades in nbh mode) to OUT.")
    _add_active_set_arguments(p)
    p.add_argument("input", metavar="IN", help=".cfg or any ASE-readable file")
    p.add_argument("output", metavar="OUT", help=".cfg or any ASE-writable file")
    p.add_argument("--save-active-set", metavar="ACTIVE.npz",
                   help="also save the active set, for MTPCalculator(pot, active_set=ACTIVE.npz)")
    p.set_defaults(run=_calc_grade)


def _active_set_and_rows(args, path):
    from mtp_driver.active import build_active_set
    from mtp_driver.active.rows import site_rows
    from mtp_driver.io.mtp_file import read_mtp
    from mtp_driver.io.structures import read_structures

    mtp = read_mtp(args.potential)
    species = parse_species(args.species) or mtp.species
    active_set = build_active_set(mtp, read_structures(args.training, species=species), species, args.mode,
                                  args.parameters)
    if active_set.requested_mode:
        print(f"{args.training}: fewer configurations than parameters: neighbourhood (nbh) rows are used")
    images = read_structures(path, species=species)
    return active_set, images, site_rows(mtp, images, species), species


def _calc_grade(args) -> int:
    from mtp_driver.active import configuration_grades, save_active_set
    from mtp_driver.io.structures import write_structures

    active_set, images, rows, species = _active_set_and_rows(args, args.input)
    if args.save_active_set:
        save_active_set(active_set, args.save_active_set)
    grades = configuration_grades(active_set, rows)
    for c, atoms in enumerate(images):
        atoms.info["MV_grade"] = float(grades.grades[c])
        if grades.atom_grades is not None:
            atoms.arrays["nbh_grades"] = grades.atom_grades[rows.atom_starts[c]:rows.atom_starts[c + 1]]
    write_structures(args.output, images, species=species)
    print(f"{args.output}: {len(images)} configurations, grades {grades.grades.min():.3g} to "
          f"{grades.grades.max():.3g} ({active_set.mode} mode, {active_set.size} active rows)")
    return 0


def _add_select_add(commands) -> None:
    from mtp_driver.active.select import SELECTION_THRESHOLD

    p = commands.add_parser(
        "select-add", help="candidates to compute with the reference code (like mlp select-add)",
        description="Choose the MaxVol active set of TRAIN.cfg and write to NEW the candidates whose rows "
        "enlarge its volume the most (D-optimal; near-duplicates are taken once).")
    _add_active_set_arguments(p)
    p.add_argument("candidates", metavar="CANDIDATES", help=".cfg or any ASE-readable file")
    p.add_argument("output", metavar="NEW", help=".cfg or any ASE-writable file: the selected candidates")
    p.add_argument("--threshold", type=float, default=SELECTION_THRESHOLD,
                   help="select rows that grow the volume by more than this factor (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="select at most N configurations")
    p.set_defaults(run=_select_add)


def _select_add(args) -> int:
    from mtp_driver.active import select_add
    from mtp_driver.io.structures import write_structures

    active_set, images, rows, species = _active_set_and_rows(args, args.candidates)
    selection = select_add(active_set, rows, threshold=args.threshold, limit=args.limit)
    chosen = [images[c] for c in selection.selected]
    for c, atoms in zip(selection.selected, chosen):
        atoms.info["MV_grade"] = float(selection.grades[c])
    write_structures(args.output, chosen, species=species)
    print(f"{args.output}: {len(chosen)} of {len(images)} candidates selected "
          f"(largest grade {selection.grades.max(initial=0.0):.3g})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (OSError, ValueError) as exc:  # user errors (bad file, bad species): one line, no traceback
        print(f"mtp-driver {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
