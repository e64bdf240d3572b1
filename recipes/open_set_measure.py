"""How well predict.py's 1:N threshold keeps the share of strangers named that the user asked for.

Used by recipes/eval_identification.py. Every threshold is chosen without the probes it is scored
on: "held-out sets" builds the impostor table (utils.open_set) from the images of the other LFW
sets than the one scored, "weights' JSON" uses the table eval_LFW.py stored beside the weights
(measured on the LFW pairs of its folds, which may include the scored people), "gallery itself" uses
only the gallery (each person left out). Reported: the threshold, the share of strangers named (to
hold against the one asked for) and the share of known probes named correctly.
"""
from __future__ import annotations

import numpy as np

from utils import open_set
from utils.gallery import PersonSearch

SOURCES = ("held-out sets", "weights' JSON", "gallery itself")


def held_out_tables(labels: np.ndarray, sets: np.ndarray, embeddings: np.ndarray) -> dict[int, dict]:
    """For each set, the impostor table of the images of all other sets."""
    return {int(s): open_set.impostor_table(embeddings[sets != s], labels[sets != s], f"LFW sets other than {s}")
            for s in np.unique(sets)}


def scores(gallery: np.ndarray, gallery_labels: np.ndarray, rule: str, known: np.ndarray, known_labels: np.ndarray,
           strangers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(known probe named its own person?, known distance, stranger distance) against one gallery."""
    people, index = np.unique(gallery_labels, return_inverse=True)
    search = PersonSearch(gallery, index, list(people), rule)
    found, known_distance = search.nearest(known)
    return people[found] == known_labels, known_distance, search.nearest(strangers)[1]


def threshold_of(source: str, gallery: np.ndarray, gallery_labels: np.ndarray, rule: str, rate: float,
                 table: dict | None, json_table: dict | None) -> float | None:
    """The threshold ``source`` gives this gallery; None when that source is not there."""
    if source == "gallery itself":
        return open_set.gallery_threshold(gallery, gallery_labels, rule, rate)
    chosen = table if source == "held-out sets" else json_table
    if chosen is None:
        return None
    return open_set.table_threshold(chosen, np.unique(gallery_labels, return_counts=True)[1], rule, rate)


def protocol_rows(parts: dict[str, list], embedding_of: dict[str, np.ndarray], rule: str, rates: list[float],
                  tables: dict[int, dict], json_table: dict | None) -> list[dict]:
    """The LFW protocol's gallery (``parts`` of eval_identification.split: (path, person, set) triples):
    per rate and source, threshold and rates. "held-out sets" is scored set by set (table from the
    other sets, probes of that set) and averaged over the sets."""
    def stack(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.stack([embedding_of[path] for path, _, _ in parts[name]]),
                np.array([person for _, person, _ in parts[name]]), np.array([s for _, _, s in parts[name]]))
    (gallery, gallery_labels, _), (known, known_labels, known_sets) = stack("gallery"), stack("known")
    strangers, _, stranger_sets = stack("unknown")
    correct, known_distance, stranger_distance = scores(gallery, gallery_labels, rule, known, known_labels, strangers)
    rows = []
    for rate in rates:
        for source in SOURCES:
            parts = [(known_sets == s, stranger_sets == s, tables[s]) for s in sorted(tables)] \
                if source == "held-out sets" else [(slice(None), slice(None), None)]
            found = []
            for k, u, table in parts:
                threshold = threshold_of(source, gallery, gallery_labels, rule, rate, table, json_table)
                if threshold is None:
                    break
                found.append((threshold, np.mean(stranger_distance[u] < threshold),
                              np.mean(correct[k] & (known_distance[k] < threshold))))
            if found:
                rows.append({"rate": rate, "source": source, **dict(zip(("threshold", "strangers_named", "known_named"),
                                                                        np.mean(found, axis=0).tolist()))})
    return rows


def draw_gallery(rng: np.random.Generator, people: np.ndarray, counts: np.ndarray, size: int,
                 images: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """``size`` random people and how many of their images go into the gallery: ``images`` each, or
    1-3 at random (None), always leaving one or more as probes. None when too few people qualify."""
    if images is None:
        eligible = np.flatnonzero(counts >= 2)
    else:
        eligible = np.flatnonzero(counts > images)
    if len(eligible) < size:
        return None
    chosen = rng.choice(eligible, size, replace=False)
    if images is None:
        return chosen, rng.integers(1, np.minimum(3, counts[chosen] - 1) + 1)
    return chosen, np.full(size, images)


def small_gallery_rows(embeddings: np.ndarray, labels: np.ndarray, sets: np.ndarray, rule: str, rates: list[float],
                       sizes: list[int], image_counts: list[int | None], repetitions: int, seed: int,
                       tables: dict[int, dict], json_table: dict | None) -> list[dict]:
    """Many random small galleries, each of one LFW set (repetition r uses set r mod 3): their people's
    other images are the known probes, one image of every other person of the set a stranger. Means
    over the galleries, per size, images per person, rate and source."""
    by_set = {}
    for s in np.unique(sets):
        rows = np.flatnonzero(sets == s)
        people, first, counts = np.unique(labels[rows], return_index=True, return_counts=True)
        by_set[int(s)] = (rows, people, rows[first], counts)
    out = []
    for size in sizes:
        for images in image_counts:
            rng = np.random.default_rng([seed, size, 0 if images is None else images])
            results: dict[tuple[float, str], list[tuple[float, float, float]]] = {}
            for repetition in range(repetitions):
                s = sorted(by_set)[repetition % len(by_set)]
                rows, people, first_rows, counts = by_set[s]
                drawn = draw_gallery(rng, people, counts, size, images)
                if drawn is None:
                    break
                chosen, take = drawn
                in_gallery = np.zeros(len(labels), bool)
                for person, k in zip(people[chosen], take):
                    in_gallery[rng.choice(rows[labels[rows] == person], k, replace=False)] = True
                known = np.isin(labels, people[chosen]) & ~in_gallery
                strangers = first_rows[~np.isin(people, people[chosen])]
                correct, known_distance, stranger_distance = scores(
                    embeddings[in_gallery], labels[in_gallery], rule, embeddings[known], labels[known],
                    embeddings[strangers])
                for rate in rates:
                    for source in SOURCES:
                        threshold = threshold_of(source, embeddings[in_gallery], labels[in_gallery], rule, rate,
                                                 tables[s], json_table)
                        if threshold is not None:
                            results.setdefault((rate, source), []).append(
                                (threshold, np.mean(stranger_distance < threshold),
                                 np.mean(correct & (known_distance < threshold))))
            for (rate, source), found in results.items():
                out.append({"people": size, "images": "1-3" if images is None else str(images), "rate": rate,
                            "source": source, "galleries": len(found),
                            **dict(zip(("threshold", "strangers_named", "known_named"),
                                       np.mean(found, axis=0).tolist()))})
    return out


def print_rows(title: str, rows: list[dict], rates: list[float], keys: tuple[str, ...]) -> None:
    """A Markdown table: one line per gallery kind and source; per rate asked, the threshold, the
    share of strangers named and of known probes named correctly."""
    print(f"\n{title}\n")
    print("| gallery | threshold from |" + "".join(f" asked {r:.0%}: threshold | strangers named | known named |"
                                                   for r in rates))
    print("|---|---|" + "---|---|---|" * len(rates))
    groups: dict[tuple, dict[float, dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys) + (row["source"],), {})[row["rate"]] = row
    for key, by_rate in groups.items():
        cells = "".join(f" {r['threshold']:.3f} | {r['strangers_named']:.2%} | {r['known_named']:.1%} |"
                        if (r := by_rate.get(rate)) else " - | - | - |" for rate in rates)
        print(f"| {' x '.join(map(str, key[:-1])) or 'protocol'} | {key[-1]} |{cells}")
