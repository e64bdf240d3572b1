"""Verification sets besides the LFW folder: ``.bin`` files and CALFW / CPLFW pairs lists, named, loaded
and scored with the LFW protocol (10 folds, each fold's threshold chosen on the other folds).

A set is named after its file: ``cfp_fp.bin`` -> cfp_fp, ``pairs_CALFW.txt`` -> calfw (a second set of
the same name gets _2). The LFW folder of train.py and eval_LFW.py is the set "lfw".

CALFW / CPLFW pairs lists (``pairs_CALFW.txt``, ``pairs_CPLFW.txt``) hold two consecutive lines
``filename label`` per pair, the images in ``aligned images/`` beside the list. A positive pair's two
lines carry its fold number (1..10); a negative pair's carry 0. Negatives are dealt to folds in order:
the j-th negative pair takes the fold of the j-th positive pair (with P positives and N negatives,
of positive j * P // N), which keeps each fold's positives and negatives equal in number. A list whose
positives all carry the same number is split into 10 consecutive folds of positives instead.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import nn

from utils.alignment import Alignment
from utils.binset import DEFAULT_FOLDS, kfold_ids, read_bin
from utils.config import UserError
from utils.image import ImageError
from utils.lfw import LFWPairs, MissingLFWError, PairsError, evaluate_lfw, text_lines

PAIRS_LIST_IMAGES = "aligned images"
LFW_FOLDER_SET = "lfw"
INSIGHTFACE_SIZE = (112, 112)


@dataclass
class ValSet:
    """A named verification set: its pairs and, when known, how its faces were aligned."""

    name: str
    path: str
    pairs: LFWPairs
    alignment: Alignment | None = None


def set_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    return stem[len("pairs_"):] if stem.startswith("pairs_") and len(stem) > 6 else stem


def expand(spec: str | list | tuple) -> list[str]:
    """The set files of a comma-separated ``spec``: ``.bin`` files, folders (their ``.bin`` files) and
    pairs lists (``.txt``)."""
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    files = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(".bin"))
            if not found:
                raise UserError(f"{item}: a folder without .bin files; give .bin files or the folder holding them")
            files += found
        elif item.lower().endswith((".bin", ".txt")):
            files.append(item)
        else:
            raise UserError(f"{item}: not a .bin file, a folder of them or a pairs list (.txt)")
    return files


def load_set(path: str, folds: int = DEFAULT_FOLDS, name: str | None = None) -> ValSet:
    """A ``.bin`` (folds of consecutive pairs) or a CALFW/CPLFW pairs list as a ``ValSet``."""
    name = name or set_name(path)
    if path.lower().endswith(".txt"):
        return ValSet(name, path, read_pairs_list(path))
    images, issame = read_bin(path)
    n = len(issame)
    size = Image.open(io.BytesIO(images[0])).size
    pairs = LFWPairs(paths=images, left=np.arange(0, 2 * n, 2), right=np.arange(1, 2 * n, 2), issame=issame,
                     fold=kfold_ids(n, folds))
    # insightface's sets are five-point warps of 112 x 112; a .bin of another size says nothing of its kind
    return ValSet(name, path, pairs, Alignment("warp", 112) if size == INSIGHTFACE_SIZE else None)


def load_sets(spec: str | list | tuple, folds: int = DEFAULT_FOLDS, taken: tuple[str, ...] = ()) -> list[ValSet]:
    """Every set of ``spec`` (see ``expand``), with names unique among themselves and ``taken``."""
    sets, names = [], set(taken)
    for path in expand(spec):
        base = name = set_name(path)
        k = 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        sets.append(load_set(path, folds, name))
    return sets


def read_pairs_list(path: str, images_dir: str | None = None) -> LFWPairs:
    """A CALFW / CPLFW pairs list with its images (``aligned images/`` beside it unless given)."""
    if not os.path.isfile(path):
        raise MissingLFWError(f"{path}: no such pairs list; give pairs_CALFW.txt or pairs_CPLFW.txt")
    images_dir = images_dir or os.path.join(os.path.dirname(os.path.abspath(path)), PAIRS_LIST_IMAGES)
    rows = text_lines(path)
    bad = next(((no, f) for no, f in rows if len(f) != 2 or not f[1].isdigit()), None)
    if bad:
        raise PairsError(f"{path}, line {bad[0]}: expected 'filename label', got {' '.join(bad[1])!r}")
    if len(rows) % 2 or not rows:
        raise PairsError(f"{path}: {len(rows)} lines; a pairs list holds two lines per pair")
    names = [f[0] for _, f in rows]
    labels = np.array([int(f[1]) for _, f in rows]).reshape(-1, 2)
    odd = np.flatnonzero(labels[:, 0] != labels[:, 1])
    if len(odd):
        raise PairsError(f"{path}, line {rows[2 * odd[0]][0]}: the two lines of a pair carry different labels "
                         f"({labels[odd[0], 0]} and {labels[odd[0], 1]}); both carry the fold, or 0")
    label = labels[:, 0]
    issame = label > 0
    if issame.all() or not issame.any():
        raise PairsError(f"{path}: needs both positive pairs (labelled with their fold) and negatives (0)")
    fold = pairs_list_folds(label)
    index: dict[str, int] = {}
    ids = np.array([index.setdefault(n, len(index)) for n in names]).reshape(-1, 2)
    paths = [os.path.join(images_dir, n) for n in index]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise MissingLFWError(f"{len(missing)} of {len(paths)} images named in {path} are missing (first: "
                              f"{missing[0]}); put the set's images in {images_dir}")
    return LFWPairs(paths=paths, left=ids[:, 0], right=ids[:, 1], issame=issame, fold=fold)


def pairs_list_folds(label: np.ndarray) -> np.ndarray:
    """Fold of each pair of a pairs list from its labels (see the module's docstring)."""
    positive = np.flatnonzero(label > 0)
    negative = np.flatnonzero(label == 0)
    positive_fold = label[positive]
    if len(np.unique(positive_fold)) == 1:
        positive_fold = kfold_ids(len(positive), min(DEFAULT_FOLDS, len(positive)))
    fold = np.zeros(len(label), dtype=np.int64)
    fold[positive] = positive_fold
    fold[negative] = positive_fold[np.arange(len(negative)) * len(positive) // len(negative)]
    return fold


def score_sets(model: nn.Module, sets: list[ValSet], input_shape: list[int], letterbox: bool, batch_size: int,
               device, flip: bool = False, num_workers: int = 0, progress: bool = True,
               precision: str = "fp32") -> dict[str, dict]:
    """``evaluate_lfw`` of each set, by name."""
    results = {}
    for valset in sets:
        try:
            results[valset.name] = evaluate_lfw(model, valset.pairs, input_shape, letterbox, batch_size, device,
                                                flip=flip, num_workers=num_workers, progress=progress,
                                                precision=precision)
        except ImageError as err:
            raise UserError(f"{valset.path}: {err}") from None
    return results


def table(results: dict[str, dict]) -> list[str]:
    """One line per set: pairs, accuracy +- std, VAL@FAR, AUC and EER."""
    width = max([len(n) for n in results] + [4])
    far = next(iter(results.values()))["far_target"] if results else 1e-3
    lines = [f"  {'set':<{width}}  {'pairs':>6}  {'accuracy':>17}  {f'VAL@FAR={far:g}':>17}  {'AUC':>7}  {'EER':>7}"]
    for name, r in results.items():
        lines.append(f"  {name:<{width}}  {r['num_pairs']:>6}  {r['accuracy_mean']:.5f} +- {r['accuracy_std']:.5f}"
                     f"  {r['val']:.5f} +- {r['val_std']:.5f}  {r['auc']:.5f}  {r['eer']:.5f}")
        if r.get("warning"):
            lines.append(f"  {'':<{width}}  warning: {r['warning']}")
    return lines


def history_entries(results: dict[str, dict]) -> dict:
    """The per-epoch row entries of the sets: ``<name>_accuracy`` (a history column) and its threshold."""
    row = {}
    for name, r in results.items():
        row[f"{name}_accuracy"] = r["accuracy_mean"]
        row[f"{name}_threshold"] = r["threshold_mean"]
    return row


def best_metric(row: dict, target: str) -> tuple[str, bool]:
    """The row entry that picks the best epoch: ``<target>_accuracy`` (higher is better) when measured,
    else the validation loss, else the training loss (lower is better)."""
    for metric, higher in ((f"{target}_accuracy", True), ("val_loss", False), ("loss", False)):
        value = row.get(metric)
        if isinstance(value, float) and np.isfinite(value):
            return metric, higher
    return "loss", False
