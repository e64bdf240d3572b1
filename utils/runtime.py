"""How a network runs for inference here: its folded copy, its numeric precision, the one embedding
path (``Embedder``), the one autocast helper, and the loader processes.

``facenet.Facenet`` (predict.py, the gallery), its ONNX file and the LFW evaluation (eval_LFW.py,
train.py) all embed through an ``Embedder``, so a threshold measured by one is applied by the same code,
with the same batch-norm folding, memory layout, flip and precision, in the others. Several scripts
(eval_LFW.py, predict.py, export.py, align_dataset.py, train.py) share the precision and worker
settings: one module checks them, so that every script says the same thing about a bad one.
"""
from __future__ import annotations

import contextlib
import copy
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from nets.facenet import FacenetNet
from utils.checkpoint import (ModelSettings, fmt_shape, load_weights, model_settings,
                              read_weights_info, threshold_setting, weights_info_path)
from utils.config import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# On one thread, decoding and resizing a 160 px face crop takes a tenth (160 px input) to a third (112 px)
# of mobilenet's time for it (benchmarks/bench_eval.py prints both): on the CPU one loader process per 4
# cores keeps the network fed; with fewer than 4 cores a loader process takes more than it gives.
CPU_CORES_PER_WORKER = 4
# With a GPU the CPU cores only decode; more processes than this rarely help and each costs memory.
CUDA_MAX_WORKERS = 8
# On the CPU the network runs on slices of this many images whatever the batch size: bigger slices
# are no faster there and cost about 3.5 MB of activations per image at 160x160.
CPU_SLICE = 32


class SettingError(UserError, ValueError):
    """A precision or worker setting that cannot be used; the message is one line saying what to set."""


def check_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` if it can run on ``device``; else SettingError (fp16 autocast is only fast on CUDA)."""
    if precision not in PRECISIONS:
        raise SettingError(f"--precision must be fp32, bf16 or fp16, not {precision!r}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise SettingError("--precision fp16 needs a CUDA GPU; on the CPU use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SettingError("--precision bf16: this GPU has no bfloat16; use fp16 or fp32")
    return precision


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX): elsewhere torch emulates it, slower
    than float32. Read from the flags in ``cpuinfo``; False where there is none."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_precision(setting: str, device: torch.device | str) -> str:
    """The precision a training run uses: ``auto`` is bf16 on a CPU with bfloat16 arithmetic (as accurate
    as fp32 there at equal epochs and faster; see the README's speed section), else fp32."""
    device = torch.device(device)
    if setting == "auto":
        return "bf16" if device.type == "cpu" and native_bf16() else "fp32"
    return check_precision(setting, device)


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])


class Embedder:
    """The one inference path of a FaceNet: ``model.embed`` on an eval copy with BatchNorm folded, on
    ``device`` in ``channels_last`` layout, under the autocast of ``precision``, with ``flip``.

    ``model`` is a ``nets.facenet.FacenetNet`` (left as it was, so training can go on) or an ONNX runner
    (``utils.onnx_model.OnnxEmbedder``, whose file is that same function, exported). Either ``embed``
    returns L2-normalised float32 embeddings: the normalisation is never applied twice.
    """

    def __init__(self, model: nn.Module | object, device: str | torch.device = "cpu", precision: str = "fp32",
                 flip: bool = False) -> None:
        self.device, self.precision, self.flip = torch.device(device), precision, flip
        if isinstance(model, nn.Module):
            model = inference_copy(model).to(self.device, memory_format=torch.channels_last)
        self.net = model
        self.embedding_size: int = model.embedding_size

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, x.device):
            return self.net.embed(x)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Embeddings (N, D) float32 of preprocessed ``images`` (N, 3, H, W); on the CPU ``CPU_SLICE``
        at a time. With ``flip`` an image's embedding is that of the image plus that of its mirror
        image, normalised again."""
        chunks = []
        for part in images.split(CPU_SLICE if self.device.type == "cpu" else max(len(images), 1)):
            x = part.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            embedding = self._embed(x)
            if self.flip:
                mirrored = x.flip(3).contiguous(memory_format=torch.channels_last)
                embedding = F.normalize(embedding + self._embed(mirrored), p=2, dim=1)
            chunks.append(embedding.float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embedding_size), np.float32)


def load_embedder(model_path: str, backbone: str | None, input_shape: list[int] | None, threshold: float | None,
                  default_input_shape: list[int], device: torch.device, precision: str, flip: bool,
                  verbose: bool = False) -> tuple[Embedder, ModelSettings]:
    """The weights ``model_path`` (loaded strictly) as an ``Embedder``, and the settings found for them:
    each of backbone, input_shape and threshold given wins, else the weights' JSON, else a stated default."""
    if not os.path.isfile(model_path):
        raise UserError(f"{model_path}: no weights file; copy the trained facenet_{backbone or 'mobilenet'}"
                              ".pth there, or train with train.py and pass --model_path logs/<weights>.pth")
    found = model_settings(model_path, backbone, input_shape, threshold, default_input_shape)
    net = FacenetNet(backbone=found.backbone)
    load_weights(net, model_path, purpose="predict", verbose=verbose)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Embedder(net, device, precision, flip), found


def load_onnx_embedder(onnx_path: str, backbone: str | None, input_shape: list[int] | None,
                       threshold: float | None, precision: str, flip: bool) -> tuple[Embedder, ModelSettings]:
    """An ONNX file written by export.py as an ``Embedder`` (onnxruntime, on the CPU), and its settings: the
    input size fixed by the export, the backbone and threshold from the JSON beside it."""
    from utils.onnx_model import OnnxEmbedder

    if precision != "fp32":
        raise SettingError("an ONNX file runs in fp32; leave --precision fp32 with --onnx_path")
    runner = OnnxEmbedder(onnx_path)
    if input_shape is not None and list(input_shape) != runner.input_shape:
        raise UserError(f"{onnx_path}: exported for input_shape {fmt_shape(runner.input_shape)}, not "
                              f"{fmt_shape(input_shape)}; leave --input_shape unset or export again with "
                              "python export.py --input_shape ...")
    info = read_weights_info(onnx_path)
    threshold, source, messages = threshold_setting(info, weights_info_path(onnx_path), threshold)
    settings = ModelSettings(info.get("backbone", backbone), runner.input_shape, threshold, source, messages)
    return Embedder(runner, "cpu", precision, flip), settings


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each BatchNorm folded into the layer before it.

    Folding leaves the outputs unchanged (to float rounding) and makes CPU inference about 1.5x
    faster. It covers the layouts used in nets/: a Conv2d then a BatchNorm2d in an nn.Sequential, a
    module whose ``conv`` attribute feeds its ``bn`` (BasicConv2d), and FaceNet's ``Bottleneck``
    Linear feeding ``last_bn``. The caller's model is not touched, so training can go on right after.
    """
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in list(net.modules()):
            if isinstance(module, nn.Sequential):
                for i in range(len(module) - 1):
                    if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                        module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                        module[i + 1] = nn.Identity()
            conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module.conv, module.bn = fuse_conv_bn_eval(conv, bn), nn.Identity()
            linear, bn = getattr(module, "Bottleneck", None), getattr(module, "last_bn", None)
            if isinstance(linear, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
                module.Bottleneck, module.last_bn = fuse_linear_bn_eval(linear, bn), nn.Identity()
    return net


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers(cuda: bool) -> int:
    """Loader processes that fit this machine beside the network, so that no core is oversubscribed.

    With a GPU the network needs one core to feed it: the other cores decode (at most
    CUDA_MAX_WORKERS). On the CPU the network's threads need the cores: loader processes get the
    cores torch's threads leave free, or one per CPU_CORES_PER_WORKER cores; on 2 cores that is 0,
    decoding in the main process (2 workers there made a whole LFW evaluation 1.6x slower).
    """
    cores = available_cores()
    if cuda:
        return max(0, min(CUDA_MAX_WORKERS, cores - 1))
    spare = cores - min(torch.get_num_threads(), cores)
    return max(spare, cores // CPU_CORES_PER_WORKER)


def resolve_workers(value: int | str, cuda: bool) -> int:
    """A ``num_workers`` setting as a number: "auto" is ``default_workers(cuda)``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return default_workers(cuda)
    if isinstance(value, bool) or not str(value).strip().isdigit():
        raise SettingError(f"--num_workers must be auto or a whole number from 0, not {value!r}")
    return int(value)


def network_threads(num_workers: int) -> int:
    """Torch threads that leave ``num_workers`` busy loader processes a core each (at least 1): with
    more busy threads than cores, the network's threads wait on each other at every layer."""
    return max(1, min(torch.get_num_threads(), available_cores() - num_workers))
