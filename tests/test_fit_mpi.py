"""`mpirun -n 2 mtp-driver train ...` gives the same potential as one process."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED
from mtp_driver.fit.dataset import make_batch
from mtp_driver.fit.loss import Objective, parameters_of
from mtp_driver.fit.mlearn import read_mlearn
from mtp_driver.fit.options import LossWeights
from mtp_driver.io.cfg import write_cfg
from mtp_driver.io.mtp_file import read_mtp, write_mtp
from mtp_driver.mtp.basis import untrained_mtp

BIN = Path(sys.executable).parent
MPIRUN = shutil.which("mpirun", path=str(BIN)) or shutil.which("mpiexec", path=str(BIN))
CLI = shutil.which("mtp-driver", path=str(BIN))
pytest.importorskip("mpi4py")
pytestmark = [pytest.mark.processes,
              pytest.mark.skipif(MPIRUN is None or CLI is None,
                                 reason=f"no mpirun/mpiexec (mpich wheel) or mtp-driver script in {BIN}")]


@pytest.fixture(scope="module")
def problem(tmp_path_factory, shared_data):
    directory = tmp_path_factory.mktemp("mpi")
    # configurations of different sizes, so that the ranks get unequal shares
    images = read_mlearn(SHARED / "mlearn_zuo2020" / "Li" / "training.json.xz")[::10]
    write_cfg(directory / "train.cfg", images, species=["Li"])
    write_mtp(untrained_mtp(8, 1, 2.0, 5.0, species=["Li"]), directory / "init.mtp")
    return directory, images


def fitted(directory: Path, ranks: int) -> Path:
    output = directory / f"fitted_{ranks}.mtp"
    command = [CLI, "train", str(directory / "init.mtp"), str(directory / "train.cfg"), "-o", str(output),
               "--max-iter", "40", "--stress-weight", "0.001", "--no-progress"]
    if ranks > 1:
        command = [MPIRUN, "-n", str(ranks)] + command
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return output


def test_two_ranks_give_the_same_fit_as_one(problem):
    directory, images = problem
    one, two = read_mtp(fitted(directory, 1)), read_mtp(fitted(directory, 2))
    losses = []
    for mtp in (one, two):
        batch = make_batch(images, ["Li"], mtp.max_dist)
        losses.append(Objective(mtp, batch, LossWeights(), len(images))(parameters_of(mtp), gradient=False).loss)
    assert abs(losses[1] - losses[0]) <= 1e-10 * abs(losses[0])
    # the reductions are exact and in a fixed order: in fact every coefficient is the same
    np.testing.assert_array_equal(parameters_of(one), parameters_of(two))
    assert one.scaling == two.scaling
