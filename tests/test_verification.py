"""Verification metrics on synthetic distances whose results are known by construction."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from utils.verification import best_threshold, evaluate, far_threshold


def tiled(same_values, diff_values, folds=10):
    """The same pair distances repeated in every fold: (distances, issame, fold)."""
    d = np.concatenate([same_values, diff_values])
    same = np.concatenate([np.ones(len(same_values), bool), np.zeros(len(diff_values), bool)])
    return np.tile(d, folds), np.tile(same, folds), np.repeat(np.arange(1, folds + 1), len(d))


def test_separable_distances_give_perfect_scores_and_a_threshold_in_the_gap():
    rng = np.random.default_rng(0)
    n = 3000
    same = np.arange(2 * n) < n
    d = np.where(same, rng.uniform(0.2, 0.9, 2 * n), rng.uniform(1.1, 1.9, 2 * n))
    r = evaluate(d, same, np.arange(2 * n) % 10 + 1)
    assert r["accuracy_mean"] == 1.0 and r["accuracy_std"] == 0.0
    assert np.all((r["thresholds"] > d[same].max() - 1e-3) & (r["thresholds"] < d[~same].min() + 1e-3))
    assert 0.9 < r["threshold_mean"] < 1.1
    assert r["auc"] == 1.0 and r["eer"] == 0.0 and r["val"] == 1.0
    assert r["far"] <= 2e-3  # 2,700 training different pairs: 2 may be accepted, about 1e-3 on the test fold
    assert r["warning"] is None
    assert r["roc_fpr"][0] == 0 and r["roc_tpr"][-1] == 1


def test_known_error_count_gives_known_accuracy_and_threshold():
    # per fold: 27 same at 0.5 and 3 same at 1.5; 27 different at 1.5 and 3 different at 0.5
    d, same, fold = tiled([0.5] * 27 + [1.5] * 3, [1.5] * 27 + [0.5] * 3)
    r = evaluate(d, same, fold)
    np.testing.assert_allclose(r["fold_accuracies"], 0.9)
    assert r["accuracy_mean"] == pytest.approx(0.9) and r["accuracy_std"] == pytest.approx(0.0)
    assert r["threshold_mean"] == pytest.approx(1.0) and r["threshold_std"] == pytest.approx(0.0)
    assert r["same_distance_mean"] == pytest.approx(0.6) and r["diff_distance_mean"] == pytest.approx(1.4)
    assert r["eer"] == pytest.approx(0.1)


def test_threshold_is_chosen_on_the_other_folds():
    # fold 1 alone would want a threshold near 3; the other folds pick one between 0.5 and 1.5
    d, same, fold = tiled([0.5] * 10, [1.5] * 10, folds=3)
    d[(fold == 1) & ~same] = 3.5
    d[(fold == 1) & same] = 2.5
    r = evaluate(d, same, fold)
    assert r["thresholds"][0] == pytest.approx(1.0)
    assert r["fold_accuracies"][0] == pytest.approx(0.5)
    assert r["fold_accuracies"][1] == pytest.approx(1.0)


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        d = np.round(rng.uniform(0, 2, 40), 1)  # many ties
        same = rng.random(40) < 0.5
        t = best_threshold(d, same)
        candidates = np.concatenate([d, d + 1e-9, [d.max() + 1]])
        best = max(np.mean((d < c) == same) for c in candidates)
        assert np.mean((d < t) == same) == pytest.approx(best)


def test_val_at_far_is_known_and_survives_repeated_distances():
    # per fold: 70 same at 0.5, 30 same at 1.5; 100 different spread over [1, 2] with repeated values
    diff = np.repeat(np.linspace(1.0, 2.0, 50), 2)
    d, same, fold = tiled([0.5] * 70 + [1.5] * 30, diff)
    r = evaluate(d, same, fold)  # 900 training different pairs: FAR 1e-3 allows none below 1.0
    assert r["val"] == pytest.approx(0.7) and r["val_std"] == pytest.approx(0.0)
    assert r["far"] == 0.0
    np.testing.assert_allclose(r["val_thresholds"], 1.0)
    r = evaluate(d, same, fold, far_target=0.1)  # allows 90 of 900: the 5 smallest distinct values
    assert r["far"] == pytest.approx(0.1) and r["val"] == pytest.approx(0.7)


def test_far_threshold_never_exceeds_the_target_on_its_own_pairs():
    rng = np.random.default_rng(2)
    d = np.round(rng.uniform(0, 2, 997), 2)
    for target in (0.0, 1e-3, 0.01, 0.05, 0.3, 0.999):
        t = far_threshold(d, target)
        assert np.mean(d < t) <= target + 1e-12
        assert np.mean(d <= t) > target  # and it is the largest such threshold


def test_auc_agrees_with_sklearn():
    rng = np.random.default_rng(3)
    same = rng.random(6000) < 0.5
    d = np.round(np.where(same, rng.normal(0.9, 0.2, 6000), rng.normal(1.3, 0.2, 6000)), 2)
    r = evaluate(d, same, np.arange(6000) % 10 + 1)
    assert r["auc"] == pytest.approx(roc_auc_score(same, -d), abs=1e-12)
    # two normals 2 sigma apart: best accuracy and 1 - EER are both Phi(1) = 0.8413
    assert r["accuracy_mean"] == pytest.approx(0.8413, abs=0.015)
    assert r["eer"] == pytest.approx(0.1587, abs=0.015)


def test_subset_of_folds_is_cross_validated_over_those_folds():
    d, same, fold = tiled([0.5] * 27 + [1.5] * 3, [1.5] * 27 + [0.5] * 3)
    keep = np.isin(fold, [8, 9, 10])
    r = evaluate(d[keep], same[keep], fold[keep])
    assert r["folds"] == [8, 9, 10] and len(r["fold_accuracies"]) == 3
    assert r["accuracy_mean"] == pytest.approx(0.9) and r["warning"] is None


def test_single_fold_warns_that_the_figures_are_optimistic():
    d, same, fold = tiled([0.5] * 27 + [1.5] * 3, [1.5] * 27 + [0.5] * 3, folds=1)
    r = evaluate(d, same, fold)
    assert r["accuracy_mean"] == pytest.approx(0.9)
    assert "optimistic" in r["warning"]


@pytest.mark.parametrize("bad, words", [("equal", "equal"), ("nan", "NaN"), ("inf", "infinite"),
                                        ("one class", "both")])
def test_degenerate_distances_warn_instead_of_scoring(bad, words):
    d, same, fold = tiled([0.5] * 30, [1.5] * 30)
    if bad == "equal":
        d[:] = 0.7
    elif bad == "nan":
        d[5] = np.nan
    elif bad == "inf":
        d[5] = np.inf
    else:
        same[:] = False
    r = evaluate(d, same, fold)
    assert words in r["warning"]
    assert np.isnan(r["accuracy_mean"]) and np.isnan(r["auc"]) and np.isnan(r["threshold_mean"])


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="length"):
        evaluate(np.zeros(4), np.zeros(3, bool), np.ones(4))


def test_collapsed_embeddings_keep_their_accuracy_but_give_no_threshold():
    rng = np.random.default_rng(0)
    d, same, fold = tiled(1e-5 + rng.uniform(0, 1e-6, 30), 1e-5 + rng.uniform(0, 2e-6, 30))
    r = evaluate(d, same, fold)
    assert r["collapsed"] is True and "collapsed" in r["warning"] and "--Epoch" in r["warning"]
    assert np.isfinite(r["accuracy_mean"]) and np.isnan(r["threshold_mean"])
    working = evaluate(*tiled([0.5] * 30, [1.5] * 30))
    assert working["collapsed"] is False and working["threshold_mean"] == pytest.approx(1.0)
