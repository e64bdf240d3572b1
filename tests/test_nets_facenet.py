"""nets/facenet.py: the classifier beside the one embedding function, and what runs in bfloat16 (the checks
every backbone gets, the released key layout included, are in test_models.py)."""
import pytest
import torch

from nets.facenet import FacenetNet


def scaled_head(model: FacenetNet, factor: float) -> None:
    """Multiply the vector before normalisation by ``factor`` (last_bn's affine part), leaving the
    normalised embedding as it was."""
    with torch.no_grad():
        model.last_bn.weight.mul_(factor)
        model.last_bn.bias.mul_(factor)


def test_plain_classifier_reads_the_embedding_before_normalisation():
    torch.manual_seed(0)
    model = FacenetNet("mobilenet", num_classes=3).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        embedding, logits = model(x)
        scaled_head(model, 2.0)
        same_embedding, doubled = model(x)
    torch.testing.assert_close(same_embedding, embedding)
    bias = model.classifier.bias
    torch.testing.assert_close(doubled - bias, 2 * (logits - bias), atol=1e-5, rtol=1e-4)


def test_cosine_classifier_keeps_the_key_layout_and_gives_cosines():
    torch.manual_seed(0)
    plain = FacenetNet("mobilenet", num_classes=7)
    cosine = FacenetNet("mobilenet", num_classes=7, cosine_classifier=True).eval()
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == \
        [(k, v.shape) for k, v in cosine.state_dict().items()]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        embedding, logits = cosine(x)
        cosine.classifier.weight[0] = 3 * embedding[0]       # a class pointing at the first face
        scaled_head(cosine, 5.0)                             # cosines ignore the vector's length
        _, pointed = cosine(x)
    assert logits.abs().max() <= 1 + 1e-6
    assert pointed[0, 0] == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(pointed[:, 1:], logits[:, 1:], atol=1e-5, rtol=1e-4)


def test_a_network_without_classifier_embeds_only():
    model = FacenetNet("mobilenet").eval()
    assert model.embed(torch.rand(1, 3, 64, 64)).shape == (1, 128)
    assert not any(k.startswith("classifier") for k in model.state_dict())
    with pytest.raises(ValueError, match="no classifier"):
        model(torch.rand(1, 3, 64, 64))


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="use one of mobilenet, inception_resnetv1"):
        FacenetNet("resnet")


def test_only_the_backbone_runs_in_bfloat16_under_autocast():
    torch.manual_seed(0)
    model = FacenetNet("mobilenet", num_classes=5)
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
