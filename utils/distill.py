"""Knowledge distillation from a fixed teacher: the teacher file and the losses.

The teacher file (written by ``recipes/teacher_embeddings.py``) is an ``.npz`` holding ``keys`` (image
paths relative to the folder of the annotation file), ``embeddings`` (N, 2, D) float32 with the
teacher's descriptor of each image and of its mirror image, and ``missing`` (images the teacher could
not describe). Training looks up each batch image by (index, flipped) and pulls the student's
L2-normalised embedding towards the teacher's centred, normalised descriptor of exactly that view.

Centring matters: dlib's descriptors share a large common component (the mean descriptor has 91% of
their norm, and two random faces have cosine 0.83), so without it the student can reach cosine 0.9 with
the teacher by matching that mean alone and learns little about identity. Centred, two random faces
have cosine about 0 and the whole sphere carries identity, as in the student's own embedding. Centring
and renormalising each descriptor changes the order of some pairs, though: the in-batch similarity term can
instead match the raw teacher's similarities, shifted and scaled so that random faces have 0 (train.py's
``distill_pair_target raw``).

The bank term looks beyond the batch: each student embedding is compared with the teacher's descriptors
of every training image, and its softmax over them is pulled towards the teacher's own, so that the
images the teacher finds nearest (the ones a gallery confuses) are the student's nearest too.
"""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

from utils.checkpoint import write_bytes_atomic
from utils.config import UserError


class TeacherError(UserError, ValueError):
    """A teacher file that cannot serve the annotation; one line naming the file and the fix."""


def teacher_key(path: str, annotation_path: str) -> str:
    """The key of an image in the teacher file: its path relative to the annotation file's folder."""
    base = os.path.dirname(os.path.abspath(annotation_path))
    return os.path.normpath(os.path.relpath(os.path.abspath(path), base)).replace(os.sep, "/")


def save_teacher(path: str, keys: list[str], embeddings: np.ndarray, missing: list[str]) -> None:
    """Write the teacher file atomically (temp file, then ``os.replace``)."""
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.asarray(keys, dtype=str), embeddings=np.asarray(embeddings, dtype=np.float32),
             missing=np.asarray(missing, dtype=str))
    write_bytes_atomic(path, buffer.getvalue())


def read_teacher(path: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(keys, embeddings (N, 2, D), missing) of a teacher file; TeacherError when it is not one."""
    fix = "recompute it with python -m recipes.teacher_embeddings"
    if not os.path.isfile(path):
        raise TeacherError(f"{path}: no such teacher file; {fix}, or train without it: --teacher_path ''")
    try:
        data = np.load(path, allow_pickle=False)
        single = not isinstance(data, np.lib.npyio.NpzFile)  # one .npy array under an .npz name
        if not single:
            with data:
                keys, embeddings = data["keys"].tolist(), data["embeddings"]
                missing = data["missing"].tolist() if "missing" in data.files else []
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise TeacherError(f"{path}: not a readable teacher file ({type(err).__name__}); {fix}") from None
    if single:
        raise TeacherError(f"{path}: holds one array, not a teacher file (keys, embeddings, missing); {fix}")
    if embeddings.ndim != 3 or embeddings.shape[:2] != (len(keys), 2):
        raise TeacherError(f"{path}: embeddings have shape {tuple(embeddings.shape)}, expected "
                           f"({len(keys)}, 2, D) for {len(keys)} keys; {fix}")
    if not np.isfinite(embeddings).all():
        raise TeacherError(f"{path}: holds NaN or infinite descriptors; {fix}")
    return keys, embeddings, missing


def teacher_rows(path: str, image_paths: list[str], annotation_path: str, embedding_size: int) -> torch.Tensor:
    """The teacher's stored descriptors of every annotated image, (N, 2, D) float64 in annotation order.

    Every image must have an entry and D must equal the student's embedding size: training on a partial
    teacher would silently drop the loss for some images.
    """
    keys, embeddings, _ = read_teacher(path)
    if embeddings.shape[2] != embedding_size:
        raise TeacherError(f"{path}: descriptors have {embeddings.shape[2]} dimensions but the student's "
                           f"embedding has {embedding_size}; use a {embedding_size}-d teacher")
    row = {k: i for i, k in enumerate(keys)}
    wanted = [teacher_key(p, annotation_path) for p in image_paths]
    absent = [k for k in wanted if k not in row]
    if absent:
        raise TeacherError(f"{path}: {len(absent)} of {len(wanted)} training images have no teacher entry "
                           f"(first: {', '.join(absent[:3])}); recompute it for {annotation_path} with "
                           "python -m recipes.teacher_embeddings, or drop those images from the annotation")
    return torch.from_numpy(embeddings[[row[k] for k in wanted]]).double()


def teacher_targets(rows: torch.Tensor, centre: bool = True, centre_rows: int | None = None) -> torch.Tensor:
    """Training targets from teacher_rows: centred when ``centre`` (on the mean over both views of the first
    ``centre_rows`` images, by default of all), and normalised; float32."""
    if centre:
        rows = rows - rows[:centre_rows].reshape(-1, rows.shape[2]).mean(0)
    return F.normalize(rows, dim=2).float()


def chance_similarity(table: torch.Tensor) -> float:
    """The mean cosine similarity of two random rows of a normalised (N, 2, D) teacher table: the squared
    norm of its mean row (0.83 for dlib's raw descriptors, about 0 once centred)."""
    return float(table.reshape(-1, table.shape[2]).double().mean(0).pow(2).sum())


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(student, teacher) over the batch: 0 when they agree, at most 2.

    Both are unit rows, so this is half the mean squared Euclidean distance between them.
    """
    return (1.0 - (student * teacher).sum(1)).mean()


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor, chance: float = 0.0) -> torch.Tensor:
    """Mean squared difference of the in-batch cosine similarities of distinct images (relational term).

    The teacher's similarities s are mapped to (s - chance) / (1 - chance), so that two random faces
    (``chance``, see chance_similarity) come out at 0 as in the student's embedding, in the teacher's order.
    """
    n = len(student)
    if n < 2:
        return student.new_zeros(())
    off = ~torch.eye(n, dtype=torch.bool, device=student.device)
    target = (teacher @ teacher.T - chance) / (1.0 - chance)
    return ((student @ student.T - target)[off]).pow(2).mean()


def bank_loss(student: torch.Tensor, teacher: torch.Tensor, bank: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """KL divergence from the teacher's softmax over ``bank`` (M, D unit rows: the teacher's descriptors
    of all training images) to the student's, both of cosines divided by ``temperature``; mean over the
    batch, 0 when every student row equals its teacher row."""
    target = F.log_softmax(teacher @ bank.T / temperature, dim=1)
    guess = F.log_softmax(student @ bank.T / temperature, dim=1)
    return F.kl_div(guess, target, log_target=True, reduction="batchmean")
