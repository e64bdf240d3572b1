"""utils/runtime.py: the precision setting, the one embedding path (Embedder) of predict and the LFW
evaluation, and loader worker counts that fit the machine. Folding and bfloat16 on every backbone: test_models.py."""
import os

import numpy as np
import pytest
import torch

from conftest import ROOT
from facenet import Facenet as FacenetModel
from nets.facenet import FacenetNet
from utils import runtime
from utils.checkpoint import load_file
from utils.lfw import embed_paths
from utils.runtime import (CPU_SLICE, Embedder, SettingError, check_precision, default_workers, network_threads,
                           resolve_workers, training_precision)

SAMPLES = [os.path.join(ROOT, "img", name) for name in ("1_001.jpg", "1_002.jpg", "2_001.jpg")]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_precisions_are_accepted(precision):
    assert check_precision(precision, "cpu") == precision


@pytest.mark.parametrize("precision, words", [("fp16", "needs a CUDA GPU"), ("fp64", "fp32, bf16 or fp16"),
                                              ("FP32", "fp32, bf16 or fp16")])
def test_bad_precision_is_one_line(precision, words):
    if precision == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is valid where CUDA is available")
    with pytest.raises(SettingError) as info:
        check_precision(precision, "cpu")
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_automatic_training_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "native_bf16", lambda: native)
    assert training_precision("auto", "cpu") == expected
    assert training_precision("fp32", "cpu") == "fp32" and training_precision("bf16", "cpu") == "bf16"
    with pytest.raises(SettingError, match="fp32, bf16 or fp16"):
        training_precision("half", "cpu")


@pytest.mark.parametrize("flags, expected", [("fpu sse2 avx512f avx512_bf16 amx_tile", True),
                                              ("fpu sse2 amx_bf16", True), ("fpu sse2 avx2 avx512f", False)])
def test_native_bf16_reads_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: some cpu with bf16 in its name\nflags\t\t: {flags}\n\n")
    assert runtime.native_bf16(str(cpuinfo)) is expected
    assert runtime.native_bf16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize("cores, threads, cuda, expected", [
    (2, 2, False, 0),     # the network needs both cores: decode in the main process
    (2, 1, False, 1),     # torch was limited to one thread: the other core decodes
    (3, 3, False, 0),
    (4, 4, False, 1),     # one loader process per 4 cores
    (16, 16, False, 4),
    (1, 1, True, 0),
    (2, 2, True, 1),      # the GPU computes: every core but the feeding one decodes
    (32, 32, True, 8),    # capped
])
def test_default_workers_never_oversubscribe_the_cores(monkeypatch, cores, threads, cuda, expected):
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    workers = default_workers(cuda)
    assert workers == expected
    if not cuda:
        assert workers + network_threads(workers) <= cores


def test_network_threads_leave_the_workers_their_cores(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert [network_threads(w) for w in (0, 1, 2, 8, 20)] == [8, 7, 6, 1, 1]


def test_resolve_workers(monkeypatch):
    monkeypatch.setattr(runtime, "default_workers", lambda cuda: 5 if cuda else 0)
    assert resolve_workers("auto", False) == 0 and resolve_workers("AUTO", True) == 5
    assert resolve_workers(3, False) == 3 and resolve_workers("2", True) == 2
    for bad in ("many", "-1", 1.5, True):
        with pytest.raises(SettingError, match="auto or a whole number"):
            resolve_workers(bad, False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("runtime") / "net.pth"
    torch.save(FacenetNet("mobilenet").state_dict(), path)
    return str(path)


@pytest.mark.parametrize("flip, precision", [(False, "fp32"), (True, "fp32"), (True, "bf16")])
def test_predict_and_lfw_evaluation_give_the_same_embeddings(weights, flip, precision):
    model = FacenetModel(model_path=weights, cuda=False, align=False, input_shape=[64, 64, 3], flip=flip,
                         precision=precision)
    net = FacenetNet("mobilenet")
    net.load_state_dict(load_file(str(weights), ""))
    from_lfw = embed_paths(net, SAMPLES, [64, 64, 3], True, batch_size=2, device="cpu", flip=flip, progress=False,
                           precision=precision)
    np.testing.assert_allclose(model.embed(SAMPLES), from_lfw, atol=1e-6)


def test_batches_larger_than_a_cpu_slice_match_single_images():
    torch.manual_seed(0)
    embedder = Embedder(FacenetNet("mobilenet"))
    images = torch.rand(CPU_SLICE + 3, 3, 32, 32)
    whole = embedder(images)
    singles = np.concatenate([embedder(images[i:i + 1]) for i in (0, CPU_SLICE + 2)])
    assert whole.shape == (CPU_SLICE + 3, 128) and whole.dtype == np.float32
    np.testing.assert_allclose(whole[[0, CPU_SLICE + 2]], singles, atol=1e-5)
    assert embedder(images[:0]).shape == (0, 128)


def test_flip_adds_the_mirror_images_embedding_and_the_model_keeps_its_mode():
    torch.manual_seed(0)
    model = FacenetNet("mobilenet", num_classes=3).train()
    images = torch.rand(2, 3, 32, 32)
    plain, flipped = Embedder(model)(images), Embedder(model, flip=True)(images)
    assert model.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    mirrored = Embedder(model)(images.flip(3))
    both = plain + mirrored
    np.testing.assert_allclose(flipped, both / np.linalg.norm(both, axis=1, keepdims=True), atol=1e-5)
    assert np.abs(flipped - plain).max() > 1e-3
