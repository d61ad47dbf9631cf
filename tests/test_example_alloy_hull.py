"""examples/alloy_hull.py, shortened (36 Cu-Pd candidates: fcc up to 4 atoms, bcc and hcp up to 2, a level-8 MTP):
the screening's three facts at looser bounds than the full run's targets."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("icet")  # in the test extra; the screen extra for users
pytestmark = pytest.mark.processes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "alloy_hull.py"


@pytest.mark.timeout(900)  # 2-4 min on 2 cores, by load
def test_screening_learns_the_hull_with_fewer_calls_and_verification_makes_it_exact(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE), "--fcc", "4", "--bcc", "2", "--hcp", "2", "--level", "8",
                           "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["candidates"] == 36 and result["screened_status"]["converged"] == 36
    assert result["fewer_calls"] > 4  # the full run's target is 20x, with 673 candidates
    assert result["before"]["hull_error_max_mev"] < 10  # target 5 meV/atom on the full run
    assert result["after"]["hull_error_max_mev"] < 0.1  # the reference's own minimum, up to fmax
    assert result["after"]["same_hull"] and result["hull_all_verified"]
