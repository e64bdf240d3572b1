"""utils/training.py: losses against hand computations, the original's lr rules, history and RNG state."""
import csv
import math
import os
import random

import numpy as np
import pytest
import torch

from utils.checkpoint import load_file
from utils.config import UserError
from utils.distill import bank_loss, similarity_loss
from utils.training import (Criterion, History, Precision, fit_lr, lr_scheduler, make_optimizer,
                            margin_logits, mined_triplet_loss, pairwise_distances, rng_state, set_rng_state, triplet_loss)


def test_triplet_loss_matches_hand_computation():
    # anchors, positives, negatives as 2-d points; distances are easy to do by hand
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[0.3, 0.4], [0.6, 0.8], [0.1, 0.0]])   # d(a,p) = 0.5, 1.0, 0.1
    n = torch.tensor([[0.6, 0.8], [0.0, 0.9], [3.0, 4.0]])   # d(a,n) = 1.0, 0.9, 5.0
    # margins: 0.5 - 1.0 + 0.2 = -0.3 (kept out), 1.0 - 0.9 + 0.2 = 0.3, 0.1 - 5 + 0.2 < 0
    loss = triplet_loss(torch.cat([a, p, n]), margin=0.2)
    assert loss.item() == pytest.approx(0.3, abs=1e-6)
    # two violating triplets are averaged over those two only
    p2 = torch.tensor([[0.3, 0.4], [0.6, 0.8], [0.9, 1.2]])  # d(a,p) = 0.5, 1.0, 1.5
    n2 = torch.tensor([[0.6, 0.8], [0.0, 0.9], [0.96, 1.28]])  # d(a,n) = 1.0, 0.9, 1.6
    loss = triplet_loss(torch.cat([a, p2, n2]), margin=0.2)
    assert loss.item() == pytest.approx((0.3 + 0.1) / 2, abs=1e-6)


def test_triplet_loss_is_zero_without_violations_and_gradients_stay_finite():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], requires_grad=True)  # a == p exactly
    loss = triplet_loss(x, margin=0.2)
    assert loss.item() == 0.0
    loss = triplet_loss(x, margin=5.0)  # now violated, with d(a,p) = 0
    loss.backward()
    assert loss.item() == pytest.approx(5.0 - 2.0, abs=1e-5)
    assert torch.isfinite(x.grad).all()


def brute_force(emb: torch.Tensor, labels: list[int], margin: float, mining: str) -> float:
    d = torch.cdist(emb.double(), emb.double()).numpy()
    losses = []
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "hard":
            losses.append(max(d[a, p] for p in pos) - min(d[a, n] for n in neg) + margin)
            continue
        for p in pos:
            semi = [d[a, n] for n in neg if d[a, p] < d[a, n] < d[a, p] + margin]
            dn = min(semi) if semi else min(d[a, n] for n in neg)
            losses.append(d[a, p] - dn + margin)
    kept = [v for v in losses if v > 0]
    return float(np.mean(kept)) if kept else 0.0


@pytest.mark.parametrize("mining", ["hard", "semihard"])
def test_mined_losses_match_a_brute_force_search(mining):
    gen = torch.Generator().manual_seed(3)
    for trial in range(4):
        labels = [0, 0, 0, 1, 1, 2, 2, 2, 3]  # person 3 has one image: never an anchor, only a negative
        emb = torch.nn.functional.normalize(torch.randn(len(labels), 8, generator=gen), dim=1)
        margin = 0.2 if trial < 2 else 1.0
        got = mined_triplet_loss(emb, torch.tensor(labels), margin, mining).item()
        assert got == pytest.approx(brute_force(emb, labels, margin, mining), abs=1e-5)


def test_pairwise_distances_and_mining_gradients_are_finite_for_duplicates():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    d = pairwise_distances(x)
    assert torch.allclose(d, torch.cdist(x, x), atol=1e-5)
    loss = mined_triplet_loss(x, torch.tensor([0, 0, 1, 1]), 2.0, "semihard")
    loss.backward()
    assert torch.isfinite(x.grad).all() and loss.item() > 0


def test_criterion_sums_weighted_terms_and_reports_accuracy():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    out = Criterion(margin=0.2, triplet_weight=0.5, ce_weight=2.0)(emb, logits, labels)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert out["ce"].item() == pytest.approx(ce.item())
    assert out["loss"].item() == pytest.approx(0.5 * triplet_loss(emb).item() + 2.0 * ce.item(), abs=1e-6)
    assert out["accuracy"].item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    with pytest.raises(UserError, match="mining"):
        Criterion(mining="soft")(emb, logits, labels)


def test_margin_softmax_matches_hand_computation():
    # cosines of two samples to three classes; the true classes are 0 and 2
    cosine = torch.tensor([[0.5, 0.1, -0.2], [0.3, 0.2, -0.99]])
    labels = torch.tensor([0, 2])
    cos_face = margin_logits(cosine, labels, "cosface", scale=10.0, margin=0.35)
    assert torch.allclose(cos_face, torch.tensor([[1.5, 1.0, -2.0], [3.0, 2.0, -13.4]]))
    arc = margin_logits(cosine, labels, "arcface", scale=10.0, margin=0.5)
    # sample 0: theta = acos(0.5) = pi/3, cos(pi/3 + 0.5) = 0.5 cos 0.5 - sin(pi/3) sin 0.5
    expected = 0.5 * math.cos(0.5) - math.sqrt(3) / 2 * math.sin(0.5)
    assert arc[0, 0].item() == pytest.approx(10 * expected, abs=1e-5)
    # sample 1: theta = acos(-0.99) + 0.5 passes pi, so the logit is cos(theta) - m sin(m)
    assert arc[1, 2].item() == pytest.approx(10 * (-0.99 - 0.5 * math.sin(0.5)), abs=1e-5)
    assert torch.equal(arc[:, 1], cosine[:, 1] * 10)  # other classes are only scaled
    out = Criterion(classifier_loss="cosface", cls_scale=10.0, cls_margin=0.35)(
        torch.nn.functional.normalize(torch.randn(6, 4), dim=1), torch.cat([cosine] * 3), labels.repeat(3))
    assert out["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(cos_face, labels).item(), abs=1e-5)
    with pytest.raises(UserError, match="classifier_loss"):
        margin_logits(cosine, labels, "sphereface", 10.0, 0.5)


def test_criterion_distills_the_view_it_was_given():
    teacher = torch.nn.functional.normalize(torch.randn(3, 2, 4), dim=2)  # 3 images x (plain, mirrored)
    views = torch.tensor([0, 3, 4, 1, 2, 5])  # image 0 plain, 1 mirrored, 2 plain, ...
    student = teacher[views // 2, views % 2]
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    criterion = Criterion(teacher=teacher, distill_weight=2.0, pair_weight=1.0)
    assert criterion(student, torch.zeros(6, 3), labels, views)["distill"].item() == pytest.approx(0, abs=1e-6)
    wrong = criterion(student, torch.zeros(6, 3), labels, views ^ 1)  # the other view of each image
    assert wrong["distill"].item() > 0
    plain = Criterion()(student, torch.zeros(6, 3), labels, views)
    pairs = similarity_loss(student, teacher[(views ^ 1) // 2, (views ^ 1) % 2]).item()
    assert wrong["loss"].item() == pytest.approx(plain["loss"].item() + 2.0 * wrong["distill"].item() + pairs,
                                                 abs=1e-5)
    banked = Criterion(teacher=teacher, distill_weight=2.0, pair_weight=1.0, bank_weight=3.0, bank_temperature=0.2)
    bank = bank_loss(student, teacher[(views ^ 1) // 2, (views ^ 1) % 2], teacher[:, 0], 0.2).item()
    assert bank > 0
    assert banked(student, torch.zeros(6, 3), labels, views ^ 1)["loss"].item() == pytest.approx(
        wrong["loss"].item() + 3.0 * bank, abs=1e-5)


def test_fit_lr_follows_the_originals_batch_size_rule():
    assert fit_lr(96, 1e-3, 1e-5, "adam") == pytest.approx((1e-3, 1e-5))  # 1.5e-3, 1.5e-5 clamped
    assert fit_lr(32, 1e-3, 1e-5, "adam") == pytest.approx((5e-4, 5e-6))
    assert fit_lr(6, 1e-3, 1e-5, "adam") == pytest.approx((3e-4, 3e-6))        # lower clamps
    assert fit_lr(96, 1e-2, 1e-4, "sgd") == pytest.approx((1.5e-2, 1.5e-4))


def test_cos_schedule_values_at_chosen_epochs():
    lr, low = 1e-3, 1e-5
    at = lr_scheduler("cos", lr, low, 100)   # warm-up 3 epochs, last 15 epochs at min_lr
    assert at(0) == pytest.approx(1e-4)
    assert at(1) == pytest.approx((lr - 1e-4) / 9 + 1e-4)
    assert at(3) == pytest.approx(lr)
    middle = 3 + (100 - 3 - 15) / 2
    assert at(int(middle)) == pytest.approx(low + 0.5 * (lr - low) * (1 + math.cos(math.pi * 41 / 82)))
    assert at(84) < at(50) < at(10)
    assert at(85) == at(99) == low
    short = lr_scheduler("cos", lr, low, 10)  # warm-up 1 epoch, last 3 at min_lr
    assert short(1) == pytest.approx(lr) and short(7) == low and short(6) > low


def test_step_schedule_values_and_errors():
    at = lr_scheduler("step", 1e-3, 1e-5, 100)
    rate = (1e-5 / 1e-3) ** (1 / 9)
    assert at(0) == at(9) == pytest.approx(1e-3)
    assert at(10) == pytest.approx(1e-3 * rate)
    assert at(99) == pytest.approx(1e-5)
    with pytest.raises(UserError, match="Epoch >= 10"):
        lr_scheduler("step", 1e-3, 1e-5, 5)
    with pytest.raises(UserError, match="lr_decay_type"):
        lr_scheduler("linear", 1e-3, 1e-5, 5)


def test_optimizers_are_the_originals():
    params = [torch.nn.Parameter(torch.zeros(2))]
    adam = make_optimizer(params, "adam", 1e-3, 0.9, 0.0)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.9, 0.999)
    sgd = make_optimizer(params, "sgd", 1e-2, 0.9, 5e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    with pytest.raises(UserError):
        make_optimizer(params, "rmsprop", 1e-3, 0.9, 0.0)


def test_history_writes_csv_and_png(tmp_path):
    history = History(str(tmp_path / "run"))
    for epoch in (1, 2):
        history.append({"epoch": epoch, "lr": 1e-3, "loss": 2.0 / epoch, "accuracy": 0.1 * epoch,
                        "val_loss": float("nan"), "lfw_accuracy": 0.5 + 0.1 * epoch})
    with open(tmp_path / "run" / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["loss"]) for r in rows] == [2.0, 1.0]
    assert rows[1]["val_loss"] == "nan" and float(rows[1]["lfw_accuracy"]) == pytest.approx(0.7)
    png = (tmp_path / "run" / "history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    torch.save(rng_state(), tmp_path / "rng.pth")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_file(str(tmp_path / "rng.pth"), ""))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_named_precisions():
    assert Precision.named("fp32") == Precision()
    assert Precision.named("bf16").dtype == torch.bfloat16 and Precision.named("bf16").scaler is None


def test_the_schedule_state_names_what_another_length_would_change():
    from dataclasses import asdict
    saved = asdict(lr_scheduler("cos", 0.1, 1e-3, 22, no_aug_iter_ratio=0.05))
    assert saved["warmup"] == pytest.approx(2.2) and saved["epochs"] == 22
    assert lr_scheduler("cos", 0.1, 1e-3, 22, no_aug_iter_ratio=0.05).differences(saved) == []
    changed = lr_scheduler("cos", 0.1, 1e-3, 24, no_aug_iter_ratio=0.05).differences(saved)
    assert changed[0] == "epochs 22 -> 24" and any(c.startswith("warmup 2.2") for c in changed)
