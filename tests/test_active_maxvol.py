"""MaxVol and select-add on small matrices: volume growth, the grade bound, brute-force optimality."""

import itertools

import numpy as np
import pytest

from mtp_driver.active.active_set import ActiveSet
from mtp_driver.active.maxvol import SWAP_THRESHOLD, initial_rows, maxvol
from mtp_driver.active.rows import SiteRows
from mtp_driver.active.select import select_add


def test_determinant_never_decreases_and_all_rows_end_within_the_threshold():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(400, 12)) * rng.uniform(0.1, 10.0, size=12)  # columns of unequal scale
    start = np.arange(12)  # a poor start, so that many swaps happen
    result = maxvol(matrix, selected=start)
    assert len(result.swaps) > 5
    selected = start.copy()
    log_volume = np.linalg.slogdet(matrix[selected])[1]
    for position, row in result.swaps:  # replay the swaps and recompute |det A| from scratch
        selected[position] = row
        sign, new_log_volume = np.linalg.slogdet(matrix[selected])
        assert sign != 0 and new_log_volume > log_volume
        log_volume = new_log_volume
    assert np.array_equal(selected, result.selected)
    assert np.allclose(result.inverse @ matrix[result.selected], np.eye(12), atol=1e-10)
    assert np.abs(matrix @ result.inverse).max() <= SWAP_THRESHOLD


def test_greedy_start_and_few_rows():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(30, 4))
    assert len(set(initial_rows(matrix))) == 4
    with pytest.raises(ValueError, match="at least as many rows"):
        initial_rows(matrix[:3])
    with pytest.raises(ValueError, match="linearly dependent"):
        maxvol(np.vstack([matrix[:1], matrix[:1], matrix[1:3]]), selected=np.arange(4))


def tiny_active_set(matrix):
    """An ActiveSet over all columns of `matrix` (rows = configurations), as build_active_set makes it."""
    result = maxvol(matrix)
    n = matrix.shape[1]
    return ActiveSet(mode="cfg", parameters="all", columns=np.arange(n), column_scale=np.ones(n),
                     rows=matrix[result.selected], inverse=result.inverse,
                     sources=np.column_stack([result.selected, np.full(n, -1)]), fingerprint="", parameter_count=n)


def one_atom_configurations(rows):
    """Candidates as configurations of one atom each, so a configuration row is the atom row."""
    return SiteRows(np.asarray(rows, dtype=np.float64), np.arange(len(rows) + 1))


def test_selection_of_one_maximises_the_volume_as_brute_force_does():
    rng = np.random.default_rng(2)
    for trial in range(20):
        training = rng.normal(size=(6, 3))
        active_set = tiny_active_set(training)
        candidates = rng.normal(scale=2.0, size=(7, 3))
        selection = select_add(active_set, one_atom_configurations(candidates), threshold=1.1, limit=1)
        volumes = {}  # best |det| after putting candidate c in place of any active row
        for c, position in itertools.product(range(len(candidates)), range(3)):
            rows = active_set.rows.copy()
            rows[position] = candidates[c]
            volumes[c] = max(volumes.get(c, 0.0), abs(np.linalg.det(rows)))
        best = max(volumes, key=volumes.get)
        if volumes[best] > 1.1 * abs(np.linalg.det(active_set.rows)):
            assert selection.selected.tolist() == [best], trial
        else:
            assert len(selection.selected) == 0


def test_selection_without_limit_leaves_every_candidate_within_the_threshold():
    rng = np.random.default_rng(3)
    active_set = tiny_active_set(rng.normal(size=(10, 4)))
    candidates = rng.normal(scale=3.0, size=(15, 4))
    selection = select_add(active_set, one_atom_configurations(candidates), threshold=1.1)
    assert len(selection.selected) >= 1
    grown = tiny_active_set(np.vstack([active_set.rows, candidates[selection.selected]]))
    # after adding the selected rows, no candidate grades above the threshold (up to MaxVol's own tolerance)
    assert grown.row_grades(candidates).max() <= 1.1 + 1e-9 or len(selection.selected) == len(candidates)
    assert selection.grades == pytest.approx(active_set.row_grades(candidates))


def test_near_duplicate_candidates_are_selected_once():
    rng = np.random.default_rng(4)
    active_set = tiny_active_set(rng.normal(size=(10, 4)))
    novel = 5.0 * rng.normal(size=4)
    copies = novel + 1e-4 * rng.normal(size=(8, 4))  # the same structure seen eight times
    selection = select_add(active_set, one_atom_configurations(copies), threshold=1.1)
    assert len(selection.selected) == 1
    assert selection.grades.min() > 2.0  # each copy alone is extrapolative


def test_limit_caps_the_number_of_selected_configurations():
    rng = np.random.default_rng(5)
    active_set = tiny_active_set(rng.normal(size=(10, 4)))
    candidates = rng.normal(scale=4.0, size=(12, 4))
    unlimited = select_add(active_set, one_atom_configurations(candidates))
    assert len(unlimited.selected) > 2
    assert len(select_add(active_set, one_atom_configurations(candidates), limit=2).selected) == 2
    assert len(select_add(active_set, one_atom_configurations(candidates), limit=0).selected) == 0
