"""Write the embedding network to ONNX, check it against PyTorch with onnxruntime, and time both.

    python export.py                                   # model_data/facenet_mobilenet.pth -> .onnx
    python predict.py img/1_001.jpg img/1_002.jpg --onnx_path model_data/facenet_mobilenet.onnx

The file takes ``images`` (N, 3, H, W) float32 pixels / 255 at the weights' input size, any batch size
N, and gives ``embeddings`` (N, 128), L2-normalised. The check: the largest absolute difference of the
sample images' embeddings, PyTorch against onnxruntime at batch sizes 1 and all, must stay below
``tolerance``, and every pair of them must get the same verdict from both. Exit status 1 when it fails.
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

from facenet import DEFAULT_INPUT_SHAPE, FALLBACK_THRESHOLD
from nets.facenet import BACKBONES, Facenet
from utils.checkpoint import load_weights, model_settings, weights_info_path, write_bytes_atomic, write_weights_info
from utils.config import (Bool, Choice, Int, List, Number, Opt, OutputFile, Shape, Text, configure,
                          print_settings, run_main, settings_of)
from utils.image import open_rgb, preprocess
from utils.onnx_model import OnnxEmbedder, onnx_bytes
from utils.runtime import embed, inference_copy

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


def check(model: Facenet, embedder: OnnxEmbedder, inputs: torch.Tensor, names: list[str],
          threshold: float) -> bool:
    """Print and return whether onnxruntime gives PyTorch's embeddings (batch of all and one by one)
    and the same verdict on every pair of ``names``."""
    with torch.inference_mode():
        reference = model.embed(inputs).numpy()
    together = embedder(inputs).numpy()
    alone = np.concatenate([embedder(x[None]).numpy() for x in inputs])
    difference = float(max(np.abs(together - reference).max(), np.abs(alone - reference).max()))
    ok = difference < tolerance
    print(f"largest embedding difference, onnxruntime vs PyTorch (batch {len(inputs)} and 1): "
          f"{difference:.2e} ({'below' if ok else 'NOT below'} {tolerance:g})")
    for i, j in itertools.combinations(range(len(names)), 2):
        d_torch = float(np.linalg.norm(reference[i] - reference[j]))
        d_onnx = float(np.linalg.norm(together[i] - together[j]))
        same = (d_torch < threshold) == (d_onnx < threshold)
        ok &= same
        print(f"  {names[i]} vs {names[j]}: PyTorch {d_torch:.4f}, onnxruntime {d_onnx:.4f} -> "
              f"{'same person' if d_onnx < threshold else 'different people'}"
              f"{'' if same else ' (VERDICTS DIFFER)'}")
    return ok


def main() -> None:
    if threads:
        torch.set_num_threads(threads)
    found = model_settings(model_path, backbone, input_shape, None, DEFAULT_INPUT_SHAPE)
    for message in found.messages:
        print(message)
    shape = found.input_shape
    target = onnx_path or os.path.splitext(model_path)[0] + ".onnx"
    threshold = FALLBACK_THRESHOLD if found.threshold is None else found.threshold
    print_settings({**settings_of(globals()), "backbone": found.backbone, "input_shape": shape,
                    "onnx_path": target, "threshold": threshold, "threads": torch.get_num_threads()})
    model = Facenet(found.backbone, mode="predict")
    load_weights(model, model_path, purpose="predict")
    model.eval()
    inputs = torch.stack([preprocess(open_rgb(path), shape, letterbox_image) for path in check_images])

    start = time.perf_counter()
    write_bytes_atomic(target, onnx_bytes(model, shape, opset))
    print(f"wrote {target} ({os.path.getsize(target) / 2 ** 20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    # The threshold and input size travel with the file, as they do with the weights (facenet.py reads them).
    if weights_info_path(target) != weights_info_path(model_path):
        print(f"wrote {write_weights_info(target, found.backbone, shape, found.threshold, {'exported_from': model_path})}")

    embedder = OnnxEmbedder(target)
    ok = check(model, embedder, inputs, check_images, threshold)

    net = inference_copy(model).to(memory_format=torch.channels_last)
    batch = torch.rand(speed_batch, 3, shape[0], shape[1])

    def pytorch(precision: str) -> Callable[[torch.Tensor], object]:
        def run(x: torch.Tensor) -> object:
            with torch.inference_mode():
                return embed(net, x.contiguous(memory_format=torch.channels_last), precision)
        return run

    rates = {"PyTorch fp32": images_per_second(pytorch("fp32"), batch, speed_seconds),
             "PyTorch bf16": images_per_second(pytorch("bf16"), batch, speed_seconds),
             "onnxruntime fp32": images_per_second(embedder, batch, speed_seconds)}
    print(f"speed, batch {speed_batch} at {shape[0]}x{shape[1]}, {torch.get_num_threads()} threads, "
          f"BatchNorm folded in both:")
    for name, rate in rates.items():
        print(f"  {name:<17} {rate:8.1f} images/s  ({rate / rates['PyTorch fp32']:.2f}x PyTorch fp32)")
    if not ok:
        sys.exit(f"error: the ONNX check failed: {target} does not reproduce {model_path}")
    print(f"check passed: {target} gives the embeddings and verdicts of {model_path}")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
