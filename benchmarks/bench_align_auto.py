"""How often predict.py's automatic alignment decides as the explicit settings would, on LFW.

    python benchmarks/bench_align_auto.py --raw_dir RAW_LFW --aligned_dir lfw [--pairs 300]

Takes ``pairs`` official pairs of LFW sets 8-10 (every k-th, same and different people alike) and
compares the verdicts (same person or not) of ``align "auto"`` with ``align True`` on the raw
photos and with ``align False`` on align_dataset.py's crops, using the shipped weights.
"""
#------- settings (edit here or override as --name value) -------
raw_dir = "lfw_raw"                         # raw LFW: <name>/<name>_0001.jpg ... (e.g. lfw-deepfunneled)
aligned_dir = "lfw"                         # the same images aligned by align_dataset.py (crop, 160, margin 32)
pairs_path = "model_data/lfw_pair.txt"
model_path = "model_data/facenet_mobilenet.pth"
pairs = 300                                 # how many pairs of sets 8-10 to use
#------------------------------------------------------------------
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from facenet import Facenet
from utils.alignment import is_face_crop
from utils.config import check_int, configure, run_main
from utils.detect import main_face
from utils.image import ImageError, open_rgb
from utils.lfw import load_pairs


def faces(auto: Facenet, fixed: Facenet, paths: list[str]) -> tuple[list, list, int, set]:
    """The pictures each setting embeds for ``paths`` (one detection per image serves both), how many
    images the automatic setting took as face crops, and the images it refused (no face found)."""
    chosen_auto, chosen_fixed, kept, refused = [], [], 0, set()
    for i, path in enumerate(paths):
        image = open_rgb(path)
        found = auto.detector.detect(image)
        index = main_face(found, image.size)
        kept += index is not None and is_face_crop(found.boxes, index, image.size)
        fixed_image = fixed.choose(image.copy(), found, path) if fixed.align else image.copy()
        try:
            chosen_auto.append(auto.choose(image, found, path))
        except ImageError:
            refused.add(i)
            chosen_auto.append(fixed_image)
        chosen_fixed.append(fixed_image)
    return chosen_auto, chosen_fixed, kept, refused


def verdicts(model: Facenet, images: list, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Same-person verdicts of the pairs (left[i], right[i])."""
    embeddings = np.concatenate([model.embed(images[i:i + 32]) for i in range(0, len(images), 32)])
    return np.linalg.norm(embeddings[left] - embeddings[right], axis=1) < model.threshold


def compare(folder: str, other: bool, label: str) -> None:
    start = time.perf_counter()
    found = load_pairs(pairs_path, folder, folds=[8, 9, 10])
    step = max(1, len(found.left) // pairs)
    chosen = np.arange(0, len(found.left), step)[:pairs]
    used = sorted(set(found.left[chosen]) | set(found.right[chosen]))
    remap = {old: new for new, old in enumerate(used)}
    paths = [found.paths[i] for i in used]
    left = np.array([remap[i] for i in found.left[chosen]])
    right = np.array([remap[i] for i in found.right[chosen]])
    issame = found.issame[chosen]
    auto = Facenet(model_path=model_path, cuda=False, align="auto")
    fixed = Facenet(model_path=model_path, cuda=False, align=other)
    auto_images, fixed_images, kept, refused = faces(auto, fixed, paths)
    same_pictures = sum(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(auto_images, fixed_images))
    auto_verdicts = verdicts(auto, auto_images, left, right)
    fixed_verdicts = verdicts(fixed, fixed_images, left, right)
    errors = np.array([a in refused or b in refused for a, b in zip(left, right)])
    print(f"{label}: {len(chosen)} pairs ({int(issame.sum())} same) of sets 8-10, {len(paths)} images of {folder}")
    print(f"  automatic alignment took {kept} of {len(paths)} images as face crops; "
          f"{same_pictures - len(refused)} pictures identical to --align {other}; {len(refused)} refused (no face)")
    agree = (auto_verdicts == fixed_verdicts) & ~errors
    print(f"  verdicts equal to --align {other}: {int(agree.sum())} of {len(chosen)} "
          f"({int(errors.sum())} pairs an error with auto)")
    print(f"  accuracy: auto {np.mean(auto_verdicts == issame):.3f}, --align {other} "
          f"{np.mean(fixed_verdicts == issame):.3f}; {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    check_int("pairs", pairs, 1, 1800)
    torch.set_num_threads(1)
    compare(raw_dir, True, "raw photos")
    compare(aligned_dir, False, "aligned crops")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
