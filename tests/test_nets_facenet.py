"""nets/facenet.py: the FaceNet head on both backbones, against the released weights' key lists."""
import os

import pytest
import torch

from conftest import FIXTURES
from nets.facenet import Facenet

REFERENCE = os.path.join(FIXTURES, "reference")
CASES = [("mobilenet", "facenet_mobilenet_keys.txt", 4_702_479),
         ("inception_resnetv1", "facenet_inception_resnetv1_keys.txt", 24_157_903)]


def read_key_list(name: str) -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    with open(os.path.join(REFERENCE, name)) as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            key, shape, _ = line.rstrip("\n").split("\t")
            entries.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return entries


@pytest.mark.parametrize("backbone, key_file, params", CASES)
def test_state_dict_matches_released_weights(backbone, key_file, params):
    model = Facenet(backbone, num_classes=10575, mode="train")
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == read_key_list(key_file)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("backbone", ["mobilenet", "inception_resnetv1"])
@pytest.mark.parametrize("size", [160, 112])
def test_forward_shapes_and_unit_norm(backbone, size):
    torch.manual_seed(0)
    model = Facenet(backbone, num_classes=7, mode="train").eval()
    x = torch.rand(2, 3, size, size)
    with torch.inference_mode():
        embedding, logits = model(x)
        channels_last = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))[0]
    assert embedding.shape == (2, 128) and logits.shape == (2, 7)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(channels_last, embedding, atol=1e-4, rtol=1e-4)


def test_predict_mode_returns_embedding_only_and_has_no_classifier():
    model = Facenet("mobilenet", mode="predict").eval()
    out = model(torch.rand(1, 3, 160, 160))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 128)
    assert not any(k.startswith("classifier") for k in model.state_dict())


def test_classifier_reads_embedding_before_normalisation():
    model = Facenet("mobilenet", num_classes=3, mode="train").eval()
    x = torch.rand(2, 3, 112, 112)
    with torch.inference_mode():
        _, logits = model(x)
        expected = model.classifier(model.features(x))
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("kwargs", [dict(backbone="resnet"), dict(mode="eval", num_classes=2), dict(mode="train")])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        Facenet(**kwargs)


def test_cosine_classifier_keeps_the_key_layout_and_gives_cosines():
    plain = Facenet("mobilenet", num_classes=7, mode="train")
    cosine = Facenet("mobilenet", num_classes=7, mode="train", cosine_classifier=True)
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == \
        [(k, v.shape) for k, v in cosine.state_dict().items()]
    cosine.eval()
    with torch.no_grad():
        embedding, logits = cosine(torch.rand(2, 3, 64, 64))
        weight = torch.nn.functional.normalize(cosine.classifier.weight, dim=1)
    assert torch.allclose(logits, embedding @ weight.T, atol=1e-6) and logits.abs().max() <= 1 + 1e-6


def test_only_the_backbone_runs_in_bfloat16_under_autocast():
    torch.manual_seed(0)
    model = Facenet("mobilenet", num_classes=5, mode="train")
    x = torch.rand(4, 3, 64, 64)
    seen = {}

    def record(name):
        def hook(module, inputs, out):
            seen[name] = out.dtype
        return hook
    model.backbone["model"].register_forward_hook(record("backbone"))
    model.Bottleneck.register_forward_hook(record("bottleneck"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embedding, logits = model(x)
    assert seen == {"backbone": torch.bfloat16, "bottleneck": torch.float32}
    assert embedding.dtype == logits.dtype == torch.float32
    (embedding.sum() + logits.sum()).backward()
    assert model.last_bn.running_mean.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
