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

from facenet import Facenet, is_face_crop
from utils.config import check_int, configure, run_main
from utils.detect import main_face
from utils.image import open_rgb
from utils.lfw import load_pairs


def verdicts(model: Facenet, paths: list[str], left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, float]:
    """Same-person verdicts of the pairs (left[i], right[i]) and the seconds it took."""
    start = time.perf_counter()
    embeddings = np.concatenate([model.embed(paths[i:i + 32]) for i in range(0, len(paths), 32)])
    distances = np.linalg.norm(embeddings[left] - embeddings[right], axis=1)
    return distances < model.threshold, time.perf_counter() - start


def crops_kept(model: Facenet, paths: list[str]) -> int:
    """How many of ``paths`` the automatic mode takes as face crops (used as they are)."""
    kept = 0
    for path in paths:
        image = open_rgb(path)
        found = model.detector.detect(image)
        index = main_face(found, image.size)
        kept += index is not None and is_face_crop(found.boxes, index, image.size)
    return kept


def compare(folder: str, other: bool, label: str) -> None:
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
    auto_verdicts, auto_seconds = verdicts(auto, paths, left, right)
    fixed_verdicts, fixed_seconds = verdicts(fixed, paths, left, right)
    kept = crops_kept(auto, paths)
    print(f"{label}: {len(chosen)} pairs ({int(issame.sum())} same), {len(paths)} images of {folder}")
    print(f"  automatic alignment took {kept} of {len(paths)} images as face crops")
    print(f"  verdicts equal to --align {other}: {int((auto_verdicts == fixed_verdicts).sum())} of {len(chosen)}")
    print(f"  accuracy: auto {np.mean(auto_verdicts == issame):.3f}, --align {other} "
          f"{np.mean(fixed_verdicts == issame):.3f}; {auto_seconds:.1f} s and {fixed_seconds:.1f} s")


def main() -> None:
    check_int("pairs", pairs, 1, 1800)
    torch.set_num_threads(1)
    compare(raw_dir, True, "raw photos")
    compare(aligned_dir, False, "aligned crops")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
