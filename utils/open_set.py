"""The 1:N threshold for the gallery at hand: at most a chosen share of strangers gets a name.

A stranger shown to a gallery of N people is named when ANY of them is within the threshold, so
a threshold that names 1% of strangers against one person names about 1 - 0.99^N of them against N.
Two sources say how far strangers lie:

- the weights' impostor table (``impostor_table``, measured by eval_LFW.py on held-out LFW images
  and kept in the weights' JSON under ``TABLE_KEY``): for a person with k gallery images (k = 1, 2,
  3; the "mean" rule scores a person by their mean embedding, whose impostor distances are measured
  for each k, since the k images of one person are not independent draws), the distance below which
  a share ``tail`` of strangers falls. With independent people, a stranger is named by a gallery with
  probability 1 - prod_j (1 - p_j(t)), and the threshold is where that equals the share asked for;
- the gallery itself (``leave_one_out``): each known person, left out, is a stranger to the others.
  Its distances to the other people are the real thing, with no independence assumed, but a share
  of 1% is only measured with about a thousand gallery images.

``choose_threshold`` uses the gallery when it is large enough for the share asked, else the table,
else the gallery's coarse estimate, else the verification threshold, and says which and why.
Distances are those of ``utils.gallery.PersonSearch``: the Euclidean distance that corresponds to
a cosine similarity of L2-normalised embeddings (for "mean", to the mean similarity of the images).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from utils.gallery import RULES, similarity_to_distance
from utils.verification import far_threshold

TABLE_KEY = "impostors"
# Shares of strangers (per person of the gallery) at which the table holds a distance.
TAILS = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6)
TABLE_IMAGES = (1, 2, 3)     # gallery images per person with their own row; more images use the last row
MIN_TAIL_COUNT = 10          # a table entry needs at least this many impostor scores below it
MIN_GALLERY_STRANGERS = 10   # the gallery alone is used when it expects this many left-out images named
HISTOGRAM_BINS = 40000       # distance resolution of the table: 2 / 40000 = 5e-5
SCORE_BLOCK = 1 << 24        # impostor scores computed at once (64 MiB of float32)


@dataclass
class Choice:
    """The threshold for a gallery, where it came from ("setting", "gallery", "weights", "gallery
    (coarse)" or "verification") and one line saying why."""

    threshold: float
    source: str
    reason: str


def templates(embeddings: np.ndarray, labels: np.ndarray, images: int) -> tuple[np.ndarray, np.ndarray]:
    """Every disjoint group of ``images`` consecutive embeddings of one person, as the "mean" rule
    scores it (the plain mean of unit vectors), and the person of each: ((G, D), (G,))."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(labels)])
    rank = np.arange(len(labels)) - np.repeat(starts, sizes)
    keep = rank < np.repeat(sizes // images * images, sizes)
    members = np.asarray(embeddings, np.float32)[order[keep]]
    means = members.reshape(-1, images, members.shape[1]).mean(axis=1)
    return means, ordered[keep][::images]


def per_person_weights(labels: np.ndarray) -> np.ndarray:
    """1 / (how often each entry's person occurs): every person weighs the same, however many images."""
    _, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[index]


def impostor_histogram(embeddings: np.ndarray, labels: np.ndarray, images: int) -> np.ndarray:
    """Histogram (HISTOGRAM_BINS,) of the distances of every embedding to every group of ``images``
    embeddings of another person, in blocks of SCORE_BLOCK scores. A stranger is a person, not an
    image: each person weighs the same as probe and as gallery person (else a few people with dozens
    of LFW images would decide the tail), scaled so that the weights add up to the number of scores."""
    queries = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels)
    means, owners = templates(queries, labels, images)
    template_weight, query_weight = per_person_weights(owners), per_person_weights(labels)
    counts, scores = np.zeros(HISTOGRAM_BINS, np.float64), 0
    block = max(1, SCORE_BLOCK // max(1, len(means)))
    for start in range(0, len(queries), block):
        distance = similarity_to_distance(queries[start:start + block] @ means.T)
        other = labels[start:start + block, None] != owners[None, :]
        bins = np.minimum((distance[other] * (HISTOGRAM_BINS / 2)).astype(np.int64), HISTOGRAM_BINS - 1)
        weight = query_weight[start:start + block, None] * template_weight[None, :]
        counts += np.bincount(bins, weights=weight[other], minlength=HISTOGRAM_BINS)
        scores += int(other.sum())
    return counts * (scores / max(counts.sum(), 1e-300))


def histogram_quantiles(counts: np.ndarray, tails: Sequence[float]) -> list[float]:
    """The distances below which a share ``tail`` of the (weighted) scores lies (linear within a bin),
    for each tail that has at least MIN_TAIL_COUNT scores below it; the list stops at the first that has not."""
    cumulative = np.cumsum(counts)
    total, width = cumulative[-1], 2.0 / len(counts)
    out = []
    for tail in tails:
        target = tail * total
        if target < MIN_TAIL_COUNT:
            break
        i = int(np.searchsorted(cumulative, target))
        before = cumulative[i - 1] if i else 0
        out.append(round(float(width * (i + (target - before) / (counts[i] if counts[i] > 0 else 1.0))), 5))
    return out


def impostor_table(embeddings: np.ndarray, labels: Sequence[str], description: str = "") -> dict:
    """The weights' impostor table from held-out embeddings (N, D) of known people ``labels``: for
    k = 1, 2, 3 gallery images per person, the distance of a stranger to a person below which a share
    ``tails[i]`` of strangers falls. A few dozen numbers, JSON-ready; ``description`` says where from."""
    labels = np.asarray(labels)
    table = {"tails": list(TAILS), "distances": {}, "scores": {}, "images": int(len(labels)),
             "people": int(len(np.unique(labels))), "measured_on": description}
    for images in TABLE_IMAGES:
        counts = impostor_histogram(embeddings, labels, images)
        row = histogram_quantiles(counts, TAILS) if counts.sum() else []
        if len(row) >= 2:
            table["distances"][str(images)] = row
            table["scores"][str(images)] = int(round(counts.sum()))
    return table


def check_table(table: object) -> dict | None:
    """``table`` as read from a JSON, checked: None when it measured nothing (too few images), a
    ValueError saying what is wrong when it cannot be used."""
    if not isinstance(table, dict) or not isinstance(table.get("tails"), list) \
            or not isinstance(table.get("distances"), dict):
        raise ValueError(f"{TABLE_KEY} must hold 'tails' and 'distances'")
    if not table["distances"]:
        return None
    if "1" not in table["distances"]:
        raise ValueError(f"{TABLE_KEY} must have a row '1' in 'distances'")
    tails = np.asarray(table["tails"], np.float64)
    for key, row in table["distances"].items():
        values = np.asarray(row, np.float64)
        if not key.isdigit() or int(key) < 1 or values.ndim != 1 or len(values) < 2 or len(values) > len(tails) \
                or not np.all(np.isfinite(values)) or np.any(np.diff(values) > 0) or np.any(values < 0):
            raise ValueError(f"{TABLE_KEY} row {key!r} must be 2 to {len(tails)} decreasing distances")
    if np.any(tails <= 0) or np.any(np.diff(tails) >= 0):
        raise ValueError(f"{TABLE_KEY} tails must be decreasing shares above 0")
    return table


def stranger_share(row: Sequence[float], tails: Sequence[float], threshold: np.ndarray) -> np.ndarray:
    """The share of strangers within ``threshold`` of one person, read from a table row: log-linear
    between entries, and beyond the last entries along the line through the last two (an exponential
    tail), clipped to [0, 1]."""
    d = np.asarray(row, np.float64)[::-1]
    log_tail = np.log(np.asarray(tails[:len(row)], np.float64))[::-1]
    t = np.asarray(threshold, np.float64)
    inside = np.interp(t, d, log_tail)
    low = log_tail[0] + (t - d[0]) * (log_tail[1] - log_tail[0]) / max(d[1] - d[0], 1e-12)
    high = log_tail[-1] + (t - d[-1]) * (log_tail[-1] - log_tail[-2]) / max(d[-1] - d[-2], 1e-12)
    log_share = np.where(t < d[0], low, np.where(t > d[-1], high, inside))
    return np.clip(np.exp(log_share), 0.0, 1.0)


def named_share(table: dict, images_per_person: Sequence[int], rule: str, threshold: np.ndarray) -> np.ndarray:
    """The share of strangers the table predicts a gallery names at ``threshold``: 1 - prod_j (1 - p_j),
    p_j from the row of person j's image count ("mean"; capped at the largest row) or, for "best",
    1 - (1 - p_1)^k_j (their k_j images as k_j independent ones)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
    rows = sorted(int(k) for k in table["distances"])
    counts = np.bincount(np.asarray(images_per_person, np.int64))
    log_keep = np.zeros(np.shape(threshold))
    for images in np.flatnonzero(counts):
        row = 1 if rule == "best" else max(k for k in rows if k <= images)
        power = counts[images] * (images if rule == "best" else 1)
        share = stranger_share(table["distances"][str(row)], table["tails"], threshold)
        log_keep = log_keep + power * np.log1p(-np.minimum(share, 1 - 1e-12))
    return -np.expm1(log_keep)


def table_threshold(table: dict, images_per_person: Sequence[int], rule: str, rate: float) -> float:
    """The threshold at which the table predicts a share ``rate`` of strangers named (bisection on
    the monotone ``named_share``)."""
    low, high = 0.0, 2.0
    for _ in range(50):
        middle = (low + high) / 2
        if named_share(table, images_per_person, rule, np.array(middle)) > rate:
            high = middle
        else:
            low = middle
    return low


def leave_one_out(embeddings: np.ndarray, labels: np.ndarray, rule: str) -> np.ndarray:
    """Each gallery image's distance to the nearest OTHER person by ``rule``: the image is a stranger
    to the gallery without its own person. (M,); +inf with a single person."""
    embeddings = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels)
    people, index = np.unique(labels, return_inverse=True)
    if rule == "mean":
        means = np.zeros((len(people), embeddings.shape[1]), np.float32)
        np.add.at(means, index, embeddings)
        scores = embeddings @ (means / np.bincount(index)[:, None]).T
        scores[np.arange(len(labels)), index] = -np.inf
    elif rule == "best":
        scores = embeddings @ embeddings.T
        scores[index[:, None] == index[None, :]] = -np.inf
    else:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
    best = scores.max(axis=1)
    return np.where(np.isfinite(best), similarity_to_distance(best), np.inf)


def gallery_threshold(embeddings: np.ndarray, labels: np.ndarray, rule: str, rate: float) -> float:
    """The largest threshold naming at most a share ``rate`` of the left-out gallery images. A left-out
    image sees N - 1 people, a stranger N: the share is scaled as for independent people."""
    distances = leave_one_out(embeddings, labels, rule)
    people = len(np.unique(labels))
    return far_threshold(distances, 1 - (1 - rate) ** ((people - 1) / people))


def describe_gallery(images_per_person: Sequence[int]) -> str:
    """'8 people x 1-3 images' or '517 people x 1 image'."""
    low, high = int(min(images_per_person)), int(max(images_per_person))
    span = str(low) if low == high else f"{low}-{high}"
    return f"{len(images_per_person)} {'person' if len(images_per_person) == 1 else 'people'} x {span} " \
           f"image{'' if span == '1' else 's'}"


def choose_threshold(embeddings: np.ndarray, labels: Sequence[str], rule: str, rate: float,
                     table: dict | None = None, verification: float | None = None) -> Choice:
    """The threshold for this gallery (embeddings (M, D), person of each) at a share ``rate`` of
    strangers named: from the gallery when it has at least MIN_GALLERY_STRANGERS / rate images,
    else from the weights' ``table``, else the gallery's coarse estimate, else ``verification``."""
    if not 0 < rate < 1:
        raise ValueError(f"rate must be above 0 and below 1, not {rate}")
    labels = np.asarray(labels)
    _, images_per_person = np.unique(labels, return_counts=True)
    head = f"for a gallery of {describe_gallery(images_per_person)} at <={rate:.3g} strangers named"
    people = len(images_per_person)
    if people > 1 and rate * len(labels) >= MIN_GALLERY_STRANGERS:
        threshold = gallery_threshold(embeddings, labels, rule, rate)
        also = "" if table is None else \
            f"; the weights' statistics would give {table_threshold(table, images_per_person, rule, rate):.3f}"
        return Choice(threshold, "gallery", f"threshold {threshold:.3f} {head}: from the gallery itself, each of its "
                                            f"{people} people left out as a stranger to the others{also}")
    if table is not None:
        threshold = table_threshold(table, images_per_person, rule, rate)
        where = table.get("measured_on") or "held-out images"
        return Choice(threshold, "weights", f"threshold {threshold:.3f} {head}: from the weights' impostor "
                                            f"statistics ({where}), a stranger named if any person is that close")
    if people > 1:
        threshold = gallery_threshold(embeddings, labels, rule, rate)
        return Choice(threshold, "gallery (coarse)",
                      f"threshold {threshold:.3f} {head}: from the gallery itself (each person left out), "
                      f"coarse with {len(labels)} images; the weights' JSON has no usable "
                      f"'{TABLE_KEY}': run eval_LFW.py to measure them")
    if verification is None:
        raise ValueError("a gallery of one person, no impostor table and no verification threshold")
    return Choice(verification, "verification",
                  f"threshold {verification:.3f} (the verification threshold) {head}: a gallery of one person and "
                  f"no usable '{TABLE_KEY}' in the weights' JSON tell nothing better; run eval_LFW.py to measure them")
