"""Speed and memory of a full LFW evaluation (6,000 pairs, 7,701 images) at each precision and worker count.

    python benchmarks/bench_eval.py [--model_path model_data/facenet_mobilenet.pth --input_shape 112,112,3]
    python benchmarks/bench_eval.py --precisions fp32,bf16 --workers 0,1,2,auto

Runs the evaluation once for every combination of ``precisions`` and ``workers`` (decoding processes;
"auto" is what eval_LFW.py uses by default) and prints, for each, images/s, the wall time, the CPU time of
this process and of its workers (on a shared machine the wall time depends on the other jobs, the CPU time
much less), and the accuracy. Then the peak resident memory, and what one thread spends per image on
decoding and on the network: their ratio is why utils/runtime.py gives the CPU one loader process per 8
cores. Without weights it uses a random-weight model: the speed is the same, the accuracy means nothing.
"""
#------- settings (edit here or override as --name value) -------
backbone = "mobilenet"
input_shape = [160, 160, 3]
model_path = ""        # empty or missing: random weights
lfw_dir_path = ""      # empty: lfw/ when it holds the aligned LFW, else the raw ../shared copy
lfw_pairs_path = "model_data/lfw_pair.txt"
folds = "all"          # or e.g. "8,9,10" for a shorter run
letterbox_image = True
batch_size = 256
workers = "auto"       # comma-separated decoding process counts to compare, e.g. "0,1,2,auto"
precisions = "fp32"    # comma-separated, e.g. "fp32,bf16" (fp16 needs CUDA)
flip = False
cuda = True
#------------------------------------------------------------------
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from nets.facenet import FacenetNet
from utils.checkpoint import load_weights
from utils.config import configure, fail, print_settings, settings_of
from utils.image import open_rgb, preprocess
from utils.lfw import evaluate_lfw, load_pairs, parse_folds
from utils.runtime import CPU_SLICE, Embedder, SettingError, available_cores, check_precision, resolve_workers


def cpu_seconds() -> tuple[float, float]:
    """CPU time (user + system) so far of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def per_image_costs(model: torch.nn.Module, paths: list[str], count: int = 256) -> tuple[float, float]:
    """Milliseconds of one CPU thread per image: decoding and resizing, then the network (fp32, folded)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        images = torch.stack([preprocess(open_rgb(p), input_shape, letterbox_image) for p in paths[:count]])
        decode = time.perf_counter() - start
        embedder = Embedder(model, "cpu")
        embedder(images[:CPU_SLICE])
        start = time.perf_counter()
        for part in images.split(CPU_SLICE):
            embedder(part)
        network = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return 1000 * decode / len(images), 1000 * network / len(images)


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    device = "cuda" if cuda and torch.cuda.is_available() else "cpu"
    try:
        chosen = [check_precision(p.strip(), device) for p in precisions.split(",")]
        counts = {w.strip(): resolve_workers(w.strip(), device == "cuda") for w in workers.split(",")}
    except SettingError as err:
        fail(err)
    lfw_dir = lfw_dir_path or os.path.join(root, "lfw")
    pairs_path = os.path.join(root, lfw_pairs_path) if not os.path.isabs(lfw_pairs_path) else lfw_pairs_path
    try:
        pairs = load_pairs(pairs_path, lfw_dir, parse_folds(folds))
    except FileNotFoundError as err:
        if lfw_dir_path:
            fail(err)
        lfw_dir = os.path.join(os.path.dirname(root), "shared", "data", "lfw", "lfw-deepfunneled")
        print(f"note: no complete aligned LFW in lfw/ ({str(err)[:80]}...); using raw {lfw_dir}")
        pairs = load_pairs(pairs_path, lfw_dir, parse_folds(folds))
    print_settings({**settings_of(globals()), "lfw_dir": lfw_dir, "torch_threads": torch.get_num_threads()})
    model = FacenetNet(backbone)
    if model_path and os.path.isfile(model_path):
        load_weights(model, model_path, purpose="predict")
    else:
        print("note: random weights (speed only; the accuracy means nothing)")
    model.to(device)

    print(f"{len(pairs.issame)} pairs, {len(pairs.paths)} images at {input_shape[0]}x{input_shape[1]} on {device}; "
          f"{available_cores()} cores, load average {os.getloadavg()[0]:.1f}")
    for precision, (setting, count) in ((p, w) for p in chosen for w in counts.items()):
        own, children = cpu_seconds()
        start = time.perf_counter()
        result = evaluate_lfw(model, pairs, input_shape, letterbox_image, batch_size, device, flip=flip,
                              num_workers=count, precision=precision, progress=False)
        wall = time.perf_counter() - start
        own_after, children_after = cpu_seconds()
        label = f"{count} (auto)" if setting == "auto" else str(count)
        print(f"  {precision} workers {label:<8} {result['images_per_second']:7.1f} images/s, wall {wall:6.1f} s, "
              f"CPU {own_after - own:6.1f} s + workers {children_after - children:5.1f} s, "
              f"accuracy {result['accuracy_mean']:.4f}")
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"peak RSS: main process {own.ru_maxrss / 1024:.0f} MiB, largest worker {children.ru_maxrss / 1024:.0f} MiB")
    decode, network = per_image_costs(model, pairs.paths)
    print(f"one thread per image: decoding and resizing {decode:.2f} ms, network fp32 {network:.2f} ms "
          f"(decoding is {decode / network:.2f} of the network)")


if __name__ == "__main__":
    configure(globals())
    main()
