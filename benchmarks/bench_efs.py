#!/usr/bin/env python
"""Speed benchmark of energy + forces + stress (keystone issue, section 6).

System: fcc Cu, a = 3.61 Å, the 4-atom cubic cell repeated k x k x k (256, 2048, 16384 and
131072 atoms), every atom displaced by a Gaussian of 0.05 Å (fixed seed), cutoff 5.0 Å (about
43 neighbours per atom). Potentials: MLIP's fitted files from the mlearn benchmark (Zuo et al.
2020), Li.mtp (level 16) and Si.mtp (level 24), with ``max_dist`` set to 5.0 and Cu as type 0:
the same basis tables and realistic coefficients, only the cutoff changed.

What it measures, each size in a fresh subprocess:

* ours (mtp_driver): ``build_neighbor_list`` (vesin + Numba counting sort) and ``evaluate``
  (Numba kernels: site energies, forces, strain derivative), timed separately in the same call
  sequence, on 1 and on 2 threads (``numba.set_num_threads``); microseconds per atom per call,
  median of at least 5 calls after a warm-up call;
* motep 0.2.0 (PyPI), installed only into ``benchmarks/.venv-motep`` (created on first use), run
  through its ASE calculator ``motep.calculator.MTP`` with its ``cext`` engine (its default and
  its fastest: single-threaded C). Its per-call time is the steady-state
  ``calc.calculate(atoms, ["energy", "forces", "stress"])`` that reuses motep's neighbour list
  (ASE ``PrimitiveNeighborList`` with a 0.3 Å skin); the list build is timed separately;
* peak memory: /proc/self/status VmHWM of the worker, reset (/proc/self/clear_refs) after the
  imports and a warm-up on a tiny structure, so the delta is what one size costs; tracemalloc
  would miss Numba's allocations;
* the one-off JIT time: a small job run twice in fresh processes with NUMBA_CACHE_DIR pointing
  at a new empty directory (first: compiles and writes the cache; second: loads it).

No timed assertions: it only prints. Run from the repository root:

    python benchmarks/bench_efs.py            # full run, under 20 minutes on 2 cores
    python benchmarks/bench_efs.py --quick    # 256 and 2048 atoms only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = Path(os.environ.get("MTP_BENCH_DATA", REPO.parent / "shared" / "data" / "mlearn_zuo2020" / "fitted_mtp"))
POTENTIALS = {16: DATA / "Li.mtp", 24: DATA / "Si.mtp"}
MOTEP_VENV = HERE / ".venv-motep"
MOTEP_VERSION = "0.2.0"

LATTICE = 3.61  # Å, fcc Cu
RATTLE = 0.05  # Å
SEED = 20240601
CUTOFF = 5.0  # Å
CU = 29

SIZES = (256, 2048, 16384, 131072)
QUICK_SIZES = (256, 2048)
# motep's cext engine is about 100 (level 16) and 500-700 (level 24) us/atom: at 131072 atoms a
# level-24 call takes ~1.5 min, and 6 of them would exceed the time budget of the whole script.
MOTEP_MAX_ATOMS = {16: 131072, 24: 16384}

# Figures from the keystone issue, measured earlier on this machine kind (not in this run).
MLIP2_REFERENCE = {16: (120.0, 140.0), 24: (635.0, 660.0)}  # us/atom, one core, MTP part only
MOTEP_ISSUE_REFERENCE = {16: 135.0, 24: 717.0}  # us/atom, motep 0.2.0, one core

PROPERTIES = ["energy", "forces", "stress"]
RESULT_TAG = "BENCH-RESULT "


# --------------------------------------------------------------------------------------------
# shared by the workers (both interpreters: the project's and motep's venv; numpy + ase only)


def fcc_cu(n_atoms: int, seed: int = SEED):
    """fcc Cu, cubic cell repeated k times along each axis, rattled by RATTLE Å (fixed seed)."""
    from ase.build import bulk

    reps = round((n_atoms / 4) ** (1 / 3))
    if 4 * reps**3 != n_atoms:
        raise ValueError(f"{n_atoms} atoms is not 4 k^3")
    atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat((reps, reps, reps))
    noise = np.random.RandomState(seed).normal(scale=RATTLE, size=(n_atoms, 3))
    atoms.positions = atoms.positions + noise
    return atoms


def proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def reset_peak_memory() -> tuple[int, bool]:
    """Reset VmHWM to the current RSS where the kernel allows it; return (baseline KiB, reset?)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return proc_status_kib("VmRSS"), True
    except OSError:
        return proc_status_kib("VmHWM"), False


def repeat_count(first_call_seconds: float, min_repeats: int, min_time: float, max_repeats: int = 200) -> int:
    """At least min_repeats calls, more for fast calls so that timing spans about min_time."""
    if first_call_seconds <= 0:
        return max_repeats
    return int(min(max_repeats, max(min_repeats, math.ceil(min_time / first_call_seconds))))


def emit(result: dict) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# workers


def worker_ours(level: int, n_atoms: int, threads: int, min_repeats: int, min_time: float) -> None:
    import numba

    from mtp_driver.io import read_mtp
    from mtp_driver.mtp.evaluate import evaluate
    from mtp_driver.mtp.layout import kernel_layout
    from mtp_driver.mtp.neighbors import build_neighbor_list

    numba.set_num_threads(threads)
    mtp = read_mtp(POTENTIALS[level]).copy(max_dist=CUTOFF)
    layout = kernel_layout(mtp)

    def call(atoms, types):
        volume = atoms.get_volume()
        t0 = time.perf_counter()
        neighbor_list = build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)
        t1 = time.perf_counter()
        result = evaluate(mtp, types, neighbor_list, layout)
        stress = result.strain_derivative / volume  # ASE sign convention (3x3)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, result, stress, neighbor_list

    small = fcc_cu(32)
    call(small, np.zeros(len(small), dtype=np.int64))  # JIT (or cache load) outside the timing
    baseline_kib, reset = reset_peak_memory()

    atoms = fcc_cu(n_atoms)
    types = np.zeros(n_atoms, dtype=np.int64)
    nl_first, kernel_first, *_ = call(atoms, types)  # warm-up at this size
    repeats = repeat_count(nl_first + kernel_first, min_repeats, min_time)
    nl_times, kernel_times, total_times = [], [], []
    for _ in range(repeats):
        nl_time, kernel_time, result, stress, neighbor_list = call(atoms, types)
        nl_times.append(nl_time)
        kernel_times.append(kernel_time)
        total_times.append(nl_time + kernel_time)
    emit(dict(
        code="ours", level=level, atoms=n_atoms, threads=threads, repeats=repeats,
        threading_layer=numba.threading_layer(), numba_threads=numba.get_num_threads(),
        nl_us=1e6 * statistics.median(nl_times) / n_atoms,
        kernel_us=1e6 * statistics.median(kernel_times) / n_atoms,
        total_us=1e6 * statistics.median(total_times) / n_atoms,
        neighbours=len(neighbor_list.neighbors) / n_atoms,
        energy_per_atom=result.energy / n_atoms,
        max_force=float(np.abs(result.forces).max()),
        stress_trace=float(np.trace(stress)),
        peak_kib=proc_status_kib("VmHWM"), baseline_kib=baseline_kib, peak_reset=reset,
    ))


def worker_motep(level: int, n_atoms: int, engine: str, min_repeats: int, min_time: float) -> None:
    from ase.calculators.calculator import all_changes
    from motep.calculator import MTP as MotepCalculator
    from motep.io.mlip.mtp import read_mtp as motep_read_mtp

    def calculator():
        data = motep_read_mtp(POTENTIALS[level])
        data.radial_basis.max = np.float64(CUTOFF)
        data.species = [CU]  # type 0 is Cu
        return MotepCalculator(data, engine=engine)

    small = fcc_cu(32)
    calculator().calculate(small, PROPERTIES, all_changes)  # imports and first-call costs
    baseline_kib, reset = reset_peak_memory()

    atoms = fcc_cu(n_atoms)
    calc = calculator()
    t0 = time.perf_counter()
    calc.calculate(atoms, PROPERTIES, all_changes)  # builds motep's neighbour list: warm-up
    first = time.perf_counter() - t0
    repeats = repeat_count(first, min_repeats, min_time)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        calc.calculate(atoms, PROPERTIES, all_changes)  # positions unchanged: list reused
        times.append(time.perf_counter() - t0)
    results = dict(calc.results)
    # motep's own neighbour list (ASE PrimitiveNeighborList + its padded per-atom arrays)
    nl_times = []
    for _ in range(repeat_count(first, min_repeats, min_time / 2)):
        calc.engine.neighbor_list = None
        t0 = time.perf_counter()
        calc.engine.update_neighbor_list(atoms)
        nl_times.append(time.perf_counter() - t0)
    emit(dict(
        code="motep", engine=engine, level=level, atoms=n_atoms, threads=1, repeats=repeats,
        nl_repeats=len(nl_times),
        kernel_us=1e6 * statistics.median(times) / n_atoms,
        nl_us=1e6 * statistics.median(nl_times) / n_atoms,
        energy_per_atom=float(results["energy"]) / n_atoms,
        max_force=float(np.abs(results["forces"]).max()),
        stress_trace=float(np.sum(results["stress"][:3])),
        peak_kib=proc_status_kib("VmHWM"), baseline_kib=baseline_kib, peak_reset=reset,
    ))


def worker_jit(level: int, n_atoms: int) -> None:
    t0 = time.perf_counter()
    from mtp_driver.io import read_mtp
    from mtp_driver.mtp.evaluate import evaluate
    from mtp_driver.mtp.layout import kernel_layout
    from mtp_driver.mtp.neighbors import build_neighbor_list

    import_time = time.perf_counter() - t0
    mtp = read_mtp(POTENTIALS[level]).copy(max_dist=CUTOFF)
    layout = kernel_layout(mtp)
    atoms = fcc_cu(n_atoms)
    types = np.zeros(n_atoms, dtype=np.int64)
    calls = []
    for _ in range(2):
        t0 = time.perf_counter()
        evaluate(mtp, types, build_neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF), layout)
        calls.append(time.perf_counter() - t0)
    emit(dict(code="jit", import_s=import_time, first_call_s=calls[0], second_call_s=calls[1]))


# --------------------------------------------------------------------------------------------
# driver


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def busy_cpu_seconds() -> float:
    """CPU time spent by the whole machine (all processes) since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(python: str, arguments: list[str], env_changes: dict | None = None,
               timeout: float | None = None) -> tuple[dict | None, float, str]:
    """Run one measurement in a fresh process; the result records how many cores other processes
    kept busy meanwhile (machine CPU time minus the worker's own, per second of wall time)."""
    env = dict(os.environ)
    env.update(env_changes or {})
    if python == sys.executable:  # ours: measure this tree's mtp_driver even if not installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    command = [python, str(Path(__file__).resolve()), "--worker", *arguments]
    t0, busy0, own0 = time.perf_counter(), busy_cpu_seconds(), children_cpu_seconds()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - t0
    other_cores = max(0.0, (busy_cpu_seconds() - busy0) - (children_cpu_seconds() - own0)) / wall
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result["other_cores"] = other_cores
            return result, wall, ""
    return None, wall, (completed.stderr or completed.stdout).strip()[-2000:]


def single_thread_env() -> dict:
    return {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def ensure_motep_venv(python_for_venv: str) -> str | None:
    """Python of benchmarks/.venv-motep with motep==MOTEP_VERSION, created on first use."""
    python = MOTEP_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m, motep.calculator; print(m.version('motep'))"]
    if python.exists():
        probe = subprocess.run(check, capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == MOTEP_VERSION:
            return str(python)
    log(f"creating {MOTEP_VENV} with motep=={MOTEP_VERSION} (first use only)")
    try:
        if not python.exists():
            subprocess.run([python_for_venv, "-m", "venv", str(MOTEP_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"motep=={MOTEP_VERSION}"], check=True)
        probe = subprocess.run(check, capture_output=True, text=True, check=True)
    except (subprocess.CalledProcessError, OSError) as error:
        log(f"motep could not be installed ({error}); motep columns will be empty")
        return None
    return str(python) if probe.stdout.strip() == MOTEP_VERSION else None


def base_python() -> str:
    """An interpreter to create the motep venv from (the running one, a venv's works too)."""
    return sys.executable


def measure_jit(level: int) -> dict:
    cache = tempfile.mkdtemp(prefix="mtp-bench-numba-cache-")
    try:
        runs = []
        for label in ("cold", "warm"):
            result, wall, error = run_worker(sys.executable, ["jit", str(level), "256"],
                                             {"NUMBA_CACHE_DIR": cache})
            if result is None:
                log(f"JIT measurement ({label} cache) failed: {error}")
                return {}
            result["process_s"] = wall
            runs.append(result)
        return {"cold": runs[0], "warm": runs[1]}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def fmt(value, digits=1, width=8) -> str:
    if value is None:
        return "-".rjust(width)
    return f"{value:{width}.{digits}f}"


def ratio(a, b) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def machine_info() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        commit = "?"
    import numba

    return (f"{cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, numba "
            f"{numba.__version__}, numpy {np.__version__}; mtp_driver at commit {commit}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only 256 and 2048 atoms")
    parser.add_argument("--sizes", type=int, nargs="+", help="atom counts (4 k^3); default 256 2048 16384 131072")
    parser.add_argument("--levels", type=int, nargs="+", default=[16, 24], choices=sorted(POTENTIALS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5, help="minimum timed calls after the warm-up (>= 5)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="small sizes repeat until the timed calls span about this many seconds")
    parser.add_argument("--no-motep", action="store_true", help="skip motep")
    parser.add_argument("--motep-engine", default="cext", help="motep engine (cext: its fastest)")
    parser.add_argument("--motep-max-atoms-16", type=int, default=MOTEP_MAX_ATOMS[16])
    parser.add_argument("--motep-max-atoms-24", type=int, default=MOTEP_MAX_ATOMS[24])
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, *rest = args.worker
        if kind == "ours":
            worker_ours(int(rest[0]), int(rest[1]), int(rest[2]), args.repeats, args.min_time)
        elif kind == "motep":
            worker_motep(int(rest[0]), int(rest[1]), rest[2], args.repeats, args.min_time)
        elif kind == "jit":
            worker_jit(int(rest[0]), int(rest[1]))
        return 0

    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    for n in sizes:
        k = round((n / 4) ** (1 / 3))
        if 4 * k**3 != n:
            parser.error(f"{n} atoms is not 4 k^3 (the cubic fcc cell repeated k x k x k)")
    motep_cap = {16: args.motep_max_atoms_16, 24: args.motep_max_atoms_24}
    start = time.perf_counter()
    load_start = os.getloadavg()

    motep_python = None if args.no_motep else ensure_motep_venv(base_python())

    log("JIT: two fresh processes sharing a new, empty NUMBA_CACHE_DIR")
    jit = measure_jit(16)

    timing = ["--repeats", str(args.repeats), "--min-time", str(args.min_time)]
    results = {}  # (code, level, atoms, threads) -> result
    failures = []
    for level in args.levels:
        for n in sizes:
            for threads in args.threads:
                log(f"ours   level {level}  {n:6d} atoms  {threads} thread(s)")
                env = single_thread_env() if threads == 1 else {}
                result, _, error = run_worker(sys.executable, ["ours", str(level), str(n), str(threads), *timing], env)
                if result is None:
                    failures.append(f"ours level {level} {n} atoms {threads} threads: {error}")
                else:
                    results[("ours", level, n, threads)] = result
            if motep_python and n <= motep_cap[level]:
                log(f"motep  level {level}  {n:6d} atoms  1 thread ({args.motep_engine} engine)")
                env = single_thread_env() | {"OMP_NUM_THREADS": "1"}
                result, _, error = run_worker(motep_python, ["motep", str(level), str(n), args.motep_engine, *timing],
                                              env)
                if result is None:
                    failures.append(f"motep level {level} {n} atoms: {error}")
                else:
                    results[("motep", level, n, 1)] = result

    report(args, sizes, results, jit, motep_python, motep_cap, failures,
           load_start, os.getloadavg(), time.perf_counter() - start)
    return 0


def report(args, sizes, results, jit, motep_python, motep_cap, failures, load_start, load_end, elapsed) -> None:
    out = print
    out("=" * 100)
    out("MTP energy + forces + stress benchmark (benchmarks/bench_efs.py"
        + (" --quick" if args.quick else "") + ")")
    out(f"machine: {machine_info()}")
    out(f"load average (1, 5, 15 min) at start {tuple(round(x, 2) for x in load_start)}, "
        f"at end {tuple(round(x, 2) for x in load_end)}; per measurement, the 'other load' column "
        f"says how many cores other processes kept busy")
    out(f"system: fcc Cu a = {LATTICE} Å, cubic cell repeated, rattled {RATTLE} Å (seed {SEED}), "
        f"cutoff {CUTOFF} Å; potentials {POTENTIALS[16].name} (level 16) and {POTENTIALS[24].name} "
        f"(level 24) from {DATA}, max_dist set to {CUTOFF}")
    out("times: microseconds per atom per energy+forces+stress call, median of >= "
        f"{args.repeats} calls after a warm-up call (more calls for small sizes)")
    out("  ours: NL = build_neighbor_list (vesin + counting sort), kernel = evaluate(); total = both, "
        "the list rebuilt every call")
    if motep_python:
        out(f"  motep {MOTEP_VERSION}: ASE calculator motep.calculator.MTP, engine '{args.motep_engine}' "
            "(single-threaded C; its default, and faster than its numba engine); per call = steady-state "
            "calculate() reusing its neighbour list; NL = rebuilding its ASE PrimitiveNeighborList")
        capped = [f"level {lv}: up to {motep_cap[lv]} atoms" for lv in args.levels if any(n > motep_cap[lv] for n in sizes)]
        if capped:
            out("  motep sizes capped to keep the run short (" + "; ".join(capped) + ")")
    else:
        out("  motep: not measured (--no-motep, or its venv could not be created)")
    out("memory: peak RSS (VmHWM) of a fresh worker process per size, minus its RSS after imports "
        "and JIT warm-up")
    out("")

    for level in args.levels:
        out(f"Level {level}")
        header = (f"{'atoms':>7} {'nbrs':>5} | {'1 thread: kernel':>16} {'NL':>6} {'total':>7} | "
                  f"{'2 threads: kernel':>17} {'NL':>6} {'total':>7} {'x1T':>5} | "
                  f"{'motep':>7} {'NL':>7} {'motep/ours':>10} {'(incl NL)':>9} | "
                  f"{'mem MB ours':>11} {'motep':>7} | {'E/atom ours - motep':>19} | {'other load 1T/2T/motep':>22}")
        out(header)
        out("-" * len(header))
        for n in sizes:
            one = results.get(("ours", level, n, 1))
            two = results.get(("ours", level, n, 2))
            mot = results.get(("motep", level, n, 1))
            g = lambda r, key: None if r is None else r[key]  # noqa: E731
            speedup = ratio(g(one, "kernel_us"), g(two, "kernel_us"))
            motep_total = None if mot is None else mot["kernel_us"] + mot["nl_us"]
            mem = lambda r: None if r is None else (r["peak_kib"] - r["baseline_kib"]) / 1024  # noqa: E731
            diff = None if (one is None or mot is None) else one["energy_per_atom"] - mot["energy_per_atom"]
            nbrs = g(one, "neighbours") or g(two, "neighbours")
            motep_missing = "capped" if (motep_python and n > motep_cap[level]) else "-"
            out(f"{n:7d} {fmt(nbrs, 1, 5)} | {fmt(g(one, 'kernel_us'), 2, 16)} {fmt(g(one, 'nl_us'), 2, 6)} "
                f"{fmt(g(one, 'total_us'), 2, 7)} | {fmt(g(two, 'kernel_us'), 2, 17)} {fmt(g(two, 'nl_us'), 2, 6)} "
                f"{fmt(g(two, 'total_us'), 2, 7)} {fmt(speedup, 2, 5)} | "
                + (f"{fmt(mot['kernel_us'], 1, 7)} {fmt(mot['nl_us'], 1, 7)} "
                   f"{fmt(ratio(mot['kernel_us'], g(one, 'kernel_us')), 2, 10)} "
                   f"{fmt(ratio(motep_total, g(one, 'total_us')), 2, 9)}" if mot else
                   f"{motep_missing:>7} {'':>7} {'':>10} {'':>9}")
                + f" | {fmt(mem(one), 1, 11)} {fmt(mem(mot), 1, 7)} | "
                + (f"{diff:19.1e}" if diff is not None else f"{'-':>19}")
                + " | " + "/".join("-" if r is None else f"{r['other_cores']:.1f}" for r in (one, two, mot)).rjust(22))
        out("  kernel and NL: us/atom; x1T = 1-thread kernel time / 2-thread kernel time; motep/ours = motep per-call "
            "time / ours 1-thread kernel time (both without building a neighbour list), (incl NL) = both "
            "rebuilding their neighbour list every call; other load = cores kept busy by other processes "
            "during that measurement (0.0 = quiet; on 2 cores anything above ~0.2 slows the 2-thread run)")
        out("")

    out("Reference figures from the keystone issue, MLIP-2 figure measured earlier on this machine kind, "
        "not in this run (one core, MTP part only):")
    for level in args.levels:
        low, high = MLIP2_REFERENCE[level]
        largest = max((n for n in sizes if ("ours", level, n, 1) in results), default=None)
        line = (f"  level {level}: MLIP-2 C++ {low:.0f}-{high:.0f} us/atom; motep 0.2.0 (issue figure) "
                f"~{MOTEP_ISSUE_REFERENCE[level]:.0f} us/atom")
        if largest is not None:
            ours = results[("ours", level, largest, 1)]
            line += (f"; ours, 1 thread, {largest} atoms: kernel {ours['kernel_us']:.1f} us/atom -> MLIP-2/ours "
                     f"{low / ours['kernel_us']:.1f}-{high / ours['kernel_us']:.1f}x (kernel), "
                     f"{low / ours['total_us']:.1f}-{high / ours['total_us']:.1f}x (incl. NL)")
        out(line)
    out("")

    if jit:
        cold, warm = jit["cold"], jit["warm"]
        out("JIT (level 16, 256 atoms; fresh NUMBA_CACHE_DIR): "
            f"first process {cold['process_s']:.1f} s in all (import {cold['import_s']:.1f} s, first call "
            f"{cold['first_call_s']:.1f} s = compile + run), second process {warm['process_s']:.1f} s in all "
            f"(import {warm['import_s']:.1f} s, first call {warm['first_call_s']:.2f} s = cache load + run); "
            f"a steady call takes {warm['second_call_s'] * 1e3:.1f} ms")
    else:
        out("JIT: not measured (see the errors above)")
    any_ours = next((r for k, r in results.items() if k[0] == "ours" and k[3] > 1), None)
    if any_ours:
        out(f"numba threading layer: {any_ours['threading_layer']}")
    for failure in failures:
        out(f"FAILED: {failure}")
    out(f"benchmark wall time: {elapsed / 60:.1f} min")
    out("")

    # markdown for the README
    out("Markdown (README):")
    out("")
    out(f"| level | atoms | ours 1 thread: kernel + NL (µs/atom) | ours 2 threads: kernel + NL | "
        f"motep {MOTEP_VERSION} ({args.motep_engine}, 1 core) | motep / ours (1 thread, kernel) | "
        f"peak memory ours (MB) |")
    out("|---:|---:|---:|---:|---:|---:|---:|")
    for level in args.levels:
        for n in sizes:
            one = results.get(("ours", level, n, 1))
            two = results.get(("ours", level, n, 2))
            mot = results.get(("motep", level, n, 1))
            cell = lambda r: "-" if r is None else f"{r['kernel_us']:.1f} + {r['nl_us']:.1f}"  # noqa: E731
            if mot is not None:
                motep_cell = f"{mot['kernel_us']:.0f}"
                ratio_cell = f"{mot['kernel_us'] / one['kernel_us']:.1f}" if one else "-"
            else:
                motep_cell = "not run (capped)" if motep_python and n > motep_cap[level] else "-"
                ratio_cell = "-"
            mem_cell = "-" if one is None else f"{(one['peak_kib'] - one['baseline_kib']) / 1024:.0f}"
            out(f"| {level} | {n} | {cell(one)} | {cell(two)} | {motep_cell} | {ratio_cell} | {mem_cell} |")
    out("")
    refs = "; ".join(f"level {lv}: {MLIP2_REFERENCE[lv][0]:.0f}-{MLIP2_REFERENCE[lv][1]:.0f} µs/atom"
                     for lv in args.levels)
    out(f"MLIP-2 C++, one core (figure measured earlier on this machine kind, not in this run): {refs}.")
    if jit:
        out(f"JIT: first process {jit['cold']['process_s']:.1f} s (compiles, empty cache), "
            f"second process {jit['warm']['process_s']:.1f} s (cached), whole process including imports.")
    worst = max((r["other_cores"] for r in results.values()), default=0.0)
    load = (f"; other processes kept up to {worst:.1f} of the cores busy during some measurements"
            if worst > 0.2 else "; quiet machine")
    out(f"fcc Cu, 5.0 Å cutoff, {os.cpu_count()} logical CPUs{load}. Command: `python benchmarks/bench_efs.py"
        + (" --quick" if args.quick else "") + "`.")


if __name__ == "__main__":
    sys.exit(main())
