"""Detect and align the main face of every image of a dataset, e.g. raw LFW to 160x160 crops.

    python align_dataset.py --input_dir raw_lfw --output_dir lfw --no_face centre   # LFW for eval_LFW.py

Resumable: aligned images already in output_dir are kept, and images an earlier run could not use
(listed in output_dir/failures.csv) are not tried again unless --retry_failed True. Every image
ends up either aligned or listed in failures.csv with its reason. The settings that shape the
crops are recorded in output_dir/align_settings.json: a later run with other settings is refused
(crops of two sizes would mix) unless --redo True aligns every image again. One change needs no
redo: --retry_failed True --no_face centre on a folder aligned with skip adds centre crops for the
listed failures and keeps the rest. The default spec (crop, 160 px, margin 32, MTCNN thresholds and
smallest face) is utils/alignment.py's DEFAULT.
"""
#------- settings (edit here or override as --name value) -------
input_dir = "datasets/raw"        # a folder of person folders, or a flat folder of images
output_dir = "datasets/aligned"   # gets the same tree of aligned .jpg faces and failures.csv
mode = "crop"                     # "crop": square face box plus margin; "warp": 5-point ArcFace alignment
image_size = 160                  # side of the aligned images in pixels
margin = 32                       # crop mode: output pixels around the face box (margin / 2 on each side)
num_workers = "auto"              # processes with one thread and one detector each; 1: in this process;
                                  # auto: one per CPU core for large jobs, 1 on a GPU or for small ones
min_face_size = 20                # smallest face searched for, in input pixels
thresholds = [0.6, 0.7, 0.7]      # face probability that P-Net, R-Net and O-Net each require
weights_dir = "model_data"        # folder holding MTCNN's pnet.pt, rnet.pt and onet.pt
device = "cpu"                    # "cpu" or "cuda"
jpeg_quality = 95
retry_failed = False              # True: try again the images an earlier run listed in failures.csv
no_face = "skip"                  # no face found: "skip" the image, or write a "centre" crop (listed all the same)
redo = False                      # True: align every image again, e.g. after changing mode or image_size
#------------------------------------------------------------------
import os
import time

import torch

from utils.align_folder import FAILURES_FILE, align_tree, check_folders
from utils.alignment import MODES
from utils.config import (INPUT_SIDES, Bool, Choice, Int, List, Number, OutputFolder, Text, UserError,
                          configure, print_settings, run_main, settings_of)

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "input_dir": Text(), "output_dir": OutputFolder(), "mode": Choice(*MODES), "image_size": Int(*INPUT_SIDES),
    "margin": Int(0), "num_workers": Choice("auto") | Int(0), "min_face_size": Number(10, 10000),
    "thresholds": List(Number(0, 1), 3, "0.6,0.7,0.7"), "weights_dir": Text(), "device": Choice("cpu", "cuda"),
    "jpeg_quality": Int(1, 100), "retry_failed": Bool(), "no_face": Choice("skip", "centre"), "redo": Bool(),
}


def check_settings() -> None:
    """The checks that RULES (applied by configure) cannot make: settings that must agree, the GPU, the folders."""
    if margin >= image_size:
        raise UserError(f"--margin must be below --image_size ({image_size}), not {margin}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no GPU is available here; use --device cpu")
    check_folders(input_dir, output_dir)


def main() -> None:
    check_settings()
    print_settings(settings_of(globals()))
    start = time.perf_counter()
    summary = align_tree(input_dir, output_dir, mode, image_size, margin, num_workers, min_face_size,
                         thresholds, weights_dir, device, jpeg_quality, retry_failed, no_face, redo)
    seconds = time.perf_counter() - start
    done = summary.images - len(summary.failures)
    rate = 100.0 * done / max(summary.images, 1)
    worked = summary.images - summary.kept
    print(f"{summary.images} images: {done} aligned ({rate:.2f}%; {summary.aligned} now, {summary.kept} kept "
          f"from before), {len(summary.failures)} failed, listed in {os.path.join(output_dir, FAILURES_FILE)}; "
          f"{seconds:.0f} s" + (f", {1000 * seconds / worked:.1f} ms per image" if worked else ""))


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()),
             interrupted="interrupted: the images done so far are kept; run again to go on")
