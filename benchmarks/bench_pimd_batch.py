"""What i-PI's batched requests save in PIMD: i-PI's time per step for 108 Cu atoms with a level-16
MTP at 8, 32 and 64 beads, served by one `mtp-driver serve` unbatched (one request per bead) and
batched (`<batch_size>` = beads: one request per step), and by i-PI's own `i-pi-py_driver` running
our pes plugin, batched, in one run.

    NUMBA_NUM_THREADS=1 python benchmarks/bench_pimd_batch.py [--beads 8 32 64] [--steps 201] [--repeats 3] [--zero]

With --zero every client serves a zero potential (i-PI's `-m dummy` for its driver): what the
requests cost i-PI without any computing, the most batching can save.

The potential is the level-16 MTP of benchmarks/bench_efs.py (MLIP's fitted Li.mtp from mlearn,
max_dist 5.0 Å, Cu as type 0). Times are i-PI's own mean over every 100 steps (input:
protocols/pimd_timing.xml), the first block dropped, the fastest of all repeats kept; the three
clients alternate so a busy moment of this shared machine hurts all alike. Ratio = unbatched /
batched: above 1, batching is faster. Threads: every client inherits NUMBA_NUM_THREADS (README's table: 1).
With a zero potential i-PI's own batched driver gives the ceiling of any client: i-PI's own step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

from bench_efs import CUTOFF, POTENTIALS
from bench_socket import ZERO, fastest_block

from mtp_driver.io.mtp_file import read_mtp, write_mtp
from mtp_driver.ipi import Endpoint, IPIProcess, PotentialSpec, driver_command, pes_plugin
from mtp_driver.ipi.server import ipi_executable

REPO = Path(__file__).resolve().parents[1]
INPUT = REPO / "protocols" / "pimd_timing.xml"
TEMPLATE = REPO / "protocols" / "structures" / "cu108.extxyz"
CLIENTS = ("unbatched", "batched", "i-pi-py_driver")


def client_command(client: str, potential: Path | None, endpoint: Endpoint) -> list[str]:
    """The client serving `potential` (None: a zero potential)."""
    if client != "i-pi-py_driver":
        spec = ZERO if potential is None else PotentialSpec(mtp=str(potential), species=("Cu",))
        return driver_command(spec, str(TEMPLATE), endpoint)
    driver = [str(Path(ipi_executable()).with_name("i-pi-py_driver")), "-u", "-a", endpoint.unix]
    if potential is None:
        return driver + ["-m", "dummy"]
    return driver + ["-m", "custom", "-P", pes_plugin.__file__, "-o",
                     f"template={TEMPLATE},potential={potential},species=Cu"]


def seconds_per_step(workdir: Path, potential: Path | None, beads: int, client: str, steps: int) -> float:
    endpoint = Endpoint(unix=f"bpimd_{uuid.uuid4().hex[:10]}")
    batch = 1 if client == "unbatched" else beads
    with IPIProcess(INPUT, workdir, endpoint, total_steps=steps, seed=1, nbeads=beads, structure=str(TEMPLATE),
                    prefix="bench", batch_size=batch) as ipi:
        return fastest_block(ipi, client_command(client, potential, endpoint), workdir, timeout=3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beads", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--steps", type=int, default=201, help="PIMD steps per run (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case, best kept (default: %(default)s)")
    parser.add_argument("--zero", action="store_true", help="a zero potential: the cost of the requests alone")
    args = parser.parse_args()
    theirs = "i-pi-py_driver -m dummy" if args.zero else "i-pi-py_driver + pes plugin"
    print(f"| beads | unbatched ms/step | batched ms/step | {theirs}, batched | unbatched / batched |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        potential = None if args.zero else Path(tmp) / "level16.mtp"
        if potential is not None:
            write_mtp(read_mtp(POTENTIALS[16]).copy(max_dist=CUTOFF), potential)
        for beads in args.beads:
            best = {}
            for repeat in range(args.repeats):
                for client in CLIENTS:
                    run_dir = Path(tmp) / f"{beads}_{client}_{repeat}"
                    run_dir.mkdir()
                    seconds = seconds_per_step(run_dir, potential, beads, client, args.steps)
                    best[client] = min(best.get(client, float("inf")), seconds)
            times = [1e3 * best[client] for client in CLIENTS]
            print(f"| {beads} | {times[0]:.1f} | {times[1]:.1f} | {times[2]:.1f} | {times[0] / times[1]:.2f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
