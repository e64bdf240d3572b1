"""Aligning a whole folder tree of photos with MTCNN, resumably: align_dataset.py's work.

Every image under the input ends up either aligned (same relative name, .jpg) or listed with its
reason in the output's failures.csv; the settings that shape the crops are recorded in its
align_settings.json so that crops of two kinds never mix. Large jobs run in spawned processes, each
with one thread and its own detector.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
from typing import NamedTuple

import torch
from tqdm import tqdm

from utils.alignment import DEFAULT, SETTINGS_FILE
from utils.checkpoint import write_json, write_text_atomic
from utils.config import UserError, check_writable_folder
from utils.detect import FaceDetector, align_file
from utils.image import list_images
from utils.runtime import available_cores, resolve_workers

FAILURES_FILE = "failures.csv"
# The settings that shape the output images: a folder holds crops of one kind only.
_RECORDED = ("input_dir", "mode", "image_size", "margin", "min_face_size", "thresholds", "no_face", "jpeg_quality")
# A spawned worker takes seconds to import torch and load its detector (about 100 images' worth of
# detection): with fewer images than that per worker, "auto" starts fewer of them.
IMAGES_PER_WORKER = 100
_detector = None
_options: dict = {}


class Summary(NamedTuple):
    """What a run of align_tree did."""
    images: int      # image files found in the input
    aligned: int     # aligned by this run
    kept: int        # aligned by an earlier run and left as they are
    failures: dict   # relative path -> reason, this run's and earlier ones



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
        raise UserError(f"--input_dir {input_dir}: input folder not found")
    source, target = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if source == target:
        raise UserError(f"--output_dir {output_dir} is the input folder: aligned crops would replace the "
                         "photos; give another folder")
    if target.startswith(source + os.sep):
        raise UserError(f"--output_dir {output_dir} is inside --input_dir {input_dir}: its crops would be read "
                         "as input by the next run; put it beside the input")
    if source.startswith(target + os.sep):
        raise UserError(f"--output_dir {output_dir} contains --input_dir {input_dir}: crops would be written "
                         "among the photos; give a folder outside the input")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"--output_dir {output_dir}: is a file, not a folder")
    check_writable_folder("output_dir", output_dir)


def record_settings(output_dir: str, recorded: dict, redo: bool, retry_failed: bool = False) -> None:
    """Write the settings into ``output_dir``, refusing a folder filled with other settings unless ``redo``.

    One change is allowed without ``redo``: ``retry_failed`` with ``no_face`` centre on a folder made with
    skip; only the listed failures are aligned again, so the folder becomes what a centre run gives.
    """
    path = os.path.join(output_dir, SETTINGS_FILE)
    if not redo and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                earlier = json.load(handle)
        except (OSError, ValueError):
            raise UserError(f"{path}: unreadable; delete it and run with --redo True") from None
        changed = [k for k in _RECORDED if earlier.get(k) != recorded[k]]
        centre_retry = changed == ["no_face"] and (earlier.get("no_face"), recorded["no_face"]) == ("skip", "centre")
        if changed and not (centre_retry and retry_failed):
            was = ", ".join(f"{k} {earlier.get(k)!r}" for k in changed)
            now = ", ".join(f"{k} {recorded[k]!r}" for k in changed)
            hint = (" or --retry_failed True to add centre crops for the images listed in failures.csv, keeping "
                    "the rest," if centre_retry else "")
            raise UserError(f"{output_dir} holds crops made with {was}, not {now}; use another --output_dir,"
                             f"{hint} or --redo True to align every image again")
        history = list(earlier.get("history", []))
        if centre_retry:
            history.append("aligned with no_face skip; the failures then retried with no_face centre")
        recorded = {**recorded, **({"history": history} if history else {})}
    elif not redo and os.path.isdir(output_dir) and any(not n.startswith(".") for n in os.listdir(output_dir)):
        raise UserError(f"--output_dir {output_dir} is not empty and has no {SETTINGS_FILE} (not made by this "
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


def align_tree(input_dir: str, output_dir: str, mode: str = DEFAULT.mode, image_size: int = DEFAULT.size,
               margin: int = DEFAULT.margin, num_workers: int | str = "auto",
               min_face_size: float = DEFAULT.min_face_size,
               thresholds: tuple[float, float, float] = DEFAULT.thresholds,
               weights_dir: str = "model_data", device: str = "cpu", jpeg_quality: int = 95,
               retry_failed: bool = False, no_face: str = "skip", redo: bool = False) -> Summary:
    """Align every image under ``input_dir`` into ``output_dir`` (same relative names, .jpg).

    ``redo`` aligns every image again even where an output exists (and accepts a folder made with
    other settings); otherwise outputs are kept and a folder of other settings is refused.
    ``retry_failed`` aligns the images listed in failures.csv again (with ``no_face`` centre, also in a
    folder made with skip) and keeps the rest.
    """
    check_folders(input_dir, output_dir)
    FaceDetector(weights_dir, "cpu", min_face_size)  # stop here, once, if the weights are missing
    recorded = dict(input_dir=os.path.realpath(input_dir), mode=mode, image_size=image_size, margin=margin,
                    min_face_size=min_face_size, thresholds=list(thresholds), no_face=no_face,
                    jpeg_quality=jpeg_quality)
    record_settings(output_dir, recorded, redo, retry_failed)
    images = list_images(input_dir)
    failures_path = os.path.join(output_dir, FAILURES_FILE)
    earlier = {} if retry_failed or redo else read_failures(failures_path)
    jobs, failures, kept = plan(images, input_dir, output_dir, earlier, redo)
    options = dict(weights_dir=weights_dir, device=device, min_face_size=min_face_size, thresholds=thresholds,
                   mode=mode, image_size=image_size, margin=margin, quality=jpeg_quality, no_face=no_face)
    try:
        aligned = run_jobs(jobs, options, worker_count(num_workers, device, len(jobs)), failures)
    finally:
        write_failures(failures_path, failures)
    return Summary(len(images), aligned, kept, failures)


def plan(images: list[str], input_dir: str, output_dir: str, earlier: dict,
         redo: bool) -> tuple[list[tuple[str, str, str]], dict, int]:
    """The (rel, src, dst) jobs still to do, the failures known without trying (name clashes, the
    ``earlier`` ones not retried) and how many outputs are kept."""
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
    return jobs, failures, kept


def run_jobs(jobs: list[tuple[str, str, str]], options: dict, workers: int, failures: dict) -> int:
    """Align ``jobs`` in ``workers`` processes (1: here), adding each failure to ``failures`` as it comes
    (so an interrupted run still lists them); returns how many were aligned."""
    aligned, pool, threads = 0, None, torch.get_num_threads()
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
    return aligned
