"""Embedding speed of onnxruntime beside PyTorch (float32 and bfloat16), at one image and at a batch.

    python benchmarks/bench_onnx.py [--input_shape 160,160,3 --threads 1]

Exports the network (the shipped weights, or random ones: the speed is the same) to a temporary ONNX
file, then times each runtime on random input of ``batches`` images per call, alternating the runtimes
``rounds`` times so that a change of load on a shared machine hits each alike. Prints images/s and CPU
milliseconds per image (user + system of this process: much steadier than the wall time under load).
"""
#------- settings (edit here or override as --name value) -------
backbone = "mobilenet"
model_path = "model_data/facenet_mobilenet.pth"  # empty or missing: random weights
input_shape = [112, 112, 3]
batches = [1, 32]                                # images per call
calls = 10                                       # timed calls per runtime and round
rounds = 3
threads = 0                                      # threads of both runtimes (0: torch's default)
#------------------------------------------------------------------
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from nets.facenet import FacenetNet
from utils.checkpoint import load_weights
from utils.config import configure, print_settings, settings_of
from utils.onnx_model import OnnxEmbedder, onnx_bytes
from utils.runtime import Embedder, available_cores


def main() -> None:
    if threads:
        torch.set_num_threads(threads)
    print_settings({**settings_of(globals()), "torch_threads": torch.get_num_threads()})
    model = FacenetNet(backbone)
    if model_path and os.path.isfile(model_path):
        load_weights(model, model_path, purpose="predict")
    model.eval()
    start = time.perf_counter()
    path = os.path.join(tempfile.mkdtemp(), "facenet.onnx")
    with open(path, "wb") as handle:
        handle.write(onnx_bytes(model, input_shape))
    print(f"export {time.perf_counter() - start:.1f} s; {available_cores()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    runtimes = {"PyTorch fp32": Embedder(model, "cpu", "fp32"), "PyTorch bf16": Embedder(model, "cpu", "bf16"),
                "onnxruntime fp32": Embedder(OnnxEmbedder(path))}
    for size in batches:
        x = torch.rand(size, 3, input_shape[0], input_shape[1])
        wall = dict.fromkeys(runtimes, 0.0)
        cpu = dict.fromkeys(runtimes, 0.0)
        for run in runtimes.values():
            run(x)
        for _ in range(rounds):
            for name, run in runtimes.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    run(x)
                wall[name] += time.perf_counter() - start
                cpu[name] += time.process_time() - start_cpu
        images = size * calls * rounds
        print(f"batch {size}:")
        for name in runtimes:
            print(f"  {name:<17} {images / wall[name]:8.1f} images/s, {1000 * cpu[name] / images:7.2f} CPU ms/image "
                  f"({cpu['PyTorch fp32'] / cpu[name]:.2f}x PyTorch fp32 by CPU time)")


if __name__ == "__main__":
    configure(globals())
    main()
