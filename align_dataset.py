"""Detect and align the main face of every image of a dataset, e.g. raw LFW to 160x160 crops.

    python align_dataset.py --input_dir raw_lfw --output_dir lfw --mode crop --image_size 160 --margin 32

Resumable: aligned images already in output_dir are kept, and images an earlier run could not use
(listed in output_dir/failures.csv) are not tried again unless --retry_failed True. Every image
ends up either aligned or listed in failures.csv with its reason. The settings that shape the
crops are recorded in output_dir/align_settings.json: a later run with other settings is refused
(crops of two sizes would mix) unless --redo True aligns every image again.
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
import csv
import io
import json
import multiprocessing
import os
import time
from typing import NamedTuple

import torch
from tqdm import tqdm

from utils.checkpoint import write_json, write_text_atomic
from utils.config import (INPUT_SIDES, Bool, Choice, Int, List, Number, OutputFolder, Text, UserError,
                          check_values, check_writable_folder, configure, print_settings, run_main,
                          settings_of)
from utils.detect import FaceDetector, align_file
from utils.image import list_images
from utils.runtime import available_cores, resolve_workers

_FAILURES = "failures.csv"
_SETTINGS = "align_settings.json"
# The settings that shape the output images: a folder holds crops of one kind only.
_RECORDED = ("input_dir", "mode", "image_size", "margin", "min_face_size", "thresholds", "no_face", "jpeg_quality")
# A spawned worker takes seconds to import torch and load its detector (about 100 images' worth of
# detection): with fewer images than that per worker, "auto" starts fewer of them.
IMAGES_PER_WORKER = 100
_detector = None
_options: dict = {}
# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "input_dir": Text(), "output_dir": OutputFolder(), "mode": Choice("crop", "warp"), "image_size": Int(*INPUT_SIDES),
    "margin": Int(0), "num_workers": Choice("auto") | Int(0), "min_face_size": Number(10, 10000),
    "thresholds": List(Number(0, 1), 3, "0.6,0.7,0.7"), "weights_dir": Text(), "device": Choice("cpu", "cuda"),
    "jpeg_quality": Int(1, 100), "retry_failed": Bool(), "no_face": Choice("skip", "centre"), "redo": Bool(),
}


class Summary(NamedTuple):
    """What a run of align_tree did."""
    images: int      # image files found in the input
    aligned: int     # aligned by this run
    kept: int        # aligned by an earlier run and left as they are
    failures: dict   # relative path -> reason, this run's and earlier ones


class AlignError(UserError):
    """Folders or settings that would overwrite the input or mix crops of different kinds."""


def read_failures(path: str) -> dict:
    """path -> reason from a failures.csv written by an earlier run (empty when there is none)."""
    if not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["path"]: row["reason"] for row in csv.DictReader(f) if row.get("path")}


def write_failures(path: str, failures: dict) -> None:
    """Write path,reason rows sorted by path, atomically."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "reason"])
    writer.writerows(sorted(failures.items()))
    write_text_atomic(path, text.getvalue())


def check_folders(input_dir: str, output_dir: str) -> None:
    """The output must be apart from the input: the same folder, one inside the other, would overwrite
    the input or read crops back as input."""
    if not os.path.isdir(input_dir):
        raise AlignError(f"--input_dir {input_dir}: input folder not found")
    source, target = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if source == target:
        raise AlignError(f"--output_dir {output_dir} is the input folder: aligned crops would replace the "
                         "photos; give another folder")
    if target.startswith(source + os.sep):
        raise AlignError(f"--output_dir {output_dir} is inside --input_dir {input_dir}: its crops would be read "
                         "as input by the next run; put it beside the input")
    if source.startswith(target + os.sep):
        raise AlignError(f"--output_dir {output_dir} contains --input_dir {input_dir}: crops would be written "
                         "among the photos; give a folder outside the input")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise AlignError(f"--output_dir {output_dir}: is a file, not a folder")
    check_writable_folder("output_dir", output_dir)


def record_settings(output_dir: str, recorded: dict, redo: bool) -> None:
    """Write the settings into ``output_dir``, refusing a folder filled with other settings unless ``redo``."""
    path = os.path.join(output_dir, _SETTINGS)
    if not redo and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                earlier = json.load(handle)
        except (OSError, ValueError):
            raise AlignError(f"{path}: unreadable; delete it and run with --redo True") from None
        changed = [k for k in _RECORDED if earlier.get(k) != recorded[k]]
        if changed:
            was = ", ".join(f"{k} {earlier.get(k)!r}" for k in changed)
            now = ", ".join(f"{k} {recorded[k]!r}" for k in changed)
            raise AlignError(f"{output_dir} holds crops made with {was}, not {now}; use another --output_dir, "
                             "or --redo True to align every image again")
    elif not redo and os.path.isdir(output_dir) and any(not n.startswith(".") for n in os.listdir(output_dir)):
        raise AlignError(f"--output_dir {output_dir} is not empty and has no {_SETTINGS} (not made by this "
                         "script, or by an older version); use an empty folder, or --redo True to align "
                         "every image into it")
    write_json(path, recorded)


def _start_worker(options: dict) -> None:
    """Set up one worker: a single thread and its own detector."""
    global _detector, _options
    torch.set_num_threads(1)
    _options = dict(options)
    _detector = FaceDetector(_options.pop("weights_dir"), _options.pop("device"),
                             _options.pop("min_face_size"), tuple(_options.pop("thresholds")))


def worker_count(num_workers: int | str, device: str, jobs: int) -> int:
    """The ``num_workers`` setting as a number of detector processes (1: this process) for ``jobs`` images.

    "auto" gives each CPU core a single-threaded detector process while the main process only collects
    results, so no more processes are busy than there are cores; on a GPU, this process drives it.
    """
    if num_workers != "auto":
        return resolve_workers(num_workers, cuda=False)
    if device.startswith("cuda"):
        return 1
    return max(1, min(available_cores(), jobs // IMAGES_PER_WORKER))


def _align(job: tuple[str, str, str]) -> tuple[str, str | None]:
    rel, src, dst = job
    try:
        return rel, align_file(_detector, src, dst, **_options)
    except Exception as err:  # keep a long run going; the image is listed with the reason
        return rel, f"{type(err).__name__}: {err}"


def align_tree(input_dir: str, output_dir: str, mode: str = "crop", image_size: int = 160, margin: int = 32,
               num_workers: int | str = "auto", min_face_size: float = 20,
               thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
               weights_dir: str = "model_data", device: str = "cpu", jpeg_quality: int = 95,
               retry_failed: bool = False, no_face: str = "skip", redo: bool = False) -> Summary:
    """Align every image under ``input_dir`` into ``output_dir`` (same relative names, .jpg).

    ``redo`` aligns every image again even where an output exists (and accepts a folder made with
    other settings); otherwise outputs are kept and a folder of other settings is refused.
    """
    check_folders(input_dir, output_dir)
    FaceDetector(weights_dir, "cpu", min_face_size)  # stop here, once, if the weights are missing
    recorded = dict(input_dir=os.path.realpath(input_dir), mode=mode, image_size=image_size, margin=margin,
                    min_face_size=min_face_size, thresholds=list(thresholds), no_face=no_face,
                    jpeg_quality=jpeg_quality)
    record_settings(output_dir, recorded, redo)
    images = list_images(input_dir)
    failures_path = os.path.join(output_dir, _FAILURES)
    earlier = {} if retry_failed or redo else read_failures(failures_path)
    failures, jobs, owner, kept = {}, [], {}, 0
    for rel in images:
        out_rel = os.path.splitext(rel)[0] + ".jpg"
        dst = os.path.join(output_dir, out_rel)
        if out_rel in owner:
            failures[rel] = f"same output name {out_rel} as {owner[out_rel]}"
        elif rel in earlier:
            failures[rel] = earlier[rel]
        elif os.path.isfile(dst) and not redo:
            kept += 1
        else:
            jobs.append((rel, os.path.join(input_dir, rel), dst))
        owner.setdefault(out_rel, rel)
    options = dict(weights_dir=weights_dir, device=device, min_face_size=min_face_size, thresholds=thresholds,
                   mode=mode, image_size=image_size, margin=margin, quality=jpeg_quality, no_face=no_face)
    aligned, pool, threads = 0, None, torch.get_num_threads()
    workers = worker_count(num_workers, device, len(jobs))
    try:
        if workers <= 1:
            _start_worker(options)
            results = map(_align, jobs)
        else:
            print(f"aligning {len(jobs)} images in {workers} processes")
            pool = multiprocessing.get_context("spawn").Pool(workers, _start_worker, (options,))
            results = pool.imap_unordered(_align, jobs, chunksize=8)
        for rel, reason in tqdm(results, total=len(jobs), desc="aligning", unit="img", disable=not jobs):
            if reason is None:
                aligned += 1
            else:
                failures[rel] = reason
    finally:
        if pool is not None:
            pool.terminate()
        torch.set_num_threads(threads)
        write_failures(failures_path, failures)
    return Summary(len(images), aligned, kept, failures)



def check_settings() -> None:
    """Every setting checked before any work; a bad one is a UserError naming it."""
    check_values(settings_of(globals()), RULES)
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
          f"from before), {len(summary.failures)} failed, listed in {os.path.join(output_dir, _FAILURES)}; "
          f"{seconds:.0f} s" + (f", {1000 * seconds / worked:.1f} ms per image" if worked else ""))


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()),
             interrupted="interrupted: the images done so far are kept; run again to go on")
