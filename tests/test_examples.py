"""The worked examples, shortened: each runs end to end and prints what it promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]


def run_example(name, *args):
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_relaxation_through_socketio_with_learning(tmp_path):
    result = run_example("learn_relaxation_socketio.py", "--run-dir", tmp_path, "--repeat", 2)
    assert result["reference_calls"] >= 1
    assert result["energy_learned"] == pytest.approx(result["energy_emt"], abs=0.1)
    assert result["emt_fmax_at_learned_minimum"] < 0.2


def test_pimd_eight_beads_two_drivers_one_learner(tmp_path):
    result = run_example("learn_pimd_two_drivers.py", "--steps", 10, "--run-dir", tmp_path)
    assert result["ipi_exit"] == 0 and result["computed_twice"] == 0
    assert sum(result["requests_per_driver"]) == 8 * 11 and min(result["requests_per_driver"]) > 0
    assert result["reference_calls"] > 0


def test_neb_vacancy_hop_learned_on_the_fly(tmp_path):
    result = run_example("learn_neb_vacancy.py", "--images", 3, "--refit-iterations", 60, "--run-dir", tmp_path)
    assert result["converged"]
    assert result["barrier_learned"] == pytest.approx(result["barrier_emt"], abs=0.03)  # eV
    assert 0 < result["reference_calls"] < result["requests"] / 10

