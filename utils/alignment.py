"""How the training faces were aligned, recorded beside the weights so photos are aligned the same way.

This is the one place that says how faces are aligned by default (``DEFAULT``): align_dataset.py,
the detector, facenet.py and the gallery take mode, size, margin, MTCNN's thresholds and the smallest
face from here. The weights' JSON may hold ``"alignment": {"mode": "crop" | "warp", "size": pixels,
"margin": pixels}`` (train.py writes it: five-point warps at 112 px for insightface's face packs, the
settings of align_dataset.py for a folder it aligned). Weights without it were trained the project's
way: MTCNN crops of 160 px with a margin of 32, as align_dataset.py writes by default.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from utils.config import UserError
from utils.image import ImageError

if TYPE_CHECKING:
    from utils.detect import Detections

MODES = ("crop", "warp")
SETTINGS_FILE = "align_settings.json"   # align_dataset.py's record of an aligned folder
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)   # face probability MTCNN's P-, R- and O-Net each require
DEFAULT_MIN_FACE = 20                  # smallest face searched for, in photo pixels
# A photo whose five landmarks lie within this share of its side of the warp template is a warp already.
WARP_TOLERANCE = 0.06
# A photo counts as a face crop like align_dataset.py's when its main face box (made square) spans
# this share of the shorter side, about (160 - 32) / 160 = 0.8, centred within
# TIGHT_CENTRE of the side, in a near-square photo. Measured on 150 LFW images each: aligned crops
# span 0.74-0.89 (centre within 0.042), raw LFW photos 0.40-0.65.
TIGHT_SIDE = (0.70, 0.95)
TIGHT_CENTRE = 0.08
TIGHT_ASPECT = 1.25


@dataclass(frozen=True)
class Alignment:
    """How a face is cut out of a photo: ``mode`` at ``size`` px with ``margin`` px around the face box
    (crop mode), found by MTCNN with these stage ``thresholds`` among faces of ``min_face_size`` px or more."""
    mode: str
    size: int
    margin: int = 0
    thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS
    min_face_size: float = DEFAULT_MIN_FACE

    def describe(self) -> str:
        """In words; the detector settings only where they differ from the default (gallery fingerprints)."""
        text = f"mtcnn five-point warp {self.size} px" if self.mode == "warp" else \
            f"mtcnn crop {self.size} px margin {self.margin}"
        if (tuple(self.thresholds), self.min_face_size) != (DEFAULT_THRESHOLDS, DEFAULT_MIN_FACE):
            text += f", thresholds {','.join(map(str, self.thresholds))}, faces from {self.min_face_size:g} px"
        return text


DEFAULT = Alignment("crop", 160, 32)
CROP_MARGIN_PER_PIXEL = DEFAULT.margin / DEFAULT.size   # the default margin's share of the side


def alignment_record(mode: str, size: int, margin: int | None = None) -> dict:
    """The JSON entry for faces aligned by ``mode`` at ``size`` px (crop margin: align_dataset's rule)."""
    if mode not in MODES:
        raise UserError(f"--alignment must be one of auto, none, {', '.join(MODES)}, not {mode!r}")
    if mode == "crop" and margin is None:
        margin = int(round(size * CROP_MARGIN_PER_PIXEL))
    return {"mode": mode, "size": int(size), **({"margin": int(margin)} if mode == "crop" else {})}


def detector_settings(entry: dict, where: str) -> dict:
    """MTCNN's ``thresholds`` and ``min_face_size`` as recorded in ``entry`` (DEFAULT's where absent)."""
    found = {"thresholds": tuple(entry.get("thresholds", DEFAULT.thresholds)),
             "min_face_size": entry.get("min_face_size", DEFAULT.min_face_size)}
    ok = len(found["thresholds"]) == 3 and all(isinstance(t, (int, float)) and 0 <= t <= 1
                                                 for t in found["thresholds"]) and \
        isinstance(found["min_face_size"], (int, float)) and found["min_face_size"] >= 10
    if not ok:
        raise UserError(f"{where}: thresholds must be three probabilities and min_face_size at least 10 "
                        f"pixels, not {entry.get('thresholds')!r} and {entry.get('min_face_size')!r}; "
                        "correct or delete them")
    return found


def alignment_of(info: dict, where: str) -> Alignment:
    """The alignment recorded in a weights JSON ``info`` (read from ``where``); DEFAULT when absent."""
    entry = info.get("alignment")
    if entry is None:
        return DEFAULT
    ok = isinstance(entry, dict) and entry.get("mode") in MODES and isinstance(entry.get("size"), int) and \
        16 <= entry["size"] <= 4096 and isinstance(entry.get("margin", 0), int) and \
        0 <= entry.get("margin", 0) < entry["size"]
    if not ok:
        raise UserError(f"{where}: alignment must be like {{\"mode\": \"warp\", \"size\": 112}}, not {entry!r}; "
                        "correct or delete it")
    return Alignment(entry["mode"], entry["size"], entry.get("margin", 0) if entry["mode"] == "crop" else 0,
                     **detector_settings(entry, where))


def folder_alignment(folder: str) -> Alignment | None:
    """The alignment align_dataset.py recorded for ``folder`` (its align_settings.json), or None."""
    path = os.path.join(folder, SETTINGS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            found = json.load(handle)
        return Alignment(found["mode"], int(found["image_size"]),
                         int(found.get("margin", 0)) if found["mode"] == "crop" else 0,
                         **detector_settings(found, path))
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return None


def mismatch_warning(trained: Alignment, data: Alignment | None, what: str) -> str | None:
    """A warning when ``what`` holds faces aligned by another mode than the weights were trained on."""
    if data is None or data.mode == trained.mode:
        return None
    return (f"warning: the weights were trained on {trained.describe()} faces but {what} holds "
            f"{data.describe()} faces; scores will be lower than the weights can give")


def is_warped(landmarks: np.ndarray, size: tuple[int, int]) -> bool:
    """True when the five ``landmarks`` of a square photo of ``size`` already sit on the warp template."""
    from utils.detect import ARCFACE_TEMPLATE
    width, height = size
    if width != height:
        return False
    target = (ARCFACE_TEMPLATE + 0.5) * (width / 112.0)
    return bool(np.abs(np.asarray(landmarks, np.float64) - target).max() <= WARP_TOLERANCE * width)


def is_face_crop(boxes: np.ndarray, index: int, size: tuple[int, int]) -> bool:
    """True when face ``index`` of ``boxes`` sits in a ``size`` = (width, height) picture the way
    align_dataset.py's crop mode puts it: centred and spanning about 0.8 of the side."""
    width, height = size
    if max(width, height) > TIGHT_ASPECT * min(width, height):
        return False
    x1, y1, x2, y2 = boxes[index].astype(np.float64)
    side = max(x2 - x1, y2 - y1) / min(width, height)
    off_x, off_y = abs((x1 + x2) / 2 - width / 2) / width, abs((y1 + y2) / 2 - height / 2) / height
    return bool(TIGHT_SIDE[0] <= side <= TIGHT_SIDE[1] and max(off_x, off_y) <= TIGHT_CENTRE)


def choose_face(rgb: Image.Image, found: Detections, align: str | bool, alignment: Alignment,
                name: str = "image") -> Image.Image:
    """The picture to embed for the decoded photo ``rgb`` whose faces are ``found``: with ``align`` "auto"
    the photo itself when it already is a face aligned as ``alignment`` says (a crop like align_dataset.py's
    for crop weights, a face on the five-point template for warp weights), else its main face aligned so.
    ImageError (one line naming ``name``) when no face is found."""
    from utils.detect import align_face, main_face

    index = main_face(found, rgb.size)
    if index is None:
        hint = "or give a face crop with --align False" if align == "auto" else \
            "or, for an already cropped face, --align False"
        raise ImageError(f"{name}: no face found; use a photo with a clearly visible face, {hint}")
    if align == "auto" and (is_warped(found.landmarks[index], rgb.size) if alignment.mode == "warp" else
                            is_face_crop(found.boxes, index, rgb.size)):
        return rgb
    return align_face(rgb, found, alignment.mode, alignment.size, alignment.margin, index=index)
