"""Who is this? The identify and dir modes of predict.py: every face of a photo against a gallery.

Each face MTCNN finds is cropped as the gallery faces are (crop mode, 160 px, margin 32, then the
network input), all faces of a photo are embedded in one pass, and each gets the nearest gallery
person, or ``unknown`` when that person is farther than the threshold. That threshold is chosen for
the gallery at hand so that at most ``max_stranger_rate`` of strangers get a name (utils/open_set.py),
unless --threshold is given.
"""
from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from facenet import ALIGNED_KEY, Facenet, facenet_kwargs, is_interactive_backend
from utils import gallery as galleries
from utils import open_set
from utils.checkpoint import CheckpointError, read_weights_info, save_figure, weights_info_path, write_text_atomic
from utils.config import UserError, check_number, check_output_file, print_settings
from utils.detect import align_face
from utils.image import ImageError, list_images, open_rgb

UNKNOWN, NO_FACE, UNREADABLE = "unknown", "no face", "unreadable"
CSV_COLUMNS = ("file", "face", "left", "top", "right", "bottom", "name", "distance", "nearest", "note")
MODES = ("verify", "identify", "dir")


@dataclass
class FaceMatch:
    """One face of a photo: its box (left, top, right, bottom in pixels), the name given to it
    (a gallery person or ``unknown``), the nearest gallery person and the distance to them."""

    box: tuple[int, int, int, int]
    name: str
    nearest: str
    distance: float


def identify_faces(model: Facenet, search: galleries.PersonSearch, image: Image.Image) -> list[FaceMatch]:
    """Every face MTCNN finds in the RGB ``image``, left to right, matched against ``search``."""
    detections = model.detector.detect(image)
    order = sorted(range(len(detections.boxes)), key=lambda i: detections.boxes[i][0])
    if not order:
        return []
    faces, alignment = [], model.alignment
    for index in order:
        face = align_face(image, detections, alignment.mode, alignment.size, alignment.margin, index=index)
        face.info[ALIGNED_KEY] = True
        faces.append(face)
    people, distances = search.nearest(model.embed(faces))
    width, height = image.size
    matches = []
    for index, person, distance in zip(order, people, distances):
        x1, y1, x2, y2 = detections.boxes[index]
        box = (int(round(max(0.0, x1))), int(round(max(0.0, y1))),
               int(round(min(width, x2))), int(round(min(height, y2))))
        nearest = search.people[person]
        matches.append(FaceMatch(box, nearest if distance < model.threshold else UNKNOWN, nearest, float(distance)))
    return matches


def describe(number: int, match: FaceMatch) -> str:
    """One printed line per face."""
    box = ",".join(map(str, match.box))
    if match.name == UNKNOWN:
        return f"  face {number}: box {box} -> unknown (nearest {match.nearest}, distance {match.distance:.3f})"
    return f"  face {number}: box {box} -> {match.name} (distance {match.distance:.3f})"


def show(image: Image.Image, matches: list[FaceMatch], threshold: float, figure_path: str) -> None:
    """Draw the photo with a box and a name per face; shown on a display, else saved to ``figure_path``."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    width, height = image.size
    figure, axis = plt.subplots(figsize=(7, 7 * height / max(width, 1) + 0.5))
    axis.imshow(np.asarray(image))
    for match in matches:
        left, top, right, bottom = match.box
        colour = "tab:red" if match.name == UNKNOWN else "lime"
        axis.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor=colour, lw=2))
        axis.text(left, top - 3, f"{match.name} {match.distance:.2f}", color="black", fontsize=9,
                  va="bottom", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    axis.set_title(f"{len(matches)} face(s); unknown above distance {threshold:.3f}")
    axis.axis("off")
    figure.tight_layout()
    if is_interactive_backend():
        plt.show()
    else:
        save_figure(figure, figure_path)
        print(f"figure saved to {figure_path}")
    plt.close(figure)


def identify_photo(model: Facenet, search: galleries.PersonSearch, path: str) -> list[FaceMatch]:
    """Identify mode on one photo: print every face and, with ``figure``, draw them. ImageError when the photo
    cannot be read or shows no face."""
    image = open_rgb(path)
    matches = identify_faces(model, search, image)
    if not matches:
        raise ImageError(f"{path}: no face found; use a photo with a clearly visible face")
    print(f"{path}: {len(matches)} face(s), unknown above distance {model.threshold:.3f}")
    for number, match in enumerate(matches, start=1):
        print(describe(number, match))
    if model.figure:
        show(image, matches, model.threshold, model.figure_path)
    return matches


def csv_rows(file: str, matches: list[FaceMatch] | None, note: str = "") -> list[list[str]]:
    """The CSV rows of one photo: one per face; one with an empty box for no face (``matches`` empty)
    or an unreadable file (``matches`` None, ``note`` says why)."""
    if not matches:
        return [[file, "", "", "", "", "", UNREADABLE if matches is None else NO_FACE, "", "", note]]
    return [[file, str(number), *map(str, m.box), m.name, f"{m.distance:.4f}", m.nearest, note]
            for number, m in enumerate(matches, start=1)]


def identify_folder(model: Facenet, search: galleries.PersonSearch, dir_path: str, csv_path: str,
                    progress: bool = True) -> dict[str, int]:
    """Dir mode: identify every photo under ``dir_path`` and write the CSV atomically; returns counts."""
    if not os.path.isdir(dir_path):
        raise ImageError(f"{dir_path}: no such folder of photos; set --dir_path")
    photos = list_images(dir_path)
    if not photos:
        raise ImageError(f"{dir_path}: no image files in it; set --dir_path to a folder of photos")
    rows = []
    counts = {"photos": len(photos), "faces": 0, "named": 0, "unknown": 0, "no face": 0, "unreadable": 0}
    # disable=None: a progress bar on a terminal only, none in pipes and logs.
    for photo in tqdm(photos, unit="photo", desc="identify", disable=None if progress else True):
        try:
            matches = identify_faces(model, search, open_rgb(os.path.join(dir_path, photo)))
        except ImageError as err:
            rows += csv_rows(photo, None, galleries.reason_of(err, os.path.join(dir_path, photo)))
            counts["unreadable"] += 1
            continue
        rows += csv_rows(photo, matches)
        counts["no face"] += not matches
        counts["faces"] += len(matches)
        counts["unknown"] += sum(m.name == UNKNOWN for m in matches)
    counts["named"] = counts["faces"] - counts["unknown"]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    write_text_atomic(csv_path, text.getvalue())
    return counts


def open_gallery(model: Facenet, gallery_dir: str, gallery_path: str) -> galleries.Gallery:
    """Update the gallery file from its folder, print what changed and what was skipped, return it."""
    gallery, report = galleries.update(model, gallery_dir, gallery_path)
    if report.moved_from:
        print(f"note: {gallery_path} was built from {report.moved_from}; rebuilt for {gallery_dir}")
    for path, reason in report.skipped.items():
        print(f"  skipped {os.path.join(gallery_dir, path)}: {reason}")
    print(f"gallery: {len(gallery.paths)} images of {len(gallery.people)} people from {gallery_dir} "
          f"({report.added} new, {report.changed} changed, {report.removed} removed, {report.kept} unchanged, "
          f"{len(report.skipped)} skipped){', saved to ' + gallery_path if report.saved else ''}")
    return gallery


def set_gallery_threshold(model: Facenet, gallery: galleries.Gallery, max_stranger_rate: float, given: bool) -> None:
    """Set ``model.threshold`` for naming people of ``gallery`` with at most ``max_stranger_rate`` of
    strangers named (utils.open_set, from the weights' impostor table in their JSON and the gallery
    itself) and print it and why; a threshold the user gave is kept."""
    if given:
        print(f"threshold {model.threshold:.3f} (--threshold); --max_stranger_rate not used")
        return
    table = read_weights_info(model.weights).get(open_set.TABLE_KEY)
    try:
        table = None if table is None else open_set.check_table(table)
    except ValueError as err:
        raise CheckpointError(f"{weights_info_path(model.weights)}: {err}; run eval_LFW.py again, "
                              "or delete the key") from None
    choice = open_set.choose_threshold(gallery.embeddings, np.array(gallery.names), galleries.DEFAULT_RULE,
                                       max_stranger_rate, table, model.threshold)
    model.threshold = choice.threshold
    print(choice.reason)


def ask(prompt: str, resolve: Callable[[str], str]) -> str:
    """Prompt until a non-empty answer; EOFError and KeyboardInterrupt pass through."""
    while True:
        text = input(prompt)
        if text.strip():
            return resolve(text)
        print("error: type an image file name (Ctrl-D or Ctrl-C to quit)", file=sys.stderr)


def run(mode: str, paths: list[str], settings: dict, resolve: Callable[[str], str]) -> None:
    """predict.py's identify and dir modes; ``resolve`` turns what a user typed into a path.
    Every problem the user can fix is a UserError (one ``error:`` line and exit status 2 by run_main)."""
    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "identify" and len(paths) > 1:
        raise UserError("identify takes one photo (or none, to be asked for photos)")
    if mode == "dir" and paths:
        raise UserError("dir mode takes no photo: set --dir_path to the folder of photos and --csv_path for the table")
    check_output_file("gallery_path", settings["gallery_path"], (".npz",))
    if mode == "dir":
        check_output_file("csv_path", settings["csv_path"], (".csv",))
    print_settings({key: settings[key] for key in ("mode", "gallery_dir", "gallery_path", "max_stranger_rate")
                    + (("dir_path", "csv_path") if mode == "dir" else ())})
    rate = check_number("max_stranger_rate", settings["max_stranger_rate"], 0, 0.5, low_open=True)
    model = Facenet(**{**facenet_kwargs(settings), "align": True}, verbose=True)
    gallery = open_gallery(model, settings["gallery_dir"], settings["gallery_path"])
    set_gallery_threshold(model, gallery, rate, settings["threshold"] is not None)
    search = gallery.search()
    if mode == "dir":
        counts = identify_folder(model, search, settings["dir_path"], settings["csv_path"])
        print(f"{settings['csv_path']}: {counts['photos']} photos, {counts['faces']} faces ({counts['named']} "
              f"named, {counts['unknown']} unknown), {counts['no face']} without a face, "
              f"{counts['unreadable']} unreadable")
        return
    if paths:
        identify_photo(model, search, resolve(paths[0]))
        return
    try:
        while True:
            try:
                identify_photo(model, search, ask("Input image filename:", resolve))
            except ImageError as err:
                print(f"error: {err}", file=sys.stderr)
    except (EOFError, KeyboardInterrupt):
        print()
