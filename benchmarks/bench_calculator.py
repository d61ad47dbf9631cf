#!/usr/bin/env python
"""Energy + forces + stress as a user gets them: `MTPCalculator` against motep's ASE calculator (issue 18).

Systems (the issue's): bcc Li, 2000 atoms, with mlearn's published level-16 Li.mtp, and diamond Ge,
1728 atoms, with the published level-24 Ge.mtp (Zuo et al. 2020, their own cutoffs). Each call sees
the previous positions moved by a Gaussian of 0.01 Å per coordinate (an MD step's size, the same
sequence for both codes), so both calculators may reuse their neighbour lists as in MD: ours
(a 0.3 Å skin) and motep's (ASE's PrimitiveNeighborList, 0.3 Å skin). Each code's round is a fresh
process: a warm-up call, then CALLS timed calls (the median counts); the codes alternate over
--rounds rounds (the machine is noisy and drifts), ratios are taken within each round and their
median is printed with the range. Wall time and the process's CPU time (every thread) per atom and
call are printed; motep 0.2.0 runs its C engine (`cext`, one thread), ours one thread
(`NUMBA_NUM_THREADS=1`) and two, and two one-thread processes at once: what two cores give at all here (a
process slows down when the other core is busy: shared cache, memory, clock), the yardstick for two threads.
Then the same comparisons in turns: resident processes (ours on 1 and 2 threads, and two on 1 thread at once;
motep and ours on 1) take turns call by call (ABBA) for --turns calls, each timed call right after an untimed
one (as in MD: cores awake), and the per-call ratios' median and quartiles are printed: on a VM whose speed
moves within a minute, this is the sharper figure, and "two cores give" is then measured in the same seconds.

    python benchmarks/bench_calculator.py              # 5 rounds and 100 turns, about 10 minutes on 2 cores
    python benchmarks/bench_calculator.py --rounds 3 --systems Li
    python benchmarks/bench_calculator.py --rounds 0 --systems Li    # turns only, under a minute

motep is installed into benchmarks/.venv-motep on first use (as by bench_efs.py). No timed
assertions: it only prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench_efs import (RESULT_TAG, base_python, busy_cpu_seconds, children_cpu_seconds, emit, ensure_motep_venv,
                       log, machine_info, single_thread_env)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = Path(os.environ.get("MTP_BENCH_DATA", REPO.parent / "shared" / "data" / "mlearn_zuo2020" / "fitted_mtp"))
SYSTEMS = {  # name: (potential, level, lattice, a (Å), cubic cells repeated)
    "Li": (DATA / "Li.mtp", 16, "bcc", 3.44, 10),
    "Ge": (DATA / "Ge.mtp", 24, "diamond", 5.658, 6),
}
CALLS = 20
TURNS = 100  # calls of each code in the call-by-call comparison
STEP = 0.01  # Å per coordinate and call
SEED = 18
PROPERTIES = ["energy", "forces", "stress"]


def structures(name: str, calls: int):
    """The start structure and the positions of each call (warm-up first)."""
    from ase.build import bulk

    _, _, lattice, a, repeat = SYSTEMS[name]
    atoms = bulk(name, lattice, a=a, cubic=True).repeat(repeat)
    rng = np.random.default_rng(SEED)
    atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    steps = rng.normal(scale=STEP, size=(calls + 1, *atoms.positions.shape))
    return atoms, atoms.positions + np.cumsum(steps, axis=0)


def calculator_of(code: str, name: str, atoms):
    potential, *_ = SYSTEMS[name]
    if code == "ours":
        from mtp_driver import MTPCalculator

        return MTPCalculator(potential, species=[name])
    from motep.calculator import MTP as MotepCalculator
    from motep.io.mlip.mtp import read_mtp

    data = read_mtp(potential)
    data.species = [int(atoms.numbers[0])]
    return MotepCalculator(data, engine="cext")


def worker(code: str, name: str, calls: int) -> None:
    """One round of one code: a warm-up call, then `calls` timed calls on moving positions."""
    atoms, positions = structures(name, calls)
    calculator = calculator_of(code, name, atoms)
    walls, cpus, energies = [], [], []
    for k, moved in enumerate(positions):
        atoms.positions = moved
        wall, cpu = time.perf_counter(), time.process_time()
        calculator.calculate(atoms, PROPERTIES)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if k:  # the first call is the warm-up (JIT cache load, first neighbour search)
            walls.append(wall)
            cpus.append(cpu)
        energies.append(float(calculator.results["energy"]))
    emit(dict(code=code, system=name, atoms=len(atoms), wall_us=1e6 * statistics.median(walls) / len(atoms),
              cpu_us=1e6 * statistics.median(cpus) / len(atoms), energies=energies,
              max_force=float(np.abs(calculator.results["forces"]).max())))


def resident_worker(code: str, name: str, calls: int) -> None:
    """A warm-up call, then per line read from stdin an untimed call and a timed one (wall seconds emitted): the
    parent makes several of these take turns. The untimed call wakes the process's cores from the idle wait
    (measured here: a 2-thread call 12-50 ms after the previous one took 0.5-1.1 ms longer than back to back, a
    1-thread call 0.2 ms), so the timed one is an MD step's, whatever the other processes' calls last."""
    atoms, positions = structures(name, TURNS)
    path = np.concatenate([positions, positions[-2:0:-1]])  # there and back: atoms stay within TURNS steps
    calculator = calculator_of(code, name, atoms)
    atoms.positions = positions[0]
    calculator.calculate(atoms, PROPERTIES)
    emit({"ready": len(atoms)})
    for k in range(calls):
        if not sys.stdin.readline():
            return
        untimed, timed = path[(2 * k + 1) % len(path)], path[(2 * k + 2) % len(path)]
        atoms.positions = untimed
        calculator.calculate(atoms, PROPERTIES)
        atoms.positions = timed
        wall = time.perf_counter()
        calculator.calculate(atoms, PROPERTIES)
        emit({"wall": time.perf_counter() - wall})


def turns(residents: list[tuple[str, str, int]], steps: list[tuple[int, ...]], name: str,
          calls: int) -> list[list[float]]:
    """Resident processes, each (python, code, threads), take turns call by call: each step starts one call in
    each of its processes at once and waits for them; the steps run in their order, then reversed (ABBA): all see
    the machine of the same second, which round-level alternation cannot give on a VM whose speed moves within a
    minute. Returns each step's wall times (mean over its processes), one per cycle."""
    processes = []
    for python, code, threads in residents:
        env = dict(os.environ, **single_thread_env(), NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])))
        command = [python, str(Path(__file__).resolve()), "--resident", code, name, str(calls * len(steps))]
        processes.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                          start_new_session=True))

    def answer(process) -> dict:
        for line in process.stdout:
            if line.startswith(RESULT_TAG):
                return json.loads(line[len(RESULT_TAG):])
        raise RuntimeError(f"a resident worker on {name} ended early (exit code {process.wait()})")

    try:
        for process in processes:
            answer(process)
        walls: list[list[float]] = [[] for _ in steps]
        for k in range(calls):
            for s in (range(len(steps)) if k % 2 == 0 else reversed(range(len(steps)))):
                for r in steps[s]:
                    processes[r].stdin.write("go\n")
                    processes[r].stdin.flush()
                walls[s].append(statistics.mean(answer(processes[r])["wall"] for r in steps[s]))
    finally:
        for process in processes:
            process.stdin.close()
            process.wait()
    return walls


def run_round(python: str, code: str, name: str, threads: int, calls: int, copies: int = 1) -> dict:
    """One code's round in a fresh process; with `copies`, that many identical processes at once (their mean
    times): two one-thread copies measure what two cores give on this machine when both are busy."""
    env = dict(os.environ, **single_thread_env(), NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    if code == "ours":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    command = [python, str(Path(__file__).resolve()), "--worker", code, name, str(calls)]
    wall, busy, own = time.perf_counter(), busy_cpu_seconds(), children_cpu_seconds()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                  start_new_session=True) for _ in range(copies)]
    outputs = [process.communicate() for process in processes]
    wall = time.perf_counter() - wall
    results = [json.loads(line[len(RESULT_TAG):]) for stdout, _ in outputs for line in stdout.splitlines()
               if line.startswith(RESULT_TAG)]
    if len(results) != copies:
        raise RuntimeError(f"{code} on {name} failed:\n{(outputs[0][1] or outputs[0][0])[-2000:]}")
    result = results[0]
    for key in ("wall_us", "cpu_us"):
        result[key] = statistics.mean(r[key] for r in results)
    result["other_cores"] = max(0.0, (busy_cpu_seconds() - busy) - (children_cpu_seconds() - own)) / wall
    return result


def cpu_description() -> str:
    import numba
    from numba.misc.numba_sysinfo import get_sysinfo

    features = get_sysinfo().get("CPU Features", "").split()
    simd = "AVX-512" if "avx512f" in features else "AVX2" if "avx2" in features else "no AVX2"
    return f"{machine_info()}; LLVM target {numba.config.CPU_NAME or get_sysinfo().get('CPU Name')}, {simd}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--turns", type=int, default=TURNS, help="calls of each code taken in turns, 0: none")
    parser.add_argument("--worker", nargs=3, metavar=("CODE", "SYSTEM", "CALLS"), help=argparse.SUPPRESS)
    parser.add_argument("--resident", nargs=3, metavar=("CODE", "SYSTEM", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker or args.resident:
        code, name, calls = args.worker or args.resident
        (worker if args.worker else resident_worker)(code, name, int(calls))
        return 0
    motep = ensure_motep_venv(base_python())
    runs = [("ours", 1, 1), ("ours", 2, 1), ("ours", 1, 2)] + ([("motep", 1, 1)] if motep else [])
    rounds: dict[tuple, list[dict]] = {}  # (system, code, threads): one result per round
    for name in args.systems:
        for round_ in range(args.rounds):
            for code, threads, copies in runs:
                result = run_round(sys.executable if code == "ours" else motep, code, name, threads, args.calls,
                                   copies)
                log(f"round {round_ + 1} {name} {code} {threads} thread(s) x {copies}: {result['wall_us']:.1f} "
                    f"us/atom wall, {result['cpu_us']:.1f} CPU, other processes kept {result['other_cores']:.2f} "
                    f"cores busy")
                rounds.setdefault((name, code, threads, copies), []).append(result)

    def ratios(name, numerator, denominator, factor=1.0) -> str:
        """Per round (the codes ran minutes apart at most: the machine's drift cancels): median [min-max]."""
        values = sorted(factor * a["wall_us"] / b["wall_us"] for a, b in zip(rounds.get((name, *numerator), []),
                                                                            rounds.get((name, *denominator), [])))
        if not values:  # --rounds 0
            return "-"
        return f"{statistics.median(values):.2f}x [{values[0]:.2f}-{values[-1]:.2f}]"

    ours_1, ours_2, theirs = (sys.executable, "ours", 1), (sys.executable, "ours", 2), (motep, "motep", 1)
    in_turns = {}  # (system, what): per-call ratios
    for name in args.systems if args.turns else ():
        # a 1-thread process alone, the 2-thread one, two 1-thread processes at once: what two cores give then
        alone, two_threads, pair = turns([ours_1, ours_2, ours_1], [(0,), (1,), (0, 2)], name, args.turns)
        in_turns[(name, "threads")] = [a / b for a, b in zip(alone, two_threads)]
        in_turns[(name, "cores")] = [2.0 * a / b for a, b in zip(alone, pair)]
        if motep:
            theirs_walls, ours_walls = turns([theirs, ours_1], [(0,), (1,)], name, max(args.turns // 4, 8))
            in_turns[(name, "motep")] = [a / b for a, b in zip(theirs_walls, ours_walls)]
        log(f"{name} in turns: ours 1 thread / 2 {statistics.median(in_turns[(name, 'threads')]):.2f}x, two cores "
            f"give {statistics.median(in_turns[(name, 'cores')]):.2f}x")

    def quartiles(name, what) -> str:
        values = in_turns.get((name, what))
        if not values:
            return "-"
        low, median, high = statistics.quantiles(values, n=4)
        return f"{median:.2f}x [{low:.2f}-{high:.2f}]"

    print(f"CPU: {cpu_description()}")
    print(f"ratios of wall times within each of {args.rounds} rounds: median [min-max]; in turns: call by call, "
          "median [quartiles]")
    print(f"{'system':<22}{'motep / ours, 1 thread':>26}{'ours 1 thread / 2':>22}{'two cores give':>22}")
    for name in args.systems:
        label = f"{name} L{SYSTEMS[name][1]} {len(structures(name, 0)[0])} atoms"
        speed = ratios(name, ("motep", 1, 1), ("ours", 1, 1)) if motep else "-"
        print(f"{label:<22}{speed:>26}{ratios(name, ('ours', 1, 1), ('ours', 2, 1)):>22}"
              f"{ratios(name, ('ours', 1, 1), ('ours', 1, 2), 2.0):>22}")
        print(f"{'  in turns':<22}{quartiles(name, 'motep'):>26}{quartiles(name, 'threads'):>22}"
              f"{quartiles(name, 'cores'):>22}")
    print("two cores give: 2 x (one 1-thread process alone) / (two at once), the most 2 threads can gain here")
    print("\nmedian over the rounds of each round's median per atom and call, us (wall / CPU time of every thread):")
    for (name, code, threads, copies), results in rounds.items():
        wall = statistics.median(r["wall_us"] for r in results)
        cpu = statistics.median(r["cpu_us"] for r in results)
        print(f"  {name} {code:<6}{threads} thread(s) x {copies}: {wall:8.1f} / {cpu:8.1f}   max |F| of the last call "
              f"{results[-1]['max_force']:.4f} eV/Å")
    for name in args.systems:
        if motep and args.rounds:
            ours, theirs = (np.array(rounds[(name, code, 1, 1)][-1]["energies"]) for code in ("ours", "motep"))
            print(f"  {name}: largest energy difference ours - motep over the calls "
                  f"{np.abs(ours - theirs).max() / rounds[(name, 'ours', 1, 1)][-1]['atoms']:.2e} eV/atom")
    return 0


if __name__ == "__main__":
    sys.exit(main())
