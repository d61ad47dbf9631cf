"""examples/learn_heating.py, shortened: the harness runs through the ramp and reports finite numbers."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes  # starts other processes: not in the unit lane

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "learn_heating.py"
# 200 steps: 300 K to step 50, ramp to 900 K at step 100, held (not molten: few calls, a short test); windows
# of 50 steps from step 20; 5 iterations per refit
SHORT_RUN = ["--steps", 200, "--hot", 900, "--level", 10, "--probe-every", 10, "--window", 50, "--skip", 20, "--passive-every", 20,
             "--refit-iterations", 5]
PHASES = ["solid", "heating", "liquid"]


def finite(*values):
    return all(isinstance(value, float) and math.isfinite(value) for value in values)


def finite_errors(errors):
    return finite(errors["energy_rmse_mev"], errors["energy_bias_mev"], errors["force_rmse"])


@pytest.mark.timeout(600)  # 60-180 s on 2 cores, by load
def test_heating_harness_measures_the_answering_model(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, str(EXAMPLE), *map(str, SHORT_RUN), "--run-dir", run_dir],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    assert result == json.loads((run_dir / "learn_heating.json").read_text())
    assert (run_dir / "final.mtp").exists()
    assert result["stopped"] is None

    # 1. windows of 50 steps after the first 20: answering and final errors on the EMT probes
    assert [(w["start"], w["stop"]) for w in result["windows"]] == [(0, 50), (50, 100), (100, 150), (150, 200)]
    assert [w["probes"] for w in result["windows"]] == [3, 5, 5, 5]
    for window in result["windows"]:
        assert finite_errors(window["answering"]) and finite_errors(window["final"])
        assert finite(window["force_ratio"], window["energy_ratio"])

    # 2. MSD and RDF per phase; the learner's solid MD starts like the reference's (same seeds)
    assert [s["phase"] for s in result["structure"]] == PHASES
    for shape in result["structure"]:
        assert finite(*(value for key, value in shape.items() if key != "phase"))
        assert shape["msd_reference"] > 0 and shape["rdf_noise"] > 0
    assert result["structure"][0]["msd_deviation"] < 0.5

    # 3. final model and passive fit on the independent run, per phase; EMT's 300 K solid is easy
    assert [t["phase"] for t in result["test"]] == PHASES
    for test in result["test"]:
        assert test["snapshots"] > 0
        assert finite_errors(test["final"]) and finite_errors(test["passive"])
        assert finite(test["energy_ratio"], test["force_ratio"])
    assert result["test"][0]["final"]["force_rmse"] < 0.1  # eV/Å

    # 4. calls and holds, as printed
    calls = result["reference_calls"]
    assert calls == result["learner"]["reference_calls"] > 0
    assert result["calls_per_step"] == pytest.approx(calls / 200)
    holds = result["holds"]
    assert holds["count"] >= 1 and 0 < holds["median_s"] <= holds["max_s"] <= holds["total_s"]
    assert 0 < holds["fit_median_s"] <= holds["fit_max_s"] <= holds["max_s"]  # every hold fits all parameters
    assert 0 <= holds["back_to_back"] < holds["count"]
    printed = re.search(r"^4\. (\d+) reference calls in 200 MD steps .* (\d+) holds, median ([0-9.]+) s, "
                        r"max ([0-9.]+) s, total [0-9.]+ s; fits of all parameters in them median [0-9.]+ s, "
                        r"max [0-9.]+ s; (\d+) holds within 10 steps", done.stdout, re.MULTILINE)
    assert printed and int(printed[1]) == calls and int(printed[2]) == holds["count"]
    assert float(printed[4]) == pytest.approx(holds["max_s"], abs=0.01)
    assert int(printed[5]) == holds["back_to_back"]
