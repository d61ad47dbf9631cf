"""Small real fits: an error bound on held-out data, options, resuming, and the command line."""

import numpy as np
import pytest

from conftest import SHARED
from mtp_driver.calculator import MTPCalculator, predict
from mtp_driver.cli import main
from mtp_driver.fit import LossWeights, TrainOptions, train
from mtp_driver.fit.dataset import make_batch
from mtp_driver.fit.loss import Objective, parameters_of
from mtp_driver.fit.mlearn import read_mlearn
from mtp_driver.io.cfg import write_cfg
from mtp_driver.io.mtp_file import read_mtp, write_mtp
from mtp_driver.metrics import error_table
from mtp_driver.mtp.basis import untrained_mtp

LI = SHARED / "mlearn_zuo2020" / "Li"
# Bounds for the tiny fit below (level 8, 49 configurations, 60 iterations; measured 2.06 meV/atom
# and 0.0271 eV/Å on the 29 test configurations): about 1.5x the measured errors. For scale, the
# published level-16 MTP has 0.66 meV/atom and 0.0132 eV/Å.
ENERGY_BOUND = 3e-3  # eV/atom
FORCE_BOUND = 0.04  # eV/Å


@pytest.fixture(scope="module")
def lithium(shared_data):
    training = read_mlearn(LI / "training.json.xz")
    return training[::5], read_mlearn(LI / "test.json.xz")


def test_tiny_fit_is_below_the_error_bound_on_the_test_set(lithium):
    training, test = lithium
    options = TrainOptions(weights=LossWeights(stress=0.0), max_iter=60, update_min_dist=True)
    result = train(untrained_mtp(8, 1, 2.0, 5.0, species=["Li"]), training, options=options, progress=False)
    assert result.iterations == 60 and result.stop_reason == "max_iter"
    losses = [entry["loss"] for entry in result.history]
    assert losses[-1] < 0.2 * losses[0]
    errors = error_table(test, predict(MTPCalculator(result.mtp), test))
    assert errors["energy_per_atom"].rmse < ENERGY_BOUND
    assert errors["forces"].rmse < FORCE_BOUND
    shortest = min(make_batch(training, ["Li"], 5.0).shortest_distance(), np.inf)
    assert result.mtp.min_dist == pytest.approx(0.99 * shortest, rel=1e-12)


def test_same_seed_same_fit_and_resume_lowers_the_loss(lithium):
    training, _ = lithium
    training = training[:20]
    options = TrainOptions(weights=LossWeights(stress=0.0), max_iter=15)
    untrained = untrained_mtp(8, 1, 2.0, 5.0, species=["Li"])
    first = train(untrained, training, options=options, progress=False)
    again = train(untrained, training, options=options, progress=False)
    np.testing.assert_array_equal(parameters_of(first.mtp), parameters_of(again.mtp))
    resumed = train(first.mtp, training, options=options, progress=False)
    assert resumed.history[-1]["loss"] <= first.history[-1]["loss"]
    assert resumed.mtp.scaling == first.mtp.scaling  # a trained potential keeps its scaling
    other_seed = train(untrained, training, options=TrainOptions(weights=LossWeights(stress=0.0), max_iter=0, seed=1),
                       progress=False)
    assert not np.array_equal(other_seed.mtp.radial_coeffs, first.mtp.radial_coeffs)
    same = train(untrained, training, options=TrainOptions(max_iter=0, init="same"), progress=False)
    vectors = np.moveaxis(same.mtp.radial_coeffs, 2, 0).reshape(same.mtp.radial_funcs_count, -1)
    np.testing.assert_allclose(vectors, np.eye(*vectors.shape), atol=1e-15)


def test_best_start_keeps_the_fit_with_the_lower_training_loss(lithium):
    training, _ = lithium
    training = training[:20]
    untrained = untrained_mtp(8, 1, 2.0, 5.0, species=["Li"])
    fits = {init: train(untrained, training, options=TrainOptions(max_iter=10, init=init), progress=False)
            for init in ("same", "random", "best")}
    assert fits["same"].loss != fits["random"].loss
    winner = min(("same", "random"), key=lambda init: fits[init].loss)
    np.testing.assert_array_equal(parameters_of(fits["best"].mtp), parameters_of(fits[winner].mtp))
    assert fits["best"].loss == fits[winner].loss <= fits[winner].history[-1]["loss"] * (1 + 1e-12)


def test_early_stopping_keeps_the_best_validation_point(lithium):
    training, test = lithium
    options = TrainOptions(weights=LossWeights(stress=0.0), max_iter=40, valid_every=5, patience=2)
    result = train(untrained_mtp(8, 1, 2.0, 5.0, species=["Li"]), training[:15], valid_images=test[:10],
                   options=options, progress=False)
    validation = [entry["valid_loss"] for entry in result.history if "valid_loss" in entry]
    assert len(validation) >= 3
    batch = make_batch(test[:10], ["Li"], result.mtp.max_dist)
    final = Objective(result.mtp, batch, options.weights, 10, penalty_weight=0.0)(parameters_of(result.mtp), False)
    assert final.loss == pytest.approx(min(validation), rel=1e-12)


def test_train_and_report_command_line(lithium, tmp_path, capsys):
    training, test = lithium
    write_cfg(tmp_path / "train.cfg", training[:20], species=["Li"])
    write_cfg(tmp_path / "test.cfg", test, species=["Li"])
    write_mtp(untrained_mtp(8, 1, 2.0, 5.0, species=["Li"]), tmp_path / "init.mtp")
    assert main(["train", str(tmp_path / "init.mtp"), str(tmp_path / "train.cfg"), "-o", str(tmp_path / "pot.mtp"),
                 "--valid", str(tmp_path / "test.cfg"), "--max-iter", "10", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "10 iterations" in out and "training set (20 configurations)" in out and "validation set" in out
    assert read_mtp(tmp_path / "pot.mtp").is_trained
    assert main(["report", str(tmp_path / "pot.mtp"), str(LI / "test.json.xz"), "--plot",
                 str(tmp_path / "parity.png")]) == 0
    out = capsys.readouterr().out
    assert "energy_per_atom" in out and "forces" in out and "stress" in out
    assert (tmp_path / "parity.png").stat().st_size > 10_000
    assert main(["train", str(tmp_path / "init.mtp"), str(tmp_path / "missing.cfg"), "-o", str(tmp_path / "x.mtp")]) == 2
