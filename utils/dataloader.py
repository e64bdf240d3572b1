"""Training data: the annotation file, a per-person index, triplet / PK batch samplers and the dataset.

Sampling lives in the batch samplers, which run in the main process and seed every triplet (or PK batch)
from (seed, epoch, global index). Workers only decode what they are given, so they never repeat each
other's triplets, every epoch differs, and a run is reproducible from its seed. (The original drew
triplets inside each worker from identically seeded global RNGs and repeated batches across workers.)
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import DataLoader, Dataset

from utils.config import UserError
from utils.image import ImageError, open_rgb, resize_image


class AnnotationError(UserError, ValueError):
    """An unusable annotation file or dataset; the message is one line saying what to do."""


@dataclass
class Annotation:
    """Image paths and integer person ids read from ``cls_train.txt``."""

    paths: list[str]
    labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1


def read_annotation(path: str) -> Annotation:
    """Read ``<id>;<path>`` lines, splitting on the first ';' only (paths may hold ';' and spaces).

    Relative image paths are taken relative to the folder of the annotation file.
    """
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such annotation file; run `python txt_annotation.py` first "
                              "or set --annotation_path")
    base = os.path.dirname(os.path.abspath(path))
    paths, labels = [], []
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark at the start is skipped
            lines = handle.read().splitlines()
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {err.start}); write it as UTF-8, e.g. with "
                              "`python txt_annotation.py`") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label, sep, image = line.partition(";")
        if not sep or not image or not label.strip().isdigit():
            raise AnnotationError(f"{path}:{number}: expected '<id>;<image path>', got {line[:80]!r}")
        labels.append(int(label))
        paths.append(image if os.path.isabs(image) else os.path.join(base, image))
    if not paths:
        raise AnnotationError(f"{path}: holds no images; run `python txt_annotation.py` on a non-empty datasets folder")
    return Annotation(paths, np.asarray(labels, dtype=np.int64))


def repeated_lines(annotation: Annotation, path: str) -> list[str]:
    """Warnings for lines listed twice (they land in both the training and the validation split) and for
    images listed under two ids (a contradiction the classifier cannot learn), each with a count and an example."""
    seen: dict[str, set[int]] = {}
    twice = 0
    example = ""
    for image, label in zip(annotation.paths, annotation.labels.tolist()):
        ids = seen.setdefault(image, set())
        if label in ids:
            twice += 1
            example = example or image
        ids.add(label)
    warnings = []
    if twice:
        warnings.append(f"warning: {path}: {twice} lines repeat an earlier line (e.g. {example}); validation "
                        "images may also be training images: run `python txt_annotation.py` again")
    conflicts = [(image, ids) for image, ids in seen.items() if len(ids) > 1]
    if conflicts:
        image, ids = conflicts[0]
        warnings.append(f"warning: {path}: {len(conflicts)} images are listed under two or more ids (e.g. {image} "
                        f"under {', '.join(map(str, sorted(ids)))}); give each image one person")
    return warnings


def contiguous_ids(annotation: Annotation, path: str) -> tuple[Annotation, str | None]:
    """``annotation`` with its person ids renumbered 0..n-1 in sorted order when they have gaps (the
    classifier has one row per id up to the largest), with a note saying so; else as it is."""
    ids, labels = np.unique(annotation.labels, return_inverse=True)
    if ids[-1] + 1 == len(ids):
        return annotation, None
    note = (f"note: {path}: the {len(ids)} person ids are not 0..{len(ids) - 1} (largest {int(ids[-1])}); "
            f"numbered 0..{len(ids) - 1} in sorted order for the classifier")
    return replace(annotation, labels=labels.astype(np.int64)), note


class PersonIndex:
    """Images grouped by person, built once with one sort (no scans of the whole list per item).

    People are numbered 0..n-1 here ("slots"); ``people[slot]`` is their class id.
    """

    def __init__(self, labels: np.ndarray, indices: np.ndarray | None = None) -> None:
        indices = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.order = indices[np.argsort(labels[indices], kind="stable")]
        self.people, self.starts, self.counts = np.unique(labels[self.order], return_index=True,
                                                          return_counts=True)
        self.anchor_slots = np.flatnonzero(self.counts >= 2)
        self.slot_of = {int(p): s for s, p in enumerate(self.people)}

    def __len__(self) -> int:
        return len(self.people)

    def images(self, slot: int) -> np.ndarray:
        return self.order[self.starts[slot]:self.starts[slot] + self.counts[slot]]


def split_train_val(num_images: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle image indices once with ``seed`` and hold out ``int(n * val_split)`` for validation."""
    order = np.random.default_rng((seed, 10101)).permutation(num_images)
    num_val = int(num_images * val_split)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def check_trainable(index: PersonIndex, num_train: int, batch_size: int) -> None:
    """Raise AnnotationError when the training split cannot fill one batch of triplets."""
    if num_train < batch_size:
        raise AnnotationError(f"the training split has {num_train} images, fewer than one batch of {batch_size}; "
                              f"it needs at least {batch_size} images: add images or lower --batch_size")
    if len(index.anchor_slots) == 0 or len(index) < 2:
        raise AnnotationError(f"the training split has {len(index)} people and {len(index.anchor_slots)} with two "
                              "or more images; triplets need at least 2 people, one of them with 2+ images")


def item_seeds(rng: np.random.Generator, count: int) -> list[int]:
    return rng.integers(0, 2**63 - 1, size=count).tolist()


class TripletBatchSampler:
    """Batches of triplets laid out as [anchors..., positives..., negatives...] (the original's layout).

    Triplet ``t`` of epoch ``e`` is drawn from ``default_rng((seed, e, t))``: an anchor person with 2+
    images, two different images of them, and one image of another person (anyone, one-image people
    included). Rank ``r`` of ``world`` takes the ``r``-th slice of each global batch, so the union over
    ranks of one step is exactly the batch a single process would see.
    """

    def __init__(self, index: PersonIndex, batch_size: int, num_batches: int, seed: int,
                 rank: int = 0, world: int = 1) -> None:
        if batch_size % 3:
            raise AnnotationError(f"batch_size per process must be a multiple of 3, not {batch_size}")
        self.index, self.triplets, self.num_batches = index, batch_size // 3, num_batches
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def triplet(self, t: int) -> tuple[tuple[int, int, int], list[int]]:
        """Image indices (anchor, positive, negative) and augmentation seeds of triplet ``t``."""
        idx = self.index
        rng = np.random.default_rng((self.seed, self.epoch, t))
        slot = int(idx.anchor_slots[rng.integers(len(idx.anchor_slots))])
        own = idx.images(slot)
        a = int(rng.integers(len(own)))
        p = int(rng.integers(len(own) - 1))
        p += p >= a
        other = int(rng.integers(len(idx) - 1))
        other += other >= slot
        theirs = idx.images(other)
        n = theirs[rng.integers(len(theirs))]
        return (int(own[a]), int(own[p]), int(n)), item_seeds(rng, 3)

    def __iter__(self):
        for b in range(self.num_batches):
            first = (b * self.world + self.rank) * self.triplets
            columns: list[list[tuple[int, int]]] = [[], [], []]
            for t in range(first, first + self.triplets):
                images, seeds = self.triplet(t)
                for column, image, s in zip(columns, images, seeds):
                    column.append((image, s))
            yield columns[0] + columns[1] + columns[2]


class PKBatchSampler:
    """Identity-balanced batches: P people with 2+ images, K images each, then ``free_images`` drawn
    uniformly from all training images (``batch_size = P * K + free_images + unlabelled_images``).

    People with fewer than K images give all of theirs and repeat some (each copy is augmented apart).
    The free images bring in the people with a single image, whom P x K batches never pick: with a
    distillation teacher they carry signal too (and serve as in-batch negatives). ``unlabelled_images``
    more are drawn from the dataset indices ``unlabelled`` (faces known to the teacher only).
    Batch ``g`` (global over ranks) of epoch ``e`` is drawn from ``default_rng((seed, e, g))``.
    """

    def __init__(self, index: PersonIndex, batch_size: int, images_per_person: int, num_batches: int,
                 seed: int, rank: int = 0, world: int = 1, free_images: int = 0,
                 unlabelled: range = range(0), unlabelled_images: int = 0) -> None:
        extra = free_images + unlabelled_images
        if not 0 <= extra < batch_size:
            raise AnnotationError(f"free_images + unlabelled_images per process must be at least 0 and below the "
                                  f"batch size per process ({batch_size}), not {extra}")
        if images_per_person < 2 or (batch_size - extra) % images_per_person:
            raise AnnotationError(f"the PK sampler needs images_per_person >= 2 dividing the batch size per process "
                                  f"less free and unlabelled images ({batch_size - extra}); got images_per_person "
                                  f"{images_per_person}")
        if unlabelled_images and not len(unlabelled):
            raise AnnotationError("unlabelled_images needs unlabelled faces to draw from")
        self.index, self.k, self.free = index, images_per_person, free_images
        self.unlabelled, self.unlabelled_images = unlabelled, unlabelled_images
        self.p = (batch_size - extra) // images_per_person
        self.num_batches, self.seed, self.rank, self.world, self.epoch = num_batches, seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, g: int) -> list[tuple[int, int]]:
        idx = self.index
        rng = np.random.default_rng((self.seed, self.epoch, g))
        slots = rng.choice(idx.anchor_slots, self.p, replace=self.p > len(idx.anchor_slots))
        chosen = []
        for slot in slots:
            own = idx.images(int(slot))
            if len(own) >= self.k:
                picks = rng.choice(len(own), self.k, replace=False)
            else:
                picks = np.concatenate([rng.permutation(len(own)), rng.integers(len(own), size=self.k - len(own))])
            chosen.extend(own[picks].tolist())
        if self.free:
            chosen.extend(idx.order[rng.integers(len(idx.order), size=self.free)].tolist())
        if self.unlabelled_images:
            chosen.extend((self.unlabelled.start + rng.integers(len(self.unlabelled),
                                                                size=self.unlabelled_images)).tolist())
        return list(zip(chosen, item_seeds(rng, len(chosen))))

    def __iter__(self):
        for b in range(self.num_batches):
            yield self.batch(b * self.world + self.rank)


def validation_triplets(index: PersonIndex, val_indices: np.ndarray, labels: np.ndarray,
                        seed: int) -> np.ndarray:
    """Fixed (anchor, positive, negative) rows, one per held-out image whose person has another image.

    The anchor is the held-out image; the positive is another image of that person (held-out ones first)
    and the negative an image of another person, all drawn once so the validation loss is comparable
    between epochs. ``index`` covers all images (training and held-out).
    """
    rng = np.random.default_rng((seed, 20202))
    held = set(np.asarray(val_indices).tolist())
    rows = []
    for a in np.asarray(val_indices).tolist():
        slot = index.slot_of[int(labels[a])]
        own = [i for i in index.images(slot).tolist() if i != a]
        if not own or len(index) < 2:
            continue
        preferred = [i for i in own if i in held] or own
        other = int(rng.integers(len(index) - 1))
        other += other >= slot
        theirs = index.images(other)
        rows.append((a, preferred[rng.integers(len(preferred))], int(theirs[rng.integers(len(theirs))])))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


class ValidationBatchSampler:
    """Batches of the fixed validation triplets (same layout as training), sharded over ranks."""

    def __init__(self, triplets: np.ndarray, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.rows = triplets[rank::world]
        self.per_batch = max(1, batch_size // 3)

    def __len__(self) -> int:
        return -(-len(self.rows) // self.per_batch)

    def __iter__(self):
        for start in range(0, len(self.rows), self.per_batch):
            chunk = self.rows[start:start + self.per_batch]
            yield [(int(i), -1) for i in chunk.T.reshape(-1)]


class FaceDataset(Dataset):
    """Decodes one image per item ``(index, seed)`` into an HWC uint8 array of ``input_shape``.

    Each item is (image, label, view) with ``view = 2 * index + flipped``: which image it shows and
    whether mirrored, so a distillation teacher's descriptor of exactly that view can be looked up.
    ``seed`` >= 0 makes a training item: random horizontal flip, plus light augmentation of strength
    ``augment`` (0: none; see light_augment); ``seed`` < 0 gives the plain resized image. An
    unreadable file is reported once (shared between worker processes) and replaced by another image of
    the same person.
    """

    def __init__(self, annotation: Annotation, input_shape: list[int] | tuple[int, ...], letterbox: bool,
                 augment: float = 0.0) -> None:
        self.paths, self.labels = annotation.paths, annotation.labels
        self.size = (int(input_shape[1]), int(input_shape[0]))
        self.letterbox, self.augment = letterbox, augment
        self.index = PersonIndex(self.labels)
        self.bad = torch.zeros(len(self.paths), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]) -> tuple[np.ndarray, int, int]:
        index, seed = item
        rng = np.random.default_rng(seed) if seed >= 0 else None
        image = resize_image(self.load(index, rng), self.size, self.letterbox)
        flipped = False
        if rng is not None:
            if self.augment:
                image = light_augment(image, rng, self.augment)
            if rng.random() < 0.5:
                image, flipped = image.transpose(Image.FLIP_LEFT_RIGHT), True
        return np.asarray(image, dtype=np.uint8), int(self.labels[index]), 2 * index + flipped

    def open(self, index: int) -> Image.Image:
        """Decode image ``index`` (an image file here; a record in utils.recordio.RecordDataset)."""
        return open_rgb(self.paths[index])

    def load(self, index: int, rng: np.random.Generator | None) -> Image.Image:
        try:
            return self.open(index)
        except ImageError as err:
            self.report(index, err)
        own = self.index.images(self.index.slot_of[int(self.labels[index])])
        candidates = own[own != index]
        if rng is not None:
            candidates = rng.permutation(candidates)
        for other in candidates.tolist():
            if self.bad[other]:
                continue
            try:
                return self.open(other)
            except ImageError as err:
                self.report(other, err)
        raise ImageError(f"{self.paths[index]}: unreadable and person {int(self.labels[index])} has no other "
                         "readable image; remove the file and run txt_annotation.py again")

    def report(self, index: int, err: ImageError) -> None:
        if not self.bad[index]:
            self.bad[index] = 1
            print(f"warning: {err}; using another image of the same person from now on", flush=True)


def light_augment(image: Image.Image, rng: np.random.Generator, strength: float = 1.0) -> Image.Image:
    """Scale 0.9-1.1, shift up to 5%, rotate up to 5 degrees (grey fill), jitter brightness/contrast/colour
    by 0.8-1.2; ``strength`` widens every range by that factor (2: scale 0.8-1.2, 10%, 10 degrees, 0.6-1.4)."""
    w, h = image.size
    scale = rng.uniform(1.0 - 0.1 * strength, 1.0 + 0.1 * strength)
    angle = np.deg2rad(rng.uniform(-5.0 * strength, 5.0 * strength))
    dx, dy = rng.uniform(-0.05 * strength, 0.05 * strength, size=2) * (w, h)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    cx, cy = w / 2, h / 2
    # PIL maps each output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f).
    ox, oy = cx + dx, cy + dy
    coeffs = (cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy)
    image = image.transform((w, h), Image.AFFINE, coeffs, Image.BILINEAR, fillcolor=(128, 128, 128))
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1.0 - 0.2 * strength, 1.0 + 0.2 * strength))
    return image


def collate(batch: list[tuple[np.ndarray, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack HWC uint8 images into an (N, 3, H, W) uint8 tensor with channels-last strides, plus labels
    and views (see FaceDataset)."""
    images = torch.from_numpy(np.stack([item[0] for item in batch])).permute(0, 3, 1, 2)
    labels = torch.tensor([item[1] for item in batch], dtype=torch.int64)
    views = torch.tensor([item[2] for item in batch], dtype=torch.int64)
    return images, labels, views


def make_loader(dataset: Dataset, batch_sampler: Iterable, workers: int, cuda: bool,
                seed: int) -> DataLoader:
    """The loader of training and validation: ``workers`` decoding processes (0: in the training process)."""
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=cuda, persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
