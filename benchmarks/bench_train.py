"""Training speed: images/s of the model alone (forward + backward + Adam step on a fixed batch, float32
channels-last and bfloat16 autocast), of the data loader alone, and of the whole pipeline (loader + step).

    python benchmarks/bench_train.py --datasets_path ../shared/data/celeba_subset
    python benchmarks/bench_train.py --annotation_path cls_train.txt --iters 20 --num_workers 2

The pipeline should reach at least 80% of the model-alone figure: data loading must hide behind the step.
"""
#------- settings (edit here or override as --name value) -------
annotation_path = "cls_train.txt"   # used when datasets_path is ""
datasets_path = ""                  # a datasets/<person>/<image> folder to annotate into a temporary file
backbone = "mobilenet"
input_shape = [160, 160, 3]
batch_size = 96
sampler = "pk"                      # triplet | pk (with semihard mining)
num_workers = 2
iters = 10                          # timed steps per measurement
warmup = 2                          # untimed steps first
threads = 0                         # torch threads (0: torch's default)
#------------------------------------------------------------------
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from torch.utils.data import DataLoader

from nets.facenet import Facenet
from txt_annotation import annotate
from utils.config import configure
from utils.dataloader import (AnnotationError, FaceDataset, PersonIndex, PKBatchSampler, TripletBatchSampler, collate,
                              read_annotation)
from utils.training import Criterion, Precision, make_optimizer, to_input


def step_fn(model, optimizer, criterion, precision):
    def step(images, labels):
        x = to_input(images, torch.device("cpu"), channels_last=True)
        with precision.autocast(torch.device("cpu")):
            embeddings, logits = model(x)
        loss = criterion(embeddings, logits, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def timed(batches, step, count: int) -> float:
    """Images per second of ``step`` over ``count`` batches after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step(*next(batches)[:2])
    start, seen = time.perf_counter(), 0
    for _ in range(count):
        images, labels, _ = next(batches)
        step(images, labels)
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def main() -> None:
    if threads:
        torch.set_num_threads(threads)
    path = annotation_path
    if datasets_path:
        path = os.path.join(tempfile.mkdtemp(), "cls_train.txt")
        annotate(datasets_path, path, path + ".names", check=False)
    try:
        annotation = read_annotation(path)
    except AnnotationError as err:
        sys.exit(f"error: {err} (or give --datasets_path DIR)")
    index = PersonIndex(annotation.labels)
    steps = warmup + iters
    if sampler == "pk":
        batches = PKBatchSampler(index, batch_size, 4, steps * 4, seed=0)
    else:
        batches = TripletBatchSampler(index, batch_size, steps * 4, seed=0)
    criterion = Criterion(mining="semihard" if sampler == "pk" else "none")
    dataset = FaceDataset(annotation, input_shape, letterbox=True)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                        persistent_workers=num_workers > 0)
    print(f"{backbone} {input_shape[0]}x{input_shape[1]}, batch {batch_size}, sampler {sampler}, "
          f"{torch.get_num_threads()} torch threads, {num_workers} workers, {iters} timed steps")

    fixed = next(iter(loader))
    results = {}
    for name, precision in (("fp32", Precision()), ("bf16", Precision(torch.bfloat16))):
        torch.manual_seed(0)
        model = Facenet(backbone, num_classes=annotation.num_classes).to(memory_format=torch.channels_last)
        step = step_fn(model, make_optimizer(model.parameters(), "adam", 1e-4, 0.9, 0.0), criterion, precision)
        results[name] = timed(iter(lambda: fixed, None), step, iters)
        print(f"model alone, {name} channels_last: {results[name]:7.1f} img/s")

    stream = iter(loader)
    start = time.perf_counter()
    loaded = sum(len(next(stream)[1]) for _ in range(steps))
    print(f"loader alone ({num_workers} workers):   {loaded / (time.perf_counter() - start):7.1f} img/s")

    for name, precision in (("fp32", Precision()), ("bf16", Precision(torch.bfloat16))):
        torch.manual_seed(0)
        model = Facenet(backbone, num_classes=annotation.num_classes).to(memory_format=torch.channels_last)
        step = step_fn(model, make_optimizer(model.parameters(), "adam", 1e-4, 0.9, 0.0), criterion, precision)
        rate = timed(iter(loader), step, iters)
        print(f"pipeline, {name}:                 {rate:7.1f} img/s  "
              f"({100 * rate / results[name]:.0f}% of the model alone)")


if __name__ == "__main__":
    configure(globals())
    main()
