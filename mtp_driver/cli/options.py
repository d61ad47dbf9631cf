"""Options and helpers several commands share."""

from __future__ import annotations

from mtp_driver.io.species import parse_species


def add_species(p, required: bool = False) -> None:
    """--species: the chemical symbols of the potential's types (optional where the .mtp file names them)."""
    p.add_argument("--species", required=required,
                   help="chemical symbols of the potential's types in type order, e.g. Nb,Mo,Ta,W"
                   + ("" if required else " (default: those the .mtp file names)"))


def calculator_and_species(args):
    from mtp_driver.calculator import MTPCalculator

    calculator = MTPCalculator(args.potential, species=parse_species(args.species) or None)
    return calculator, calculator.species


def add_learning_arguments(p) -> None:
    """The starting potential, run directory, reference and settings of a learner (`learn`, `learn-server`)."""
    p.add_argument("potential", metavar="POT.mtp", help="starting potential (untrained from `init`, or trained)")
    add_species(p, required=True)
    p.add_argument("--run-dir", required=True, help="journal, reference results and model versions go here")
    add_learner_options(p)


def add_learner_options(p) -> None:
    """The reference, the starting training set and the settings of a learner (to a parser or an argument group)."""
    import dataclasses

    from mtp_driver.ipi.options import json_object
    from mtp_driver.learn.settings import LearnSettings
    from mtp_driver.learn.theory import DECISIONS

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
    fields = {field.name: field for field in dataclasses.fields(LearnSettings)}
    for name, field in fields.items():
        if type(field.default) in (int, float):  # every numeric setting is an option of the same name
            p.add_argument("--" + name.replace("_", "-"), type=type(field.default), default=field.default,
                           help=f"{field.metadata['help']} (default: %(default)s)")
    for name in ("grade_mode", "answer_with", "executor"):
        field = fields[name]
        p.add_argument("--" + name.replace("_", "-"), default=field.default, choices=field.metadata.get("choices"),
                       metavar="SPEC" if name == "executor" else None,
                       help=f"{field.metadata['help']} (default: %(default)s)")
    p.add_argument("--no-pool-hold", dest="pool_hold", action="store_false", help=fields["pool_hold"].metadata["help"])
    for name in ("background_refit", "observe"):
        p.add_argument("--" + name.replace("_", "-"), action="store_true", help=fields[name].metadata["help"])


def add_settings_options(p, settings_class) -> None:
    """An option per field of a settings dataclass, named like it, its help from the field's metadata."""
    import dataclasses

    for field in dataclasses.fields(settings_class):
        option, text = "--" + field.name.replace("_", "-"), field.metadata.get("help", "")
        if field.type in ("bool", bool):
            p.add_argument(option, action="store_true", default=field.default, help=text)
        else:
            kind = type(field.default)
            p.add_argument(option, type=kind, default=field.default, choices=field.metadata.get("choices"),
                           help=text + " (default: %(default)s)")


def settings_from_args(args, settings_class):
    """The settings dataclass of the options `add_settings_options` added."""
    import dataclasses

    return settings_class(**{field.name: getattr(args, field.name) for field in dataclasses.fields(settings_class)})


def learner_from_args(args):
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


def add_active_set_arguments(p) -> None:
    p.add_argument("potential", metavar="POT.mtp")
    p.add_argument("training", metavar="TRAIN.cfg", help="the training set the active set is chosen from")
    add_species(p)
    p.add_argument("--mode", choices=("cfg", "nbh"), default="cfg",
                   help="rows per configuration or per atom (neighbourhood); cfg with fewer configurations than "
                   "parameters uses nbh rows (default: %(default)s)")
    p.add_argument("--parameters", choices=("all", "linear"), default="all",
                   help="parameters the grade considers: all, as MLIP, or species+moment coefficients only")


def active_set_and_rows(args, path):
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
