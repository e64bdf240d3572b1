"""utils/runtime.py: the precision setting, BatchNorm folding, the one embedding path of predict and the LFW
evaluation, and loader worker counts that fit the machine."""
import os

import numpy as np
import pytest
import torch

import align_dataset
from conftest import ROOT
from facenet import Facenet as FacenetModel
from nets.facenet import Facenet
from utils import runtime
from utils.checkpoint import load_file
from utils.lfw import embed_paths
from utils.runtime import (CPU_SLICE, SettingError, check_precision, default_workers, embed, embed_batch,
                           inference_copy, network_threads, resolve_workers, training_precision)

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


def test_native_bf16_reads_the_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    assert runtime.native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_bf16_embeddings_are_float32_unit_vectors_close_to_fp32():
    torch.manual_seed(0)
    net = inference_copy(Facenet("mobilenet", mode="predict"))
    x = torch.rand(4, 3, 64, 64)
    with torch.inference_mode():
        full, half = embed(net, x, "fp32"), embed(net, x, "bf16")
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)
    assert (half - full).abs().max() < 0.05


def test_folding_covers_the_embedding_head():
    torch.manual_seed(0)
    model = Facenet("mobilenet", mode="predict").eval()
    model.last_bn.running_mean.uniform_(-0.5, 0.5)
    model.last_bn.running_var.uniform_(0.5, 2.0)
    folded = inference_copy(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded.embed(x), model.embed(x), atol=1e-5, rtol=1e-4)


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


def test_alignment_workers(monkeypatch):
    monkeypatch.setattr(align_dataset, "available_cores", lambda: 4)
    assert align_dataset.worker_count("auto", "cpu", 13000) == 4
    assert align_dataset.worker_count("auto", "cpu", 250) == 2     # a spawned worker must be worth its start
    assert align_dataset.worker_count("auto", "cpu", 10) == 1      # small jobs: in this process
    assert align_dataset.worker_count("auto", "cuda", 13000) == 1
    assert align_dataset.worker_count("3", "cpu", 10) == 3
    with pytest.raises(SettingError):
        align_dataset.worker_count("lots", "cpu", 10)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("runtime") / "net.pth"
    torch.save(Facenet("mobilenet", mode="predict").state_dict(), path)
    return str(path)


@pytest.mark.parametrize("flip, precision", [(False, "fp32"), (True, "fp32"), (True, "bf16")])
def test_predict_and_lfw_evaluation_give_the_same_embeddings(weights, flip, precision):
    model = FacenetModel(model_path=weights, cuda=False, align=False, input_shape=[64, 64, 3], flip=flip,
                         precision=precision)
    net = Facenet("mobilenet", mode="predict")
    net.load_state_dict(load_file(str(weights), ""))
    from_lfw = embed_paths(net, SAMPLES, [64, 64, 3], True, batch_size=2, device="cpu", flip=flip, progress=False,
                           precision=precision)
    np.testing.assert_allclose(model.embed(SAMPLES), from_lfw, atol=1e-6)


def test_batches_larger_than_a_cpu_slice_match_single_images():
    torch.manual_seed(0)
    net = inference_copy(Facenet("mobilenet", mode="predict"))
    images = torch.rand(CPU_SLICE + 3, 3, 32, 32)
    whole = embed_batch(net, images, "cpu")
    singles = np.concatenate([embed_batch(net, images[i:i + 1], "cpu") for i in (0, CPU_SLICE + 2)])
    assert whole.shape == (CPU_SLICE + 3, 128) and whole.dtype == np.float32
    np.testing.assert_allclose(whole[[0, CPU_SLICE + 2]], singles, atol=1e-5)
    assert embed_batch(net, images[:0], "cpu").shape == (0, 128)
