"""Who is this? Every face of a photo matched against a gallery, and a folder of photos to one CSV.

Each face MTCNN finds is aligned as the gallery faces are (the model's ``choose`` on that face alone),
all faces of a photo are embedded in one pass, and each gets the nearest gallery person, or
``unknown`` when that person is farther than the model's threshold. predict.py's identify and dir
modes print and draw these answers; utils/video.py uses them frame by frame.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils import gallery as galleries
from utils.checkpoint import write_text_atomic
from utils.image import ImageError, list_images, open_rgb

if TYPE_CHECKING:  # utils.detect imports torchvision: not at the start of predict.py's verify mode
    from utils.detect import Detections

UNKNOWN, NO_FACE, UNREADABLE = "unknown", "no face", "unreadable"
CSV_COLUMNS = ("file", "face", "left", "top", "right", "bottom", "name", "distance", "nearest", "note")


class FaceModel(Protocol):
    """What identification needs of a model (``facenet.Facenet`` with ``align=True`` is one)."""

    threshold: float
    detector: Any  # .detect(image) -> Detections

    def choose(self, rgb: Image.Image, found: Detections, name: str = "image") -> Image.Image:
        """The main face of ``found`` in ``rgb``, aligned for ``embed``."""

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised embeddings (N, D) of faces given by ``choose``."""


@dataclass
class FaceMatch:
    """One face of a photo: its box (left, top, right, bottom in pixels), the name given to it
    (a gallery person or ``unknown``), the nearest gallery person and the distance to them."""

    box: tuple[int, int, int, int]
    name: str
    nearest: str
    distance: float


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``identify_folder``, after the CSV of the photos already done was written."""

    def __init__(self, done: int, counts: dict[str, int]) -> None:
        super().__init__(f"{done} of {counts['photos']} photos done")
        self.done, self.counts = done, counts


def identify_faces(model: FaceModel, search: galleries.PersonSearch, image: Image.Image) -> list[FaceMatch]:
    """Every face MTCNN finds in the RGB ``image``, left to right, matched against ``search``."""
    found = model.detector.detect(image)
    order = sorted(range(len(found.boxes)), key=lambda i: found.boxes[i][0])
    if not order:
        return []
    # Each face alone (the Detections rows of face i), so that ``choose`` aligns that face.
    faces = [model.choose(image, type(found)(*(part[i:i + 1] for part in found))) for i in order]
    people, distances = search.nearest(model.embed(faces))
    width, height = image.size
    matches = []
    for index, person, distance in zip(order, people, distances):
        x1, y1, x2, y2 = found.boxes[index]
        box = (int(round(max(0.0, x1))), int(round(max(0.0, y1))),
               int(round(min(width, x2))), int(round(min(height, y2))))
        nearest = search.people[person]
        matches.append(FaceMatch(box, nearest if distance < model.threshold else UNKNOWN, nearest, float(distance)))
    return matches


def csv_rows(file: str, matches: list[FaceMatch] | None, note: str = "") -> list[list[str]]:
    """The CSV rows of one photo: one per face; one with an empty box for no face (``matches`` empty)
    or an unreadable file (``matches`` None, ``note`` says why)."""
    if not matches:
        return [[file, "", "", "", "", "", UNREADABLE if matches is None else NO_FACE, "", "", note]]
    return [[file, str(number), *map(str, m.box), m.name, f"{m.distance:.4f}", m.nearest, note]
            for number, m in enumerate(matches, start=1)]


def write_csv(path: str, rows: list[list[str]]) -> None:
    """The table with its header, atomically."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def photo_rows(model: FaceModel, search: galleries.PersonSearch, dir_path: str, photo: str,
               counts: dict[str, int]) -> list[list[str]]:
    """The CSV rows of one photo of the folder, counted into ``counts``."""
    path = os.path.join(dir_path, photo)
    try:
        matches = identify_faces(model, search, open_rgb(path))
    except ImageError as err:
        counts["unreadable"] += 1
        return csv_rows(photo, None, galleries.reason_of(err, path))
    unknown = sum(m.name == UNKNOWN for m in matches)
    counts["no face"] += not matches
    counts["faces"] += len(matches)
    counts["unknown"] += unknown
    counts["named"] += len(matches) - unknown
    return csv_rows(photo, matches)


def identify_folder(model: FaceModel, search: galleries.PersonSearch, dir_path: str, csv_path: str,
                    progress: bool = True) -> dict[str, int]:
    """Identify every photo under ``dir_path`` and write the CSV atomically; returns counts. On Ctrl-C the
    CSV of the photos done so far is written, then ``Interrupted`` is raised."""
    if not os.path.isdir(dir_path):
        raise ImageError(f"{dir_path}: no such folder of photos; set --dir_path")
    photos = list_images(dir_path)
    if not photos:
        raise ImageError(f"{dir_path}: no image files in it; set --dir_path to a folder of photos")
    rows: list[list[str]] = []
    counts = {"photos": len(photos), "faces": 0, "named": 0, "unknown": 0, "no face": 0, "unreadable": 0}
    done = 0
    try:
        # disable=None: a progress bar on a terminal only, none in pipes and logs.
        for photo in tqdm(photos, unit="photo", desc="identify", disable=None if progress else True):
            rows += photo_rows(model, search, dir_path, photo, counts)
            done += 1
    except KeyboardInterrupt:
        write_csv(csv_path, rows)
        raise Interrupted(done, counts) from None
    write_csv(csv_path, rows)
    return counts
