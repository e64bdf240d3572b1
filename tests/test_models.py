"""Every backbone through the same checks, as torchvision tests every model: the released weights' key
layout, shapes and unit norm, a backward pass, bfloat16 autocast, BatchNorm folding, the ONNX round trip,
and a stored embedding of a seeded network (tests/fixtures/golden_embeddings.json) that pins the numbers.

After a deliberate change of the networks' arithmetic, write the stored embeddings again with
``python tests/test_models.py`` and say why in the commit.
"""
import json
import os

import pytest
import torch

from conftest import FIXTURES
from nets.facenet import FacenetNet
from utils.runtime import Embedder, inference_copy

GOLDEN = os.path.join(FIXTURES, "golden_embeddings.json")
# backbone: (released key list, parameters with a 10,575-class classifier, backbone output channels)
BACKBONES = {"mobilenet": ("facenet_mobilenet_keys.txt", 4_702_479, 1024),
             "inception_resnetv1": ("facenet_inception_resnetv1_keys.txt", 24_157_903, 1792)}
# Backbone feature map side at 160 and 112 px inputs.
FEATURE_SIDES = {"mobilenet": (5, 4), "inception_resnetv1": (3, 2)}
GOLDEN_SIZE, GOLDEN_VALUES = 112, 8
pytestmark = pytest.mark.parametrize("backbone", list(BACKBONES))


def read_key_list(name: str) -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    with open(os.path.join(FIXTURES, "reference", name)) as handle:
        for line in handle:
            if not line.startswith("#"):
                key, shape, _ = line.rstrip("\n").split("\t")
                entries.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return entries


def seeded_net(backbone: str, num_classes: int | None = None) -> FacenetNet:
    """A network from seed 0 with BatchNorm statistics far from the identity, so that folding them and
    their eps (1e-3 in Inception-ResNet, 1e-5 in MobileNet) really count in the outputs."""
    torch.manual_seed(0)
    net = FacenetNet(backbone, num_classes=num_classes)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.002, 0.02)
            m.weight.data.uniform_(0.05, 0.15)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def golden_input() -> torch.Tensor:
    return torch.rand(1, 3, GOLDEN_SIZE, GOLDEN_SIZE, generator=torch.Generator().manual_seed(1))


def test_state_dict_matches_the_released_weights_key_for_key(backbone):
    key_file, params, _ = BACKBONES[backbone]
    model = FacenetNet(backbone, num_classes=10575)
    reference = read_key_list(key_file)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == reference
    assert sum(p.numel() for p in model.parameters()) == params
    released = {k: torch.zeros(shape) for k, shape in reference}
    FacenetNet(backbone).load_state_dict({k: v for k, v in released.items() if not k.startswith("classifier.")})


@pytest.mark.parametrize("size", [160, 112])
def test_shapes_and_unit_norm_in_either_memory_layout(backbone, size):
    model = seeded_net(backbone, num_classes=7)
    x = torch.rand(2, 3, size, size)
    side = FEATURE_SIDES[backbone][size == 112]
    with torch.inference_mode():
        assert model.backbone["model"](x).shape == (2, BACKBONES[backbone][2], side, side)
        embedding, logits = model(x)
        alone = model.embed(x)
        packed = model.to(memory_format=torch.channels_last).embed(x.contiguous(memory_format=torch.channels_last))
    assert embedding.shape == (2, 128) and logits.shape == (2, 7) and embedding.dtype == torch.float32
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(alone, embedding)
    torch.testing.assert_close(packed, embedding, atol=1e-4, rtol=1e-4)


def test_backward_reaches_every_parameter(backbone):
    model = seeded_net(backbone, num_classes=3).train()
    embedding, logits = model(torch.rand(2, 3, 112, 112))
    (torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])) + embedding[:, 0].sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(p.grad.abs().sum() > 0 for p in (model.Bottleneck.weight, model.classifier.weight))


def test_bfloat16_autocast_keeps_float32_unit_embeddings_close_to_fp32(backbone):
    model = seeded_net(backbone)
    x = torch.rand(2, 3, 112, 112)
    full = Embedder(model, "cpu", "fp32")(x)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        half = model.embed(x)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.norm(dim=1), torch.ones(2))
    via_embedder = Embedder(model, "cpu", "bf16")(x)
    assert abs(via_embedder - full).max() < 0.1 and abs(via_embedder - full).max() > 0  # bf16 really ran


def test_batchnorm_folding_gives_the_same_embeddings(backbone):
    model = seeded_net(backbone)
    folded = inference_copy(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = torch.rand(3, 3, 112, 112)
    with torch.inference_mode():
        torch.testing.assert_close(folded.embed(x), model.embed(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.from_numpy(Embedder(model)(x)), model.embed(x), atol=1e-4, rtol=1e-4)


def test_embedding_of_a_seeded_network_is_the_stored_one(backbone):
    with open(GOLDEN) as handle:
        expected = json.load(handle)[backbone]
    with torch.inference_mode():
        embedding = seeded_net(backbone).embed(golden_input())[0, :GOLDEN_VALUES]
    torch.testing.assert_close(embedding, torch.tensor(expected), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_onnx_round_trip_at_any_batch_size(backbone, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -r requirements.txt)")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install -r requirements.txt)")
    from utils.onnx_model import OnnxEmbedder, onnx_bytes

    model = seeded_net(backbone)
    path = tmp_path / "net.onnx"
    path.write_bytes(onnx_bytes(model, [112, 112, 3]))
    runner = OnnxEmbedder(str(path), threads=1)
    assert runner.input_shape == [112, 112, 3] and runner.embedding_size == 128
    for batch in (1, 3):
        x = torch.rand(batch, 3, 112, 112)
        with torch.inference_mode():
            expected = model.embed(x)
        out = runner.embed(x.contiguous(memory_format=torch.channels_last))
        assert out.shape == (batch, 128) and out.dtype == torch.float32
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.from_numpy(Embedder(runner, flip=True)(x)),
                               torch.from_numpy(Embedder(model, flip=True)(x)), atol=1e-4, rtol=0)


if __name__ == "__main__":
    with torch.inference_mode():
        values = {name: [round(float(v), 6) for v in seeded_net(name).embed(golden_input())[0, :GOLDEN_VALUES]]
                  for name in BACKBONES}
    with open(GOLDEN, "w") as handle:
        json.dump(values, handle, indent=1)
        handle.write("\n")
    print(f"wrote {GOLDEN}")
