"""`mtp-driver relax`."""

from __future__ import annotations

import json
import sys

from .options import add_learner_options, add_settings_options, add_species, learner_from_args, settings_from_args


def add(commands) -> None:
    from mtp_driver.screen.settings import RelaxSettings

    p = commands.add_parser(
        "relax", help="relax many structures with an MTP, learning it on the fly with --learn",
        description="Relax every structure of IN (positions; the cell too with --relax-cell) and write them to OUT "
        "in input order, each with its energy, forces, stress, final grade and status (info: relax_status "
        "converged/unconverged/unphysical/failed, relax_steps, relax_reason). Walkers share one potential; with "
        "--learn RUN_DIR it learns on the fly from the reference as `learn` does, selecting D-optimally across all "
        "walkers. Finished relaxations are kept in OUT.partial/: run the same command again after a kill to finish "
        "the rest without repeating a reference call.")
    p.add_argument("potential", metavar="POT.mtp", help="trained, or untrained from `init` with --learn")
    p.add_argument("input", metavar="IN", help=".cfg or any ASE-readable file of structures")
    p.add_argument("output", metavar="OUT", help=".cfg or any ASE-writable file")
    add_species(p, required=True)
    add_settings_options(p, RelaxSettings)
    p.add_argument("--walkers", type=int, default=1, help="structures relaxed at once (default: %(default)s)")
    p.add_argument("--processes", action="store_true",
                   help="walkers are processes, a core each (with --learn they ask the learner through a private "
                   "socket), rather than threads of this process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    learning = p.add_argument_group("learning on the fly (with --learn)")
    learning.add_argument("--learn", dest="run_dir", metavar="RUN_DIR",
                          help="learn on the fly; journal, reference results and model versions go here")
    add_learner_options(learning)
    p.set_defaults(run=run)


def run(args) -> int:
    import signal
    import threading
    import time
    from pathlib import Path

    from tqdm import tqdm

    from mtp_driver.calculator import MTPCalculator, MTPPotential
    from mtp_driver.io.species import foreign_symbols, parse_species
    from mtp_driver.io.structures import read_structures, write_structures
    from mtp_driver.learn.calls import CallsInterrupted, LearningStopped
    from mtp_driver.screen.relax import RelaxStore, Stopped, input_fingerprint, relax_all, status_counts
    from mtp_driver.screen.settings import RelaxSettings
    from mtp_driver.screen.walkers import WalkerPotential, relax_in_processes

    settings = settings_from_args(args, RelaxSettings)
    species = parse_species(args.species)
    if args.walkers < 1:
        raise ValueError("--walkers must be at least 1")
    structures = read_structures(args.input, species=species)
    if not structures:
        raise ValueError(f"{args.input}: no structures")
    foreign = {i: foreign_symbols(atoms.numbers, species) for i, atoms in enumerate(structures)}
    foreign = {i: symbols for i, symbols in foreign.items() if symbols}
    if foreign:
        first = next(iter(foreign))
        raise ValueError(f"{args.input}: {len(foreign)} structures contain elements the potential does not have "
                         f"(species {','.join(species)}), the first is structure {first} with {foreign[first]}")
    learner = learner_from_args(args) if args.run_dir else None
    potential = learner if learner is not None else \
        MTPPotential(MTPCalculator(args.potential, species=species), model_version=Path(args.potential).name)
    store = RelaxStore(Path(str(args.output) + ".partial"),
                       input_fingerprint(args.input, settings, args.potential, learning=args.run_dir))
    stop = threading.Event()

    def on_signal(number, frame) -> None:  # finished relaxations are stored; the rerun makes the rest
        stop.set()
        if learner is not None:
            learner.interrupt()

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    started = time.perf_counter()
    bar = tqdm(total=len(structures), initial=len(store.indices()), unit="structure", disable=args.no_progress,
               file=sys.stderr)
    try:
        if args.processes:
            relaxed = relax_in_processes(structures, WalkerPotential(str(args.potential), tuple(species)), settings,
                                         args.walkers, store=store, progress=lambda _: bar.update(), stop=stop,
                                         learner=learner)
        else:
            relaxed = relax_all(structures, potential, settings, walkers=args.walkers, store=store,
                                progress=lambda _: bar.update(), stop=stop)
    except (Stopped, CallsInterrupted):
        print(f"mtp-driver relax: stopped; {len(store.indices())} of {len(structures)} relaxations are finished "
              f"(in {store.directory}): run the same command again to relax the rest", file=sys.stderr)
        return 130
    except LearningStopped as exc:  # e.g. the failure budget: the learner cannot go on
        print(f"mtp-driver relax: error: {exc}; {len(store.indices())} of {len(structures)} relaxations are "
              f"finished (in {store.directory})", file=sys.stderr)
        return 1
    finally:
        bar.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
        if learner is not None:  # a stopped run ends without the final refit: the rerun makes it
            learner.close(final_refit=not stop.is_set())
    write_structures(args.output, relaxed, species=species)
    store.remove()
    summary = dict(structures=len(relaxed), **status_counts(relaxed), seconds=round(time.perf_counter() - started, 1))
    if learner is not None:
        summary.update(learner.summary())
    print(f"{args.output}: " + json.dumps(summary))
    return 0
