"""examples/alloy_hull.py, shortened (36 Cu-Pd candidates: fcc up to 4 atoms, bcc and hcp up to 2, a level-8 MTP,
one walker): fewer reference calls than relaxing with EMT, and a verified hull equal to EMT's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("icet")  # in the test extra; the screen extra for users
pytestmark = pytest.mark.processes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "alloy_hull.py"


@pytest.mark.timeout(900)  # 2-4 min on 2 cores, by load
def test_screening_learns_with_fewer_calls_and_verification_makes_the_hull_exact(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE), "--fcc", "4", "--bcc", "2", "--hcp", "2", "--level", "8",
                           "--walkers", "1", "--run-dir", str(tmp_path)],  # one walker: the same run every time
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    # the 1-atom fcc Pd cell may expand without end under the model (a false minimum the grade does not flag, issue
    # 16's notes): unconverged is allowed, a failed or unphysical relaxation is not
    status = result["screened_status"]
    assert result["candidates"] == 36 and status["converged"] >= 34 and status["failed"] == status["unphysical"] == 0
    assert result["fewer_calls"] > 4  # the full run's target is 20x, with 673 candidates
    # after verification: the hull's structures carry the reference's own minimum (up to fmax) and it is EMT's hull
    assert result["after"]["hull_error_max_mev"] < 0.1
    assert result["after"]["same_hull"] and result["hull_all_verified"]
    # not asserted: the model's formation energies before verification (their 5 meV/atom target is not met yet)
