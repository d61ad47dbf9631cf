"""The `mtp-driver` subcommands over real files, run as a user runs them."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import FITTED, MLIP2_REFERENCE, QUATERNARY
from mtp_driver.io.cfg import read_cfg

pytestmark = pytest.mark.processes  # starts other processes: not in the unit lane


def mtp_driver(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "mtp_driver.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"mtp-driver {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_calc_efs_writes_mlip2_numbers(shared_data, tmp_path):
    out = tmp_path / "out.cfg"
    mtp_driver("calc-efs", QUATERNARY, MLIP2_REFERENCE / "NbMo_Test.cfg", out, "--species", "Nb,Mo,Ta,W")
    ours = read_cfg(out, species=["Nb", "Mo", "Ta", "W"])
    reference = read_cfg(MLIP2_REFERENCE / "NbMo_Test.mlip2.cfg", species=["Nb", "Mo", "Ta", "W"])
    assert len(ours) == len(reference) == 40
    for a, b in zip(ours, reference):
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < 2e-9 * len(a)
        assert np.abs(a.get_forces() - b.get_forces()).max() < 2e-6


def test_calc_efs_reads_and_writes_ase_formats(shared_data, tmp_path):
    structures = read_cfg(MLIP2_REFERENCE / "Li.test.cfg", species=["Li"])[:3]
    import ase.io

    ase.io.write(tmp_path / "in.extxyz", structures)
    mtp_driver("calc-efs", FITTED / "Li.mtp", tmp_path / "in.extxyz", tmp_path / "out.extxyz", "--species", "Li")
    predicted = ase.io.read(tmp_path / "out.extxyz", index=":")
    assert len(predicted) == 3 and predicted[0].get_forces().shape == (len(structures[0]), 3)


def test_calc_errors_matches_published_li_errors(shared_data):
    output = mtp_driver("calc-errors", FITTED / "Li.mtp", MLIP2_REFERENCE / "Li.test.cfg", "--species", "Li").stdout
    rows = {line.split()[0]: line.split() for line in output.splitlines()[2:]}
    # Zuo et al. 2020 Li MTP on the mlearn test set: 0.660 meV/atom and 0.0132 eV/Å RMSE
    assert float(rows["energy_per_atom"][3]) == pytest.approx(0.660e-3, abs=0.0005e-3)
    assert float(rows["forces"][3]) == pytest.approx(0.0132, abs=0.00005)


def test_user_errors_are_one_line(shared_data, tmp_path):
    missing = mtp_driver("calc-errors", FITTED / "Li.mtp", tmp_path / "nope.cfg", "--species", "Li", check=False)
    assert missing.returncode == 2 and "No such file" in missing.stderr and "Traceback" not in missing.stderr
    wrong = mtp_driver("calc-efs", FITTED / "Li.mtp", MLIP2_REFERENCE / "Li.test.cfg", tmp_path / "o.cfg",
                       "--species", "Li,Cu", check=False)
    assert wrong.returncode == 2 and "1 types" in wrong.stderr
    broken = tmp_path / "broken.cfg"
    broken.write_text("BEGIN_CFG\n Size\n    2\n AtomData: id type cartes_x cartes_y cartes_z\n 1 0 0 0 0\n")
    bad = mtp_driver("calc-efs", FITTED / "Li.mtp", broken, tmp_path / "o.cfg", "--species", "Li", check=False)
    assert bad.returncode == 2 and "broken.cfg, line" in bad.stderr
    mtp_driver("init", 8, "--species", "Cu", "--min-dist", 2.0, "--max-dist", 5.0, "-o", tmp_path / "u.mtp")
    learn = mtp_driver("learn", tmp_path / "u.mtp", "--species", "Cu", "--run-dir", tmp_path / "run",
                       "--template", tmp_path / "nope.xyz", "--unix", "x", check=False)
    assert learn.returncode == 2 and "nope.xyz' does not exist" in learn.stderr and "Traceback" not in learn.stderr
    reference = mtp_driver("learn", tmp_path / "u.mtp", "--species", "Cu", "--run-dir", tmp_path / "run",
                           "--template", tmp_path / "nope.xyz", "--unix", "x", "--threshold-save", 0.5, check=False)
    assert reference.returncode == 2 and "threshold_save" in reference.stderr


def test_init_writes_untrained_potential(tmp_path):
    from mtp_driver.io.mtp_file import read_mtp

    out = tmp_path / "untrained.mtp"
    result = mtp_driver("init", 16, "--species", "Cu,Ag", "--min-dist", 2.0, "--max-dist", 5.0, "-o", out)
    mtp = read_mtp(out)
    assert (mtp.level, mtp.species_count, mtp.alpha_scalar_moments, mtp.radial_funcs_count) == (16, 2, 92, 4)
    assert mtp.species == ("Cu", "Ag") and not mtp.is_trained
    assert mtp.parameter_count == 2 * 2 * 4 * 8 + 2 + 92
    assert f"{mtp.parameter_count} parameters" in result.stdout
    bad = mtp_driver("init", 15, "--species", "Cu", "--min-dist", 2.0, "--max-dist", 5.0, "-o", out, check=False)
    assert bad.returncode == 2 and "level" in bad.stderr


@pytest.mark.parametrize("command, settings_module, settings_name",
                         [("learn", "mtp_driver.learn.settings", "LearnSettings"),
                          ("relax", "mtp_driver.screen.settings", "RelaxSettings")])
def test_every_setting_is_an_option_whose_help_is_the_settings_own(command, settings_module, settings_name):
    import dataclasses
    import importlib

    from mtp_driver.cli import build_parser

    settings = getattr(importlib.import_module(settings_module), settings_name)
    subcommands = next(action for action in build_parser()._actions if action.choices and command in action.choices)
    options = {action.dest: action for action in subcommands.choices[command]._actions}
    for field in dataclasses.fields(settings):
        if field.name in ("species", "reference"):  # --species and the --reference* options say these
            continue
        assert field.metadata.get("help"), f"{settings_name}.{field.name} has no help"
        assert options[field.name].help.startswith(field.metadata["help"]), field.name
        if options[field.name].default is not None and not isinstance(options[field.name].const, bool):
            assert options[field.name].default == field.default, field.name
