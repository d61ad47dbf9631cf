"""Socket overhead: i-PI NVT time per step with our driver serving a zero potential, against
i-PI's own `i-pi-py_driver -m dummy`, for 64 and 1000 atoms over UNIX and TCP, in one run.

    python benchmarks/bench_socket.py [--steps 1100] [--repeats 2]

The time per step is i-PI's own (its input: protocols/nvt_timing.xml): it prints the mean over
every 100 steps; the first block (start-up) is dropped and the fastest block of all repeats kept,
as timeit does: on a shared machine the slower blocks measure the neighbours, not the socket.
Ratio = ours / i-PI's driver: below 1 means our driver costs i-PI less per step.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ase.build import bulk

from mtp_driver.ipi import Endpoint, IPIProcess, PotentialSpec, driver_command
from mtp_driver.ipi.server import ipi_executable

SIZES = {64: (2, 2, 4), 1000: (5, 5, 10)}
ZERO = PotentialSpec(calculator="mtp_driver.potential:ZeroPotential")
INPUT = Path(__file__).resolve().parents[1] / "protocols" / "nvt_timing.xml"
LISTENING = "Starting the polling thread"
STEP_TIME = re.compile(r"Average timings at MD step\s+(\d+)\. t/step:\s+(\S+)")


def client_command(client: str, endpoint: Endpoint, template: Path) -> list[str]:
    if client == "mtp-driver":
        return driver_command(ZERO, str(template), endpoint)
    where = ["-u", "-a", endpoint.unix] if endpoint.unix else ["-a", endpoint.host, "-p", str(endpoint.port)]
    return [str(Path(ipi_executable()).with_name("i-pi-py_driver")), "-m", "dummy", *where]


def wait_until(condition, ipi: IPIProcess, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s; i-PI log ends:\n{ipi.log()[-2000:]}")
        time.sleep(0.01)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seconds_per_step(workdir: Path, natoms: int, transport: str, client: str, steps: int) -> float:
    endpoint = Endpoint(unix=f"bench_{uuid.uuid4().hex[:10]}") if transport == "unix" else Endpoint(port=free_port())
    template = workdir / "init.extxyz"
    bulk("Cu", "fcc", a=3.61, cubic=True).repeat(SIZES[natoms]).write(template)
    with IPIProcess(INPUT, workdir, endpoint, total_steps=steps, seed=1, structure=template.name,
                    prefix="bench") as ipi:
        return fastest_block(ipi, client_command(client, endpoint, template), workdir)


def fastest_block(ipi: IPIProcess, command: list[str], workdir: Path, timeout: float = 600) -> float:
    """Run the client `command` against a started i-PI until i-PI ends; i-PI's fastest mean time per step over
    100 steps, the first block (start-up) dropped."""
    wait_until(lambda: LISTENING in ipi.log(), ipi)  # i-PI's own driver does not retry: start it once i-PI listens
    with open(workdir / "driver.log", "w") as log:
        driver = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=log)
    wait_until(lambda: ipi.proc.poll() is not None or driver.poll() not in (None, 0), ipi, timeout)
    if driver.wait(60) != 0 or ipi.wait(60) != 0:
        raise RuntimeError(f"{command[0]} or i-PI failed:\n{(workdir / 'driver.log').read_text()[-2000:]}\n"
                           f"{ipi.log()[-2000:]}")
    blocks = [float(t) for step, t in STEP_TIME.findall(ipi.log()) if int(step) > 0]
    if not blocks:
        raise RuntimeError("i-PI printed no step timings: run more than 200 steps")
    return min(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1100, help="MD steps per run (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case, best kept (default: %(default)s)")
    args = parser.parse_args()
    print(f"{'atoms':>6} {'socket':>6} {'mtp-driver ms':>14} {'i-pi-py_driver ms':>18} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for natoms in SIZES:
            for transport in ("unix", "tcp"):
                best = {}
                for repeat in range(args.repeats):
                    # alternate the two clients so a busy moment hurts both alike
                    for client in ("mtp-driver", "i-pi-py_driver"):
                        run_dir = Path(tmp) / f"{natoms}_{transport}_{client}_{repeat}"
                        run_dir.mkdir()
                        t = seconds_per_step(run_dir, natoms, transport, client, args.steps)
                        best[client] = min(best.get(client, float("inf")), t)
                ours, theirs = best["mtp-driver"], best["i-pi-py_driver"]
                print(f"{natoms:>6} {transport:>6} {1e3 * ours:>14.3f} {1e3 * theirs:>18.3f} {ours / theirs:>7.3f}")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
