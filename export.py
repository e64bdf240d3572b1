"""Write the embedding network to ONNX, check it against PyTorch with onnxruntime, and time both.

    python export.py                                   # model_data/facenet_mobilenet.pth -> .onnx
    python predict.py img/1_001.jpg img/1_002.jpg --onnx_path model_data/facenet_mobilenet.onnx

The file takes ``images`` (N, 3, H, W) float32 pixels / 255 at the weights' input size, any batch size
N, and gives ``embeddings`` (N, 128), L2-normalised. The check runs the sample images through
``facenet.Facenet`` twice, as predict.py does, on the weights and on the ONNX file: the largest absolute
difference of their embeddings (batch of all and one by one) must stay below ``tolerance``, and every
pair of them must get the same verdict from both. Exit status 1 when it fails.
"""
#------- settings (edit here or override as --name value) -------
model_path = "model_data/facenet_mobilenet.pth"  # trained weights
backbone = None                                  # None: from <model_path>.json, else read from the weights
input_shape = None                               # None: from <model_path>.json, else 160,160,3
onnx_path = ""                                   # "": <model_path without .pth>.onnx
opset = 18                                       # ONNX operator set
letterbox_image = True                           # as in training; used for the sample images
check_images = ["img/1_001.jpg", "img/1_002.jpg", "img/2_001.jpg"]
tolerance = 1e-4                                 # largest absolute difference of embeddings allowed
speed_batch = 32                                 # images per call when timing
speed_seconds = 3.0                              # time each runtime this long
threads = 0                                      # threads of PyTorch and onnxruntime (0: torch's default)
#------------------------------------------------------------------
import itertools
import os
import sys
import time
from typing import Callable

import numpy as np
import torch

from facenet import DEFAULT_INPUT_SHAPE, Facenet
from nets.facenet import BACKBONES
from utils.checkpoint import (model_settings, read_weights_info, weights_info_path, write_bytes_atomic,
                              write_weights_info)
from utils.config import (Bool, Choice, Int, List, Number, Opt, OutputFile, Shape, Text, configure,
                          print_settings, run_main, settings_of)
from utils.onnx_model import check_onnx_target, onnx_bytes
from utils.runtime import Embedder

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "model_path": Text(), "backbone": Opt(Choice(*BACKBONES)), "input_shape": Opt(Shape()),
    "onnx_path": Opt(OutputFile(".onnx"), unset=""), "opset": Int(7), "letterbox_image": Bool(),
    "check_images": List(Text()), "tolerance": Number(0, above=True), "speed_batch": Int(1),
    "speed_seconds": Number(0, above=True), "threads": Int(0),
}


def images_per_second(run: Callable[[torch.Tensor], object], batch: torch.Tensor, seconds: float) -> float:
    """How many images a second ``run`` embeds, calling it on ``batch`` for about ``seconds``
    after one untimed call (which builds kernels and caches)."""
    run(batch)
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        run(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - start)


def check(by_torch: Facenet, by_onnx: Facenet, names: list[str]) -> bool:
    """Print and return whether the ONNX file gives the PyTorch weights' embeddings through ``Facenet``
    (batch of all and one by one) and the same verdict on every pair of the images ``names``."""
    reference = by_torch.embed(names)
    together = by_onnx.embed(names)
    alone = np.concatenate([by_onnx.embed([name]) for name in names])
    difference = float(max(np.abs(together - reference).max(), np.abs(alone - reference).max()))
    ok = difference < tolerance
    print(f"largest embedding difference, onnxruntime vs PyTorch (batch {len(names)} and 1): "
          f"{difference:.2e} ({'below' if ok else 'NOT below'} {tolerance:g})")
    for i, j in itertools.combinations(range(len(names)), 2):
        d_torch = float(np.linalg.norm(reference[i] - reference[j]))
        d_onnx = float(np.linalg.norm(together[i] - together[j]))
        same = by_torch.verdict(d_torch) == by_onnx.verdict(d_onnx)
        ok &= same
        print(f"  {names[i]} vs {names[j]}: PyTorch {d_torch:.4f}, onnxruntime {d_onnx:.4f} -> "
              f"{by_onnx.verdict(d_onnx)}{'' if same else ' (VERDICTS DIFFER)'}")
    return ok


def main() -> None:
    if threads:
        torch.set_num_threads(threads)
    found = model_settings(model_path, backbone, input_shape, None, DEFAULT_INPUT_SHAPE)
    for message in found.messages:
        print(message)
    shape = found.input_shape
    target = check_onnx_target(onnx_path or os.path.splitext(model_path)[0] + ".onnx",
                               [model_path, weights_info_path(model_path), *check_images])
    # The weights as predict.py runs them (folded, on the CPU): the file is their embedding function.
    by_torch = Facenet(model_path=model_path, backbone=found.backbone, input_shape=shape,
                       letterbox_image=letterbox_image, cuda=False, align=False, figure=False)
    print_settings({**settings_of(globals()), "backbone": found.backbone, "input_shape": shape,
                    "onnx_path": target, "threshold": by_torch.threshold, "threads": torch.get_num_threads()})

    start = time.perf_counter()
    write_bytes_atomic(target, onnx_bytes(by_torch.embedder.net, shape, opset))
    print(f"wrote {target} ({os.path.getsize(target) / 2 ** 20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    # The threshold, input size and alignment travel with the file, as they do with the weights.
    if weights_info_path(target) != weights_info_path(model_path):
        extra = {key: value for key, value in read_weights_info(model_path).items() if key == "alignment"}
        extra["exported_from"] = model_path
        print(f"wrote {write_weights_info(target, found.backbone, shape, found.threshold, extra)}")

    by_onnx = Facenet(onnx_path=target, letterbox_image=letterbox_image, cuda=False, align=False, figure=False,
                      threshold=by_torch.threshold)
    ok = check(by_torch, by_onnx, check_images)

    batch = torch.rand(speed_batch, 3, shape[0], shape[1])
    rates = {"PyTorch fp32": images_per_second(by_torch.embedder, batch, speed_seconds),
             "PyTorch bf16": images_per_second(Embedder(by_torch.embedder.net, "cpu", "bf16"), batch, speed_seconds),
             "onnxruntime fp32": images_per_second(by_onnx.embedder, batch, speed_seconds)}
    print(f"speed, batch {speed_batch} at {shape[0]}x{shape[1]}, {torch.get_num_threads()} threads, "
          f"BatchNorm folded in both:")
    for name, rate in rates.items():
        print(f"  {name:<17} {rate:8.1f} images/s  ({rate / rates['PyTorch fp32']:.2f}x PyTorch fp32)")
    if not ok:
        print(f"error: the ONNX check failed: {target} does not reproduce {model_path}", file=sys.stderr)
        sys.exit(1)
    print(f"check passed: {target} gives the embeddings and verdicts of {model_path}")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
