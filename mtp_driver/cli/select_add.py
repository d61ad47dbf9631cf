"""`mtp-driver select-add`."""

from __future__ import annotations

from .options import active_set_and_rows, add_active_set_arguments


def add(commands) -> None:
    from mtp_driver.active.select import SELECTION_THRESHOLD

    p = commands.add_parser(
        "select-add", help="candidates to compute with the reference code (like mlp select-add)",
        description="Choose the MaxVol active set of TRAIN.cfg and write to NEW the candidates whose rows "
        "enlarge its volume the most (D-optimal; near-duplicates are taken once).")
    add_active_set_arguments(p)
    p.add_argument("candidates", metavar="CANDIDATES", help=".cfg or any ASE-readable file")
    p.add_argument("output", metavar="NEW", help=".cfg or any ASE-writable file: the selected candidates")
    p.add_argument("--threshold", type=float, default=SELECTION_THRESHOLD,
                   help="select rows that grow the volume by more than this factor (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="select at most N configurations")
    p.set_defaults(run=run)


def run(args) -> int:
    from mtp_driver.active import select_add
    from mtp_driver.io.structures import write_structures

    active_set, images, rows, species = active_set_and_rows(args, args.candidates)
    selection = select_add(active_set, rows, threshold=args.threshold, limit=args.limit)
    chosen = [images[c] for c in selection.selected]
    for c, atoms in zip(selection.selected, chosen):
        atoms.info["MV_grade"] = float(selection.grades[c])
    write_structures(args.output, chosen, species=species)
    print(f"{args.output}: {len(chosen)} of {len(images)} candidates selected "
          f"(largest grade {selection.grades.max(initial=0.0):.3g})")
    return 0
