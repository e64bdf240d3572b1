"""Speed and memory of a full LFW evaluation (6,000 pairs, 7,701 images).

    python benchmarks/bench_eval.py [--model_path model_data/facenet_mobilenet.pth]

Prints images/s, the wall time of the evaluation and the peak resident memory of this process and
of its decoding workers. Without weights it uses a random-weight model: the speed is the same.
"""
#------- settings (edit here or override as --name value) -------
backbone = "mobilenet"
input_shape = [160, 160, 3]
model_path = ""        # empty or missing: random weights
lfw_dir_path = ""      # empty: lfw/ when it holds the aligned LFW, else the raw ../shared copy
lfw_pairs_path = "model_data/lfw_pair.txt"
letterbox_image = True
batch_size = 256
num_workers = 2
flip = False
cuda = True
#------------------------------------------------------------------
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from nets.facenet import Facenet
from utils.checkpoint import load_weights
from utils.config import configure, print_settings, settings_of
from utils.lfw import evaluate_lfw, load_pairs


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lfw_dir = lfw_dir_path or os.path.join(root, "lfw")
    pairs_path = os.path.join(root, lfw_pairs_path) if not os.path.isabs(lfw_pairs_path) else lfw_pairs_path
    try:
        pairs = load_pairs(pairs_path, lfw_dir)
    except FileNotFoundError as err:
        if lfw_dir_path:
            sys.exit(f"error: {err}")
        lfw_dir = os.path.join(os.path.dirname(root), "shared", "data", "lfw", "lfw-deepfunneled")
        print(f"note: no complete aligned LFW in lfw/ ({str(err)[:80]}...); using raw {lfw_dir}")
        pairs = load_pairs(pairs_path, lfw_dir)
    print_settings({**settings_of(globals()), "lfw_dir": lfw_dir, "torch_threads": torch.get_num_threads()})
    model = Facenet(backbone, mode="predict")
    if model_path and os.path.isfile(model_path):
        load_weights(model, model_path, purpose="predict")
    else:
        print("note: random weights (speed only; the accuracy means nothing)")
    device = "cuda" if cuda and torch.cuda.is_available() else "cpu"
    model.to(device)

    start = time.perf_counter()
    result = evaluate_lfw(model, pairs, input_shape, letterbox_image, batch_size, device, flip=flip,
                          num_workers=num_workers)
    wall = time.perf_counter() - start
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{len(pairs.issame)} pairs, {result['num_images']} images on {device}: "
          f"{result['images_per_second']:.1f} images/s, evaluation wall time {wall:.1f} s")
    print(f"peak RSS: main process {own.ru_maxrss / 1024:.0f} MiB, largest worker {workers.ru_maxrss / 1024:.0f} MiB")
    # On a shared machine the wall time depends on the other jobs; the CPU time much less.
    print(f"CPU time (user + system, whole run): main process {own.ru_utime + own.ru_stime:.1f} s, "
          f"workers {workers.ru_utime + workers.ru_stime:.1f} s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"accuracy {result['accuracy_mean']:.4f} +- {result['accuracy_std']:.4f}, AUC {result['auc']:.4f}")


if __name__ == "__main__":
    configure(globals())
    main()
