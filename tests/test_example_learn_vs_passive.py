"""examples/learn_vs_passive.py, shortened: both arms run, the table and the ratio are printed."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes  # starts other processes: not in the unit lane

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "learn_vs_passive.py"
SHORT_RUN = ["--steps", 60, "--level", 8, "--fit-iterations", 20, "--passive-sizes", "1,2", "--draws", 1,
             "--checkpoints", 2, "--test-size", 5]
ROW = re.compile(r"^(active|passive)\s+(\d+)\s+(\S+)\s+(\S+)$")


@pytest.mark.timeout(600)  # 50 s alone; with a cold Numba cache on a loaded machine, more than 300
def test_learning_on_the_fly_against_passive_learning(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE), *map(str, SHORT_RUN), "--run-dir", tmp_path / "run"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])

    # the printed table parses and agrees with the result
    rows = [ROW.match(line) for line in lines if ROW.match(line)]
    active = [(int(m[2]), float(m[3]), float(m[4])) for m in rows if m[1] == "active"]
    passive = [(int(m[2]), float(m[3]), float(m[4])) for m in rows if m[1] == "passive"]
    assert [row[0] for row in passive] == [1, 2]
    assert len(active) == len(result["active"]) >= 1
    assert active[-1][0] == result["learner"]["reference_calls"] > 0

    # the learnt model is a real fit: EMT is easy, a level-8 MTP gets within a few meV/atom
    calls, energy_error, force_error = active[-1]
    assert math.isfinite(energy_error) and energy_error < 5.0  # meV/atom
    assert math.isfinite(force_error) and force_error < 0.1  # eV/Å

    # the ratio is printed for both errors and is positive
    for name in ("energy", "forces"):
        line = next(line for line in lines if line.startswith(f"ratio ({name})"))
        printed = float(re.search(r"([<>=]?)([0-9.]+)x$", line)[2])
        assert printed > 0 and result["ratios"][name]["ratio"] == pytest.approx(printed, rel=0.01, abs=0.01)
