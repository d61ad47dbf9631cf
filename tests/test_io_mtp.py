"""Reading and writing MLIP `.mtp` files: exact round trips, values, MLIP's layout, malformed input."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from mtp_driver.io import MLIPFormatError, read_mtp, write_mtp
from mtp_driver.io.mtp_file import format_mtp

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FITTED = DATA / "mlearn_zuo2020" / "fitted_mtp"
QUATERNARY = DATA / "maml_NbMoTaW" / "mtp_yin2021" / "quaternary.mtp"
TOY = DATA / "mlearn_zuo2020" / "mlip_cfg_example" / "toy_level08_Mo.mtp"
SHIPPED = sorted(FITTED.glob("*.mtp")) + [QUATERNARY, TOY]

pytestmark = pytest.mark.skipif(not TOY.exists(), reason="shared data not found")


def assert_same_model(a, b):
    """Every field equal; arrays equal bit for bit and of the same dtype."""
    for name in a.__dataclass_fields__:
        left, right = getattr(a, name), getattr(b, name)
        if isinstance(left, np.ndarray):
            assert left.dtype == right.dtype, name
            assert left.shape == right.shape, name
            assert np.array_equal(left.view(np.uint8), right.view(np.uint8)), name
        else:
            assert left == right, name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_files_round_trip_bit_for_bit(path, tmp_path):
    model = read_mtp(path)
    written = tmp_path / "copy.mtp"
    write_mtp(model, written)
    again = read_mtp(written)
    assert_same_model(model, again)
    assert format_mtp(again) == written.read_text()


def test_values_match_the_text_of_li_mtp():
    model = read_mtp(FITTED / "Li.mtp")
    assert model.species_count == 1 and model.level == 16
    assert model.scaling == 4.097567646393594e-02
    assert (model.min_dist, model.max_dist) == (2.00088, 5.1)
    assert (model.radial_basis_size, model.radial_funcs_count) == (8, 4)
    assert model.radial_coeffs.shape == (1, 1, 4, 8)
    assert model.radial_coeffs[0, 0, 0, 0] == 9.608848334307105e-01
    assert model.radial_coeffs[0, 0, 1, 1] == 9.715977663785883e-01
    assert model.alpha_moments_count == 350
    assert model.alpha_index_basic.shape == (130, 4) and model.alpha_index_times.shape == (969, 4)
    assert model.alpha_index_basic[1].tolist() == [0, 1, 0, 0]
    assert model.alpha_index_times[0].tolist() == [0, 0, 1, 130]
    assert model.alpha_moment_mapping[:4].tolist() == [0, 84, 119, 129]
    assert model.species_coeffs.tolist() == [-1.121289037392285]
    assert model.moment_coeffs[:2].tolist() == [-0.4731364650010664, -0.1104018652267647]
    assert len(model.moment_coeffs) == 92 and model.is_trained
    assert model.potential_name == "MTP1m" and model.potential_tag == "" and model.species is None


def test_values_of_the_four_species_potential():
    model = read_mtp(QUATERNARY)
    assert model.species_count == 4 and model.scaling == 4.384118967452301e-01
    assert model.radial_coeffs.shape == (4, 4, 4, 8)
    assert model.radial_coeffs[0, 1, 0, 0] == 1.569071174934681e-01  # block "0-1", first row
    assert model.radial_coeffs[0, 2, 0, 0] == 8.507878913870252e-02
    assert model.species_coeffs.tolist() == [-6.79557789158344, -6.766306233841203, -8.29575580503067, -8.073473716271886]
    assert model.parameter_count == 4 * 4 * 4 * 8 + 4 + 52


def test_untrained_model_has_no_coefficient_sections(tmp_path):
    untrained = read_mtp(TOY).copy(radial_coeffs=None, species_coeffs=None, moment_coeffs=None)
    path = tmp_path / "untrained.mtp"
    write_mtp(untrained, path)
    text = path.read_text()
    assert "radial_coeffs" not in text and "species_coeffs" not in text and "moment_coeffs" not in text
    again = read_mtp(path)
    assert not again.is_trained and again.radial_coeffs is None and again.moment_coeffs is None
    assert_same_model(untrained, again)


def test_species_symbols_are_the_last_line_where_mlip_stops_reading(tmp_path):
    model = read_mtp(QUATERNARY).copy(species=("Nb", "Mo", "Ta", "W"))
    path = tmp_path / "named.mtp"
    write_mtp(model, path)
    lines = path.read_text().splitlines()
    assert lines[-1] == "species_symbols = {Nb, Mo, Ta, W}"
    assert lines[-2].startswith("moment_coeffs = {")
    assert read_mtp(path).species == ("Nb", "Mo", "Ta", "W")
    untrained = model.copy(radial_coeffs=None, species_coeffs=None, moment_coeffs=None)
    write_mtp(untrained, path)
    lines = path.read_text().splitlines()
    assert lines[-2].startswith("alpha_moment_mapping = {") and lines[-1].startswith("species_symbols")
    assert read_mtp(path).species == ("Nb", "Mo", "Ta", "W")


def test_written_layout_keeps_the_spacing_mlip_skips_blindly(tmp_path):
    # MLIP's reader skips " = {" (4 characters) after these keys and " =" (2) after the others.
    text = format_mtp(read_mtp(QUATERNARY))
    for key in ("alpha_index_basic", "alpha_index_times", "alpha_moment_mapping", "species_coeffs", "moment_coeffs"):
        assert re.search(rf"^{key} = \{{", text, re.MULTILINE), key
    assert re.search(r"^potential_name = MTP1m$", text, re.MULTILINE)
    assert re.search(r"^\t\t3-2$", text, re.MULTILINE)
    assert text.index("\t\t0-1") < text.index("\t\t1-0")  # row-major block order, as MLIP-2 assumes


def test_write_refuses_models_mlip_could_not_read(tmp_path):
    model = read_mtp(TOY)
    bad_coeffs = model.moment_coeffs.copy()
    bad_coeffs[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_mtp(model.copy(moment_coeffs=bad_coeffs), tmp_path / "x.mtp")
    with pytest.raises(ValueError, match="one word"):
        write_mtp(model.copy(potential_name="my potential"), tmp_path / "x.mtp")
    with pytest.raises(ValueError, match="together"):
        write_mtp(model.copy(species_coeffs=None), tmp_path / "x.mtp")
    with pytest.raises(ValueError, match="radial_funcs_count - 1"):
        write_mtp(model.copy(radial_funcs_count=3, radial_coeffs=np.zeros((1, 1, 3, 8))), tmp_path / "x.mtp")
    with pytest.raises(ValueError, match="not chemical symbols"):
        write_mtp(model.copy(species=("Moo",)), tmp_path / "x.mtp")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "pot.mtp"
    path.write_text("old content")
    model = read_mtp(TOY)

    def fail(_):
        raise KeyboardInterrupt

    monkeypatch.setattr("mtp_driver.io.mtp_file.format_mtp", fail)
    with pytest.raises(KeyboardInterrupt):
        write_mtp(model, path)
    assert path.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["pot.mtp"]


# --- malformed files: one MLIPFormatError naming the file and the line ---------------------------

TOY_LINES = TOY.read_text().splitlines() if TOY.exists() else []


def line_of(prefix: str) -> int:
    """1-based number of the toy file's line that starts with ``prefix`` (after indentation)."""
    return next(number for number, text in enumerate(TOY_LINES, 1) if text.strip().startswith(prefix))


def replaced(prefix: str, new_text: str, error_shift: int = 0) -> tuple[str, int]:
    """The toy file with one line replaced, and the line the error should name (``error_shift`` below it)."""
    number = line_of(prefix)
    lines = list(TOY_LINES)
    lines[number - 1] = new_text
    return "\n".join(lines), number + error_shift


def malformed_cases():
    cases = {
        "not an mtp file": replaced("MTP", "MTX"),
        "wrong version": replaced("version", "version = 1.0.0"),
        "unknown key": replaced("potential_tag", "colour = blue"),
        "unsupported radial basis": replaced("radial_basis_type", "radial_basis_type = RBShapeev"),
        "non-numeric min_dist": replaced("min_dist", "\tmin_dist = four"),
        "NaN max_dist": replaced("max_dist", "\tmax_dist = nan"),
        "inf radial coefficient": replaced("{-3.07", "\t\t\t{inf, 1, 2, 3, 4, 5, 6, 7}"),
        "short radial row": replaced("{-3.07", "\t\t\t{1, 2, 3, 4, 5, 6, 7}"),
        "wrong block label": replaced("0-0", "\t\t0-1"),
        # A wrong count shows on the list that follows it.
        "basic count too large": replaced("alpha_index_basic_count", "alpha_index_basic_count = 12", 1),
        "times count too small": replaced("alpha_index_times_count", "alpha_index_times_count = 13", 1),
        "scalar count wrong": replaced("alpha_scalar_moments", "alpha_scalar_moments = 8", 1),
        "non-numeric index": replaced("alpha_moment_mapping", "alpha_moment_mapping = {0, 10, 11, x, 13, 14, 15, 16, 17}"),
        "mapping out of range": replaced("alpha_moment_mapping", "alpha_moment_mapping = {0, 10, 11, 12, 13, 14, 15, 16, 18}"),
        "NaN species coefficient": replaced("species_coeffs", "species_coeffs = {nan}"),
        "unknown key after the tables": replaced("species_coeffs", "colour = blue"),
        "missing braces": replaced("species_coeffs", "species_coeffs = -9.1"),
    }
    truncated_at = line_of("{-8.48")  # inside the radial_coeffs block
    cases["truncated"] = ("\n".join(TOY_LINES[:truncated_at - 1]) + "\n", truncated_at - 1)
    cases["trailing garbage"] = ("\n".join(TOY_LINES + ["", "extra = 1"]), len(TOY_LINES) + 2)
    cases["empty file"] = ("", 1)
    return cases


@pytest.mark.parametrize("case", list(malformed_cases()) if TOY.exists() else [])
def test_malformed_file_names_file_and_line(case, tmp_path):
    text, line = malformed_cases()[case]
    path = tmp_path / "pot.mtp"
    path.write_text(text)
    with pytest.raises(MLIPFormatError) as raised:
        read_mtp(path)
    assert raised.value.line == line
    assert raised.value.path == str(path)
    assert str(raised.value).startswith(f"{path}, line {line}: ")


# --- absurd sizes: refused at their line, at once, before anything of that size is allocated ----

def count_set(key: str, value: int, error_shift: int = 0) -> tuple[str, int]:
    """The toy file with ``key = value`` instead of its own count."""
    return replaced(key, f"{key} = {value}", error_shift)


def first_entry_set(key: str, entry: str) -> tuple[str, int]:
    """The toy file with the first entry of its ``key = {{...}, ...}`` table replaced by ``entry``."""
    table = TOY_LINES[line_of(f"{key} =") - 1].partition(" = ")[2]
    return replaced(f"{key} =", f"{key} = {{{entry}, {table.split('}, ', 1)[1]}")


def bomb_cases():
    """Each case: the toy file with one field edited, the line the error must name, a piece of its message."""
    huge, big = 10**12, 2**62
    return {
        "species_count 1e9": (*count_set("species_count", 10**9), "limit of 128"),
        "radial_basis_size 1e12": (*count_set("radial_basis_size", huge), "MAX_RADIAL_BASIS_SIZE"),
        "radial_funcs_count 1e12": (*count_set("radial_funcs_count", huge), "MAX_RADIAL_FUNCS"),
        "radial_funcs_count 301 for mu = 300": (*count_set("radial_funcs_count", 301), "limit of 32"),
        "alpha_moments_count 1e12": (*count_set("alpha_moments_count", huge), "MAX_MOMENTS"),
        "alpha_index_basic_count 1e12": (*count_set("alpha_index_basic_count", huge), "MAX_BASIC_MOMENTS"),
        "alpha_index_times_count 1e12": (*count_set("alpha_index_times_count", huge), "MAX_PRODUCTS"),
        "alpha_scalar_moments 1e12": (*count_set("alpha_scalar_moments", huge), "alpha_moments_count = 18"),
        "alpha_scalar_moments 19 of 18 moments": (*count_set("alpha_scalar_moments", 19), "exceeds alpha_moments_count"),
        # The basic count, on the next line, is checked against it.
        "alpha_moments_count below the basic count": (*count_set("alpha_moments_count", 10, 1), "exceeds alpha_moments_count"),
        "monomial degree 900": (*first_entry_set("alpha_index_basic", "{0, 300, 300, 300}"), "MAX_MONOMIAL_DEGREE"),
        "monomial degree beyond int64": (*first_entry_set("alpha_index_basic", f"{{0, {big}, {big}, {big}}}"), "limit of 20"),
        "radial function mu = 300": (*first_entry_set("alpha_index_basic", "{300, 0, 0, 0}"), "radial_funcs_count = 2"),
        "product target 1e12": (*first_entry_set("alpha_index_times", f"{{0, 0, 1, {huge}}}"), "outside 0..alpha_moments_count"),
        "product before its factor": (*first_entry_set("alpha_index_times", "{12, 0, 1, 11}"), "after both its factors"),
    }


@pytest.mark.parametrize("case", list(bomb_cases()) if TOY.exists() else [])
def test_absurd_size_fails_at_its_line_within_a_second(case, tmp_path):
    text, line, message = bomb_cases()[case]
    path = tmp_path / "bomb.mtp"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(MLIPFormatError) as raised:
        read_mtp(path)
    assert time.perf_counter() - start < 1.0
    assert str(raised.value).startswith(f"{path}, line {line}: ")
    assert message in raised.value.reason


@pytest.mark.parametrize("entries, message", [("many", "expected 14 entries"), ("long", "expected 56 numbers")])
def test_a_very_long_list_line_fails_in_linear_time(entries, message, tmp_path):
    """A million numbers where 14 entries of 4 are declared: many entries, or one very long entry."""
    if entries == "many":
        rows = "{0, 0, 1, 11}, " * 250_000
    else:
        rows = "{" + "0, " * 1_000_000 + "11}, " + "{0, 0, 1, 11}, " * 13
    text, line = replaced("alpha_index_times =", "alpha_index_times = {" + rows[:-2] + "}")
    path = tmp_path / "long.mtp"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(MLIPFormatError) as raised:
        read_mtp(path)
    assert time.perf_counter() - start < 1.0
    assert raised.value.line == line and message in raised.value.reason


def test_write_refuses_a_model_beyond_the_limits_read_mtp_enforces(tmp_path):
    model = read_mtp(TOY)
    with pytest.raises(ValueError, match="MAX_RADIAL_BASIS_SIZE"):
        write_mtp(model.copy(radial_basis_size=65, radial_coeffs=np.zeros((1, 1, 2, 65))), tmp_path / "x.mtp")
    assert list(tmp_path.iterdir()) == []
