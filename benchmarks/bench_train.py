"""Training speed: images/s of the model alone (forward + backward + Adam step on a fixed batch, channels-last,
at each precision, optionally torch.compile'd), of the data loader alone, and of the whole pipeline (loader +
step) at train.py's defaults (triplet sampler, batch 96, 160x160, loader processes "auto").

    python benchmarks/bench_train.py --datasets_path ../shared/data/celeba_subset
    python benchmarks/bench_train.py --annotation_path cls_train.txt --iters 20 --compile True

The pipeline should reach at least 80% of the model-alone figure: data loading must hide behind the step.
With ``compile`` the one-off compile time (the first step's time beyond a normal step's) is printed too.
"""
#------- settings (edit here or override as --name value) -------
annotation_path = "cls_train.txt"   # used when datasets_path is ""
datasets_path = ""                  # a datasets/<person>/<image> folder to annotate into a temporary file
backbone = "mobilenet"
input_shape = [160, 160, 3]
batch_size = 96
sampler = "triplet"                 # triplet (train.py's default) | pk (with semihard mining)
augment = False                     # light augmentation in the loader (train.py --augment)
num_workers = "auto"                # loader processes, as train.py's num_workers
precisions = "fp32,bf16"            # comma-separated: fp32, bf16 (fp16 needs CUDA)
compile = False                     # also time torch.compile'd models
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

from nets.facenet import FacenetNet
from txt_annotation import annotate
from utils.config import configure, fail
from utils.dataloader import (AnnotationError, FaceDataset, PersonIndex, PKBatchSampler, TripletBatchSampler,
                              make_loader, read_annotation)
from utils.runtime import SettingError, autocast, check_precision, network_threads, resolve_workers
from utils.training import Criterion, Precision, make_optimizer, to_input


def step_fn(model, optimizer, criterion, precision):
    def step(images, labels):
        x = to_input(images, torch.device("cpu"), channels_last=True)
        with autocast(precision.name, "cpu"):
            embeddings, logits = model(x)
        loss = criterion(embeddings, logits, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def timed(batches, step, count: int) -> tuple[float, float]:
    """(images per second of ``step`` over ``count`` batches, seconds of the first untimed step); ``warmup``
    untimed batches come first."""
    first = 0.0
    for i in range(warmup):
        began = time.perf_counter()
        step(*next(batches)[:2])
        first = first or time.perf_counter() - began
    start, seen = time.perf_counter(), 0
    for _ in range(count):
        images, labels, _ = next(batches)
        step(images, labels)
        seen += len(labels)
    return seen / (time.perf_counter() - start), first


def make_step(num_classes: int, criterion: Criterion, name: str, compiled: bool):
    torch.manual_seed(0)
    model = FacenetNet(backbone, num_classes=num_classes).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), "adam", 1e-4, 0.9, 0.0)
    return step_fn(torch.compile(model) if compiled else model, optimizer, criterion, Precision.named(name))


def main() -> None:
    try:
        chosen = [check_precision(p.strip(), "cpu") for p in precisions.split(",")]
        workers = resolve_workers(num_workers, cuda=False)
    except SettingError as err:
        fail(err)
    torch.set_num_threads(threads or network_threads(workers))
    path = annotation_path
    if datasets_path:
        path = os.path.join(tempfile.mkdtemp(), "cls_train.txt")
        annotate(datasets_path, path, path + ".names", check=False)
    try:
        annotation = read_annotation(path)
    except AnnotationError as err:
        fail(f"{err} (or give --datasets_path DIR)")
    index = PersonIndex(annotation.labels)
    steps = warmup + iters
    if sampler == "pk":
        batches = PKBatchSampler(index, batch_size, 4, steps * 4, seed=0)
    else:
        batches = TripletBatchSampler(index, batch_size, steps * 4, seed=0)
    criterion = Criterion(mining="semihard" if sampler == "pk" else "none")
    dataset = FaceDataset(annotation, input_shape, letterbox=True, augment=augment)
    loader = make_loader(dataset, batches, workers, cuda=False, seed=0)
    print(f"{backbone} {input_shape[0]}x{input_shape[1]}, batch {batch_size}, sampler {sampler}, "
          f"{torch.get_num_threads()} torch threads, {workers} loader processes ({num_workers}), {iters} timed "
          f"steps; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    fixed = next(iter(loader))
    variants = [(name, False) for name in chosen] + ([(name, True) for name in chosen] if compile else [])
    alone = {}
    for name, compiled in variants:
        label = name + (" compiled" if compiled else "")
        alone[label], first = timed(iter(lambda: fixed, None), make_step(annotation.num_classes, criterion, name,
                                                                         compiled), iters)
        extra = f", compile {first - batch_size / alone[label]:.1f} s" if compiled else ""
        print(f"model alone, {label:<14} {alone[label]:7.1f} img/s{extra}")

    stream = iter(loader)
    start = time.perf_counter()
    loaded = sum(len(next(stream)[1]) for _ in range(steps))
    print(f"loader alone ({workers} processes): {loaded / (time.perf_counter() - start):7.1f} img/s")

    for name in chosen:
        rate, _ = timed(iter(loader), make_step(annotation.num_classes, criterion, name, False), iters)
        print(f"pipeline, {name}: {rate:7.1f} img/s  ({100 * rate / alone[name]:.0f}% of the model alone)")


if __name__ == "__main__":
    configure(globals())
    main()
