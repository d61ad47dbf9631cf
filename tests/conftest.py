import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
FITTED = SHARED / "mlearn_zuo2020" / "fitted_mtp"
QUATERNARY = SHARED / "maml_NbMoTaW" / "mtp_yin2021" / "quaternary.mtp"
MLIP2_REFERENCE = SHARED / "mlip2_reference"


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED.is_dir():
        pytest.fail(f"the shared data folder {SHARED} is missing: clone the repository beside ../shared")
    return SHARED
