"""Loading speed from a RecordIO face pack against the folder of the same JPEGs.

    python benchmarks/bench_recordio.py --datasets_path ../shared/data/celeba_subset --images 5000
    python benchmarks/bench_recordio.py --datasets_path faces --train_steps 20 --num_workers 2

The folder is annotated and packed (txt_annotation.py --rec_path, the files' bytes as they are) into a
temporary directory, then three figures are taken per layout, alternating folder and pack ``rounds``
times (the best round counts, so both are read from the page cache alike):
  read + decode   every image read and decoded in this process (open_rgb vs the record's bytes)
  loader          train.py's loader alone (triplet batches, resize, flip) over ``loader_batches`` batches
  training        loader + MobileNet training steps (train_one_epoch) over ``train_steps`` batches
A pack should be no slower than the folder: one open file, no directory walk, no per-image open.
"""
#------- settings (edit here or override as --name value) -------
datasets_path = "tests/fixtures/faces"  # a folder of people: <person>/<image>
images = 5000                           # at most this many images (whole people, in sorted order)
input_shape = [112, 112, 3]
batch_size = 96
num_workers = "auto"                    # loader processes, as train.py's num_workers
loader_batches = 20                     # batches timed for the loader figure
train_steps = 5                         # batches timed for the training figure (0: skip it)
rounds = 2                              # alternations of folder and pack; the best counts
#------------------------------------------------------------------
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from nets.facenet import FacenetNet
from txt_annotation import annotate
from utils.config import configure, fail
from utils.dataloader import Annotation, PersonIndex, TripletBatchSampler, make_loader, read_annotation
from utils.image import decode_rgb, open_rgb
from utils.recordio import RecordFile, dataset_for, image_bytes, pack_annotation, read_records
from utils.runtime import network_threads, resolve_workers
from utils.training import Criterion, Precision, make_optimizer, train_one_epoch


def first_images(annotation: Annotation, limit: int) -> Annotation:
    """The whole people that fit in ``limit`` images, in annotation order."""
    keep = int(np.searchsorted(np.cumsum(np.bincount(annotation.labels)), limit, side="right"))
    mask = annotation.labels < max(keep, 2)
    return Annotation([p for p, m in zip(annotation.paths, mask) if m], annotation.labels[mask])


def read_decode(annotation: Annotation) -> float:
    """Images/s of reading and decoding every image in this process."""
    start = time.perf_counter()
    if hasattr(annotation, "offsets"):
        rec = RecordFile(annotation.rec_path)
        for offset, name in zip(annotation.offsets.tolist(), annotation.paths):
            decode_rgb(image_bytes(rec, offset), name)
    else:
        for path in annotation.paths:
            open_rgb(path)
    return len(annotation.paths) / (time.perf_counter() - start)


def loader_for(annotation: Annotation, batches: int, workers: int):
    dataset = dataset_for(annotation, input_shape, True, False)
    sampler = TripletBatchSampler(PersonIndex(annotation.labels), batch_size, batches, seed=0)
    return make_loader(dataset, sampler, workers, False, 0)


def loader_speed(annotation: Annotation, workers: int) -> float:
    """Images/s of train.py's loader alone (the first batch, worker start-up included, not timed)."""
    loader = iter(loader_for(annotation, loader_batches + 1, workers))
    next(loader)
    start, seen = time.perf_counter(), 0
    for images, _, _ in loader:
        seen += len(images)
    return seen / (time.perf_counter() - start)


def training_speed(annotation: Annotation, workers: int) -> float:
    """Images/s of ``train_steps`` training steps fed by the loader."""
    torch.manual_seed(0)
    model = FacenetNet("mobilenet", num_classes=annotation.num_classes).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), "adam", 1e-3, 0.9, 0.0)
    stats = train_one_epoch(model, loader_for(annotation, train_steps, workers), optimizer, Criterion(),
                            torch.device("cpu"), Precision(), True, desc="training", progress=False)
    return stats["images_per_s"]


def main() -> None:
    configure(globals())
    if not os.path.isdir(datasets_path):
        fail(f"--datasets_path {datasets_path}: no such folder of people")
    workers = resolve_workers(num_workers, cuda=False)
    if workers:
        torch.set_num_threads(network_threads(workers))
    with tempfile.TemporaryDirectory() as tmp:
        annotate(datasets_path, os.path.join(tmp, "all.txt"), os.path.join(tmp, "names.txt"), check=False)
        folder = first_images(read_annotation(os.path.join(tmp, "all.txt")), images)
        packed = pack_annotation(folder, os.path.join(tmp, "train.rec"), progress=False)
        pack = read_records(os.path.join(tmp, "train.rec"), progress=False)
        print(f"{len(folder.paths)} images of {folder.num_classes} people from {datasets_path}; pack "
              f"{packed['bytes'] / 2**20:.1f} MiB; {input_shape[0]}x{input_shape[1]}, batch {batch_size}, "
              f"{workers} loader processes, torch threads {torch.get_num_threads()}")
        figures = {"read + decode": read_decode, "loader": lambda a: loader_speed(a, workers)}
        if train_steps:
            figures["training"] = lambda a: training_speed(a, workers)
        best = {(name, layout): 0.0 for name in figures for layout in ("folder", "pack")}
        for _ in range(rounds):
            for name, measure in figures.items():
                for layout, annotation in (("folder", folder), ("pack", pack)):
                    best[name, layout] = max(best[name, layout], measure(annotation))
        print(f"  {'images/s':<14}  {'folder':>9}  {'pack':>9}  pack/folder")
        for name in figures:
            a, b = best[name, "folder"], best[name, "pack"]
            print(f"  {name:<14}  {a:>9.1f}  {b:>9.1f}  {b / a:.2f}")


if __name__ == "__main__":
    main()
