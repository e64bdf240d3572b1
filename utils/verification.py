"""Face-verification metrics from pair distances, as reported on LFW.

numpy, and scikit-learn for the ROC curve and its area. A pair is called "same person" when its distance is below a threshold. Accuracy and
VAL@FAR are cross-validated over the folds: the threshold scored on a fold is always chosen on the
other folds (the LFW protocol, and FaceNet's evaluation). AUC, EER and the ROC curve need no
threshold and use all pairs at once.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics

FAR_TARGET = 1e-3
# 90% of the pair distances below this: collapsed embeddings (a working model's different pairs: 1.2-1.6)
COLLAPSED_DISTANCE = 0.01


def best_threshold(distances: np.ndarray, issame: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (ties: the smallest such threshold).

    Sorting puts every possible decision in a row: accepting the i closest pairs is correct for the
    same pairs among them and the different pairs after them. A cut can only fall between two
    distinct distances; its threshold is their midpoint, so it never depends on a grid.
    """
    order = np.argsort(distances, kind="stable")
    d, same = distances[order], issame[order]
    n = len(d)
    accepted_same = np.concatenate(([0], np.cumsum(same)))
    accepted_diff = np.concatenate(([0], np.cumsum(~same)))
    correct = accepted_same + (accepted_diff[-1] - accepted_diff)
    possible = np.ones(n + 1, dtype=bool)
    possible[1:n] = d[1:] > d[:-1]
    i = int(np.argmax(np.where(possible, correct, -1)))
    if i == 0:
        return float(d[0])
    if i == n:
        return float(np.nextafter(d[-1], np.inf))
    lo, hi = d[i - 1], d[i]
    mid = lo + (hi - lo) / 2
    return float(mid if mid > lo else hi)


def far_threshold(diff_distances: np.ndarray, far_target: float) -> float:
    """The largest threshold that accepts at most ``far_target`` of these different-person pairs.

    This is the exact inverse of the empirical FAR curve: monotone in ``far_target`` and defined for
    repeated distances, where FaceNet's interp1d over a threshold grid fails or guesses.
    """
    d = np.sort(diff_distances)
    k = int(np.floor(far_target * len(d) + 1e-9))
    return float(d[k])


def rate(hits: np.ndarray) -> float:
    """Mean of a boolean array, NaN when it is empty."""
    return float(np.mean(hits)) if hits.size else float("nan")


def roc_curve(distances: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct distance used as threshold, from (0, 0) to (1, 1).

    scikit-learn ranks by score, higher meaning "same": the score is the negated distance. Every
    point is kept (``drop_intermediate=False``) so that the EER interpolation sees the whole curve.
    """
    fpr, tpr, _ = metrics.roc_curve(issame, -distances, drop_intermediate=False)
    return fpr, tpr


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where false accepts equal false rejects, linearly interpolated on the ROC curve."""
    gap = (1.0 - tpr) - fpr
    i = int(np.argmax(gap <= 0))  # >= 1: the curve starts at (0, 0) where the gap is 1
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def degenerate_warning(distances: np.ndarray, issame: np.ndarray) -> str | None:
    """Why these distances cannot give meaningful metrics, or None when they can."""
    n = len(distances)
    bad = int(np.count_nonzero(~np.isfinite(distances)))
    if bad:
        return (f"{bad} of {n} distances are NaN or infinite: the embeddings are broken (weights not "
                "loaded, or a diverged model); metrics not computed")
    if issame.all() or not issame.any():
        return "the pairs are all same-person or all different-person pairs; verification needs both"
    top = float(np.max(np.abs(distances)))
    if np.ptp(distances) <= 1e-6 * max(1.0, top):
        return (f"all {n} distances are equal ({distances[0]:.6g}): the model gives every face the same "
                "embedding (untrained or broken weights?); metrics not computed")
    if collapsed(distances):
        return (f"the embeddings have collapsed: 90% of the {n} pair distances are below "
                f"{np.percentile(distances, 90):.2g}, where a trained model's different-person pairs lie near "
                "1.2-1.6; the model maps every face to nearly one point (untrained weights, a training run that "
                "collapsed, or images far from the size the weights were trained at); metrics not computed")
    return None


def collapsed(distances: np.ndarray) -> bool:
    """True when nearly every pair distance of unit embeddings is tiny: all faces at nearly one point."""
    return bool(np.percentile(distances, 90) < COLLAPSED_DISTANCE)


def distance_stats(distances: np.ndarray, issame: np.ndarray) -> dict:
    """Mean and standard deviation of the finite same-person and different-person distances."""
    stats = {}
    for label, mask in (("same", issame), ("diff", ~issame)):
        values = distances[mask & np.isfinite(distances)]
        stats[f"{label}_distance_mean"] = float(values.mean()) if values.size else float("nan")
        stats[f"{label}_distance_std"] = float(values.std()) if values.size else float("nan")
    return stats


def evaluate(distances, issame, fold, far_target: float = FAR_TARGET) -> dict:
    """All LFW numbers for pair ``distances`` (smaller = more alike), ``issame`` labels and ``fold`` ids.

    For each fold k present, the accuracy threshold and the VAL threshold (FAR <= far_target) are
    chosen on the pairs of the other present folds and scored on fold k; means and (population)
    standard deviations are over folds. With a single fold there is nothing to hold out: its
    thresholds are chosen on its own pairs and ``warning`` says the figures are optimistic.
    Degenerate distances (NaN/inf, all equal, one class only) give NaN metrics and a ``warning``.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    same = np.asarray(issame, dtype=bool).ravel()
    fold = np.asarray(fold).ravel()
    if not len(d) == len(same) == len(fold):
        raise ValueError(f"distances, issame and fold differ in length ({len(d)}, {len(same)}, {len(fold)})")
    if not len(d):
        raise ValueError("no pairs to evaluate")
    if not 0.0 <= far_target < 1.0:
        raise ValueError(f"far_target must be in [0, 1), not {far_target}")
    folds = np.unique(fold)
    result = {"folds": folds.tolist(), "num_pairs": len(d), "num_same": int(same.sum()),
              "far_target": far_target, **distance_stats(d, same)}
    warning = degenerate_warning(d, same)
    if warning:
        nan, empty = float("nan"), np.full(len(folds), np.nan)
        result.update(accuracy_mean=nan, accuracy_std=nan, fold_accuracies=empty, threshold_mean=nan,
                      threshold_std=nan, thresholds=empty, val=nan, val_std=nan, far=nan,
                      val_thresholds=empty, auc=nan, eer=nan, roc_fpr=np.zeros(0), roc_tpr=np.zeros(0),
                      warning=warning, collapsed=bool(np.isfinite(d).all()) and collapsed(d))
        return result
    if len(folds) == 1:
        warning = (f"only fold {folds[0]} given: its thresholds are chosen on the same pairs they are "
                   "scored on, so accuracy and VAL are optimistic; use two or more folds (e.g. --folds all) "
                   "for cross-validated figures")

    accuracies, thresholds, vals, fars, val_thresholds = [], [], [], [], []
    for k in folds:
        test = fold == k
        train = ~test if len(folds) > 1 else test
        threshold = best_threshold(d[train], same[train])
        accuracies.append(rate((d[test] < threshold) == same[test]))
        thresholds.append(threshold)
        train_diff = d[train & ~same]
        val_threshold = far_threshold(train_diff, far_target) if train_diff.size else float("nan")
        vals.append(rate(d[test & same] < val_threshold))
        fars.append(rate(d[test & ~same] < val_threshold))
        val_thresholds.append(val_threshold)

    fpr, tpr = roc_curve(d, same)
    result.update(
        accuracy_mean=float(np.mean(accuracies)), accuracy_std=float(np.std(accuracies)),
        fold_accuracies=np.array(accuracies),
        threshold_mean=float(np.mean(thresholds)), threshold_std=float(np.std(thresholds)),
        thresholds=np.array(thresholds),
        val=float(np.nanmean(vals)), val_std=float(np.nanstd(vals)), far=float(np.nanmean(fars)),
        val_thresholds=np.array(val_thresholds),
        auc=float(metrics.auc(fpr, tpr)), eer=equal_error_rate(fpr, tpr),
        roc_fpr=fpr, roc_tpr=tpr, warning=warning, collapsed=False,
    )
    return result
