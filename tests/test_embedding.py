"""utils/embedding.py: predict (facenet.Facenet) and the LFW evaluation embed through the same code."""
import os

import numpy as np
import pytest
import torch

from conftest import ROOT
from facenet import Facenet
from nets.facenet import Facenet as FacenetNet
from utils.embedding import CPU_SLICE, embed_batch, inference_copy
from utils.lfw import embed_paths

SAMPLES = [os.path.join(ROOT, "img", name) for name in ("1_001.jpg", "1_002.jpg", "2_001.jpg")]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("embedding") / "net.pth"
    torch.save(FacenetNet("mobilenet", mode="predict").state_dict(), path)
    return str(path)


@pytest.mark.parametrize("flip", [False, True])
def test_predict_and_lfw_evaluation_give_the_same_embeddings(weights, flip):
    model = Facenet(model_path=weights, cuda=False, align=False, input_shape=[64, 64, 3], flip=flip)
    net = FacenetNet("mobilenet", mode="predict")
    net.load_state_dict(torch.load(weights, weights_only=True))
    from_lfw = embed_paths(net, SAMPLES, [64, 64, 3], True, batch_size=2, device="cpu", flip=flip, progress=False)
    np.testing.assert_allclose(model.embed(SAMPLES), from_lfw, atol=1e-6)


def test_batches_larger_than_a_cpu_slice_match_single_images():
    torch.manual_seed(0)
    net = inference_copy(FacenetNet("mobilenet", mode="predict"))
    images = torch.rand(CPU_SLICE + 3, 3, 32, 32)
    whole = embed_batch(net, images, "cpu")
    singles = np.concatenate([embed_batch(net, images[i:i + 1], "cpu") for i in (0, CPU_SLICE + 2)])
    assert whole.shape == (CPU_SLICE + 3, 128) and whole.dtype == np.float32
    np.testing.assert_allclose(whole[[0, CPU_SLICE + 2]], singles, atol=1e-5)
    assert embed_batch(net, images[:0], "cpu").shape == (0, 128)
