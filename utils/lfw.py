"""LFW verification: the official pairs, the embeddings of their images, and the whole evaluation.

``eval_LFW.py`` and ``train.py`` (between epochs) both call ``evaluate_lfw``. Each distinct image
of the pairs is decoded and embedded once (7,701 images for the 6,000 official pairs), in batches,
by ``utils.runtime.Embedder``: the path facenet.py uses, so that a threshold measured here
is applied by the same code there.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from PIL import Image
from tqdm import tqdm

from utils import open_set, verification
from utils.alignment import SETTINGS_FILE, folder_alignment
from utils.checkpoint import save_figure
from utils.config import UserError
from utils.image import ImageError, decode_rgb, open_rgb, preprocess
from utils.runtime import Embedder, network_threads

PAIR_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
RAW_LFW_SIZE = (250, 250)   # every photo of LFW as distributed (and of its deep-funneled version)


class PairsError(UserError, ValueError):
    """A pairs file or fold selection that cannot be used; the message is one line naming the file."""


class MissingLFWError(PairsError, FileNotFoundError):
    """The pairs file, the LFW folder or some of its images are not there."""


@dataclass
class LFWPairs:
    """Pairs as indices into ``paths`` (each distinct image once) with labels and official set (1..10).

    ``paths`` may hold encoded image bytes instead of file names (the images of a .bin set)."""

    paths: list[str]
    left: np.ndarray
    right: np.ndarray
    issame: np.ndarray
    fold: np.ndarray


def parse_folds(text: str) -> list[int] | None:
    """'all' -> None (every fold); '8,9,10' -> [8, 9, 10]."""
    if text.strip().lower() == "all":
        return None
    try:
        folds = [int(p) for p in text.replace(",", " ").split()]
    except ValueError:
        folds = []
    if not folds:
        raise PairsError(f"--folds must be 'all' or a list such as '8,9,10', not {text!r}")
    return folds


def read_pairs(pairs_path: str) -> tuple[list[tuple[str, int, str, int]], int, int]:
    """The pair lines of an official-format file as (name1, i, name2, j), plus (sets, pairs per half-set)."""
    if not os.path.isfile(pairs_path):
        raise MissingLFWError(f"{pairs_path}: no such pairs file; copy LFW's pairs.txt there "
                                "(the repository ships it as model_data/lfw_pair.txt) or set --lfw_pairs_path")
    lines = text_lines(pairs_path)
    header = lines[0][1] if lines else []
    if len(header) != 2 or not all(f.isdigit() and int(f) > 0 for f in header):
        raise PairsError(f"{pairs_path}, line {lines[0][0] if lines else 1}: expected the header "
                         f"'sets pairs_per_half' such as '10 300', got {' '.join(header)!r}")
    sets, half = int(header[0]), int(header[1])
    pairs = []
    for no, fields in lines[1:]:
        numbers = fields[1::2] if len(fields) == 4 else fields[1:]
        if len(fields) not in (3, 4) or not all(f.isdigit() and int(f) > 0 for f in numbers):
            raise PairsError(f"{pairs_path}, line {no}: expected 'name i j' or 'name1 i name2 j' with image "
                             f"numbers from 1, got {' '.join(fields)!r}")
        if len(fields) == 3:
            pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
        else:
            pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
    if len(pairs) != sets * 2 * half:
        raise PairsError(f"{pairs_path}: {len(pairs)} pairs, but the header says {sets} sets of 2 x {half} "
                         f"= {sets * 2 * half}")
    return pairs, sets, half


def text_lines(path: str) -> list[tuple[int, list[str]]]:
    """The non-blank lines of a UTF-8 text file (a byte-order mark is allowed) as (line number, fields)."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return [(no, line.split()) for no, line in enumerate(handle, start=1) if line.strip()]
    except UnicodeDecodeError as err:
        raise PairsError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                         "give the pairs file as plain text, as LFW's pairs.txt is") from None
    except OSError as err:
        raise PairsError(f"{path}: cannot be read ({err.strerror})") from None


def missing_images_hint(lfw_dir: str) -> str:
    """What to do about images of the pairs missing from ``lfw_dir``: align_dataset.py skips the photos
    where it finds no face (listed in failures.csv) unless --no_face centre writes a centre crop."""
    source = "<raw LFW>"
    try:
        with open(os.path.join(lfw_dir, SETTINGS_FILE), encoding="utf-8") as handle:
            source = json.load(handle).get("input_dir") or source
    except (OSError, ValueError, AttributeError):
        pass
    failures = os.path.join(lfw_dir, "failures.csv")
    if os.path.isfile(failures):
        return (f"align_dataset.py lists the photos it could not align, most often for finding no face, in "
                f"{failures}; add centre crops for those with python align_dataset.py --input_dir {source} "
                f"--output_dir {lfw_dir} --retry_failed True --no_face centre")
    return (f"align all of LFW into that folder with python align_dataset.py --input_dir {source} --output_dir "
            f"{lfw_dir} --no_face centre (the pairs need every image), or set --lfw_dir_path")


def unaligned_warning(lfw_dir: str, paths: list[str], sample: int = 20) -> str | None:
    """A warning when ``lfw_dir`` looks like LFW's raw photos rather than aligned faces: no
    align_settings.json and its first ``sample`` images all 250x250, the size of every photo LFW ships."""
    if folder_alignment(lfw_dir) is not None:
        return None
    sizes = set()
    for path in paths[:sample]:
        try:
            with Image.open(path) as image:
                sizes.add(image.size)
        except (OSError, ValueError):
            pass  # a bad image is reported, naming it, when it is embedded
    if sizes != {RAW_LFW_SIZE}:
        return None
    return (f"warning: {lfw_dir} looks unaligned: it has no {SETTINGS_FILE} and its images are 250x250 like "
            "LFW's raw photos, on which the scores are far lower; align it first with python align_dataset.py "
            f"--input_dir {lfw_dir} --output_dir lfw_aligned --no_face centre, then give --lfw_dir_path lfw_aligned")


def find_image(lfw_dir: str, name: str, number: int) -> str | None:
    """``<lfw_dir>/<name>/<name>_<number:04d>`` with the first extension that exists, else None."""
    stem = os.path.join(lfw_dir, name, f"{name}_{number:04d}")
    for ext in PAIR_IMAGE_EXTENSIONS:
        if os.path.isfile(stem + ext):
            return stem + ext
    return None


def load_pairs(pairs_path: str, lfw_dir: str, folds: list[int] | None = None) -> LFWPairs:
    """Read the official-format pairs file and find every image in ``lfw_dir``.

    The file is 'sets half' then, per set, ``half`` matched 'name i j' and ``half`` mismatched
    'name1 i name2 j' lines; the k-th set is fold k. ``folds`` (1-based) keeps only those sets.
    A missing image raises FileNotFoundError naming how many are missing and the first few.
    """
    pairs, sets, half = read_pairs(pairs_path)
    issame = np.array([a == b for a, _, b, _ in pairs], dtype=bool)
    fold = np.arange(len(pairs)) // (2 * half) + 1
    matched_per_set = np.bincount(fold[issame], minlength=sets + 1)[1:]
    if np.any(matched_per_set != half):
        k = int(np.argmax(matched_per_set != half)) + 1
        raise PairsError(f"{pairs_path}: set {k} has {matched_per_set[k - 1]} matched pairs instead of {half}; "
                         "the file must list each set's matched pairs, then its mismatched pairs")
    if folds is not None:
        unknown = sorted(set(folds) - set(range(1, sets + 1)))
        if unknown or not folds:
            raise PairsError(f"folds {unknown or folds} do not exist: {pairs_path} has sets 1..{sets}")
        keep = np.isin(fold, folds)
        pairs, issame, fold = [p for p, k in zip(pairs, keep) if k], issame[keep], fold[keep]
    if not os.path.isdir(lfw_dir):
        raise MissingLFWError(f"{lfw_dir}: no such LFW folder; put the aligned LFW there "
                                "(align_dataset.py) or set --lfw_dir_path")

    index: dict[tuple[str, int], int] = {}
    left, right = [], []
    for a, i, b, j in pairs:
        left.append(index.setdefault((a, i), len(index)))
        right.append(index.setdefault((b, j), len(index)))
    paths, missing = [], []
    for name, number in index:
        path = find_image(lfw_dir, name, number)
        paths.append(path)
        if path is None:
            missing.append(os.path.join(lfw_dir, name, f"{name}_{number:04d}.jpg"))
    if missing:
        raise MissingLFWError(f"{len(missing)} of {len(index)} images named in {pairs_path} are missing from "
                              f"{lfw_dir} (first: {', '.join(missing[:3])}); {missing_images_hint(lfw_dir)}")
    return LFWPairs(paths=paths, left=np.array(left, dtype=np.int64), right=np.array(right, dtype=np.int64),
                    issame=issame, fold=fold.astype(np.int64))


class ImageList(Dataset):
    """Network inputs for a list of image files (or encoded images); a bad one comes back as its one-line error."""

    def __init__(self, paths: list[str], input_shape: list[int], letterbox: bool) -> None:
        self.paths, self.input_shape, self.letterbox = paths, input_shape, letterbox

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        # Errors travel as data: an exception raised in a worker would reach the user as a traceback.
        source = self.paths[i]
        try:
            image = decode_rgb(source, f"image {i}") if isinstance(source, bytes) else open_rgb(source)
            return preprocess(image, self.input_shape, self.letterbox), ""
        except ImageError as err:
            return torch.zeros(3, self.input_shape[0], self.input_shape[1]), str(err)


def embed_paths(model: nn.Module, paths: list[str], input_shape: list[int], letterbox: bool,
                batch_size: int, device: str | torch.device, flip: bool = False, num_workers: int = 0,
                progress: bool = True, precision: str = "fp32") -> np.ndarray:
    """L2-normalised float32 embeddings (N, D) of ``paths``, in order, computed by an ``Embedder``
    at ``precision``.

    ``batch_size`` images are decoded together. ``model`` itself is left as it was (an eval-mode copy
    with batch-norm folded runs).
    """
    if not paths:
        raise ValueError("no images to embed")
    device = torch.device(device)
    embedder = Embedder(model, device, precision, flip)
    loader = DataLoader(ImageList(paths, input_shape, letterbox), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    chunks = []
    threads = torch.get_num_threads()
    if device.type == "cpu" and num_workers:
        # Leave the decoding workers their cores (measured 3.5x slower on a shared 2-core machine otherwise).
        torch.set_num_threads(network_threads(num_workers))
    try:
        with torch.inference_mode(), tqdm(total=len(paths), unit="img", desc="embedding", disable=not progress,
                                          leave=False) as bar:
            for images, errors in loader:
                failed = [e for e in errors if e]
                if failed:
                    raise ImageError(failed[0])
                chunks.append(embedder(images))
                bar.update(len(images))
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(chunks)


def evaluate_lfw(model: nn.Module, pairs: LFWPairs, input_shape: list[int], letterbox: bool,
                 batch_size: int, device: str | torch.device, flip: bool = False, num_workers: int = 0,
                 progress: bool = True, precision: str = "fp32", impostors: bool = False) -> dict:
    """Embed the images of ``pairs`` and return ``verification.evaluate`` on their distances.

    The distance is the Euclidean distance between L2-normalised embeddings (0..2), the one
    facenet.py compares with ``threshold``. Adds the image count, flip and embedding speed, and with
    ``impostors`` the impostor table of these images' people (``utils.open_set``, for 1:N thresholds).
    """
    start = time.perf_counter()
    embeddings = embed_paths(model, pairs.paths, input_shape, letterbox, batch_size, device, flip=flip,
                             num_workers=num_workers, progress=progress,
                             precision=precision).astype(np.float64)
    seconds = time.perf_counter() - start
    distances = np.linalg.norm(embeddings[pairs.left] - embeddings[pairs.right], axis=1)
    result = verification.evaluate(distances, pairs.issame, pairs.fold)
    result.update(distance="euclidean between L2-normalised embeddings", flip=flip, precision=precision,
                  num_images=len(pairs.paths), embed_seconds=seconds,
                  images_per_second=len(pairs.paths) / seconds)
    if impostors:
        people = [os.path.basename(os.path.dirname(path)) for path in pairs.paths]
        folds = ",".join(map(str, result["folds"]))
        result[open_set.TABLE_KEY] = open_set.impostor_table(embeddings, people, f"LFW folds {folds}, "
                                                             f"{len(people)} images of {len(set(people))} people")
    return result


def save_roc_plot(result: dict, path: str, title: str = "LFW ROC") -> None:
    """Draw the ROC curve of an ``evaluate_lfw`` result, or of several by name ({name: result}), to ``path``
    (format from its extension), atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {"": result} if "roc_fpr" in result else result
    figure, axes = plt.subplots(figsize=(5, 5), dpi=120)
    for name, one in curves.items():
        label = f"{name + ': ' if name else ''}AUC {one['auc']:.4f}, accuracy {one['accuracy_mean']:.4f}"
        line, = axes.plot(one["roc_fpr"], one["roc_tpr"], lw=1.5, label=label)
        axes.plot([one["eer"]], [1 - one["eer"]], "o", color=line.get_color() if name else "red",
                  label=None if name else f"EER {one['eer']:.4f}")
    axes.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    save_figure(figure, path)
    plt.close(figure)
