"""Losses, learning-rate schedule, optimiser, one training epoch, history and the resume state.

The loss is the original's: triplet loss on L2-normalised embeddings (averaged over the triplets that
violate the margin) plus cross-entropy of the classifier. Batch mining ("semihard", "hard") is an
option for identity-balanced (PK) batches; a margin softmax (ArcFace, CosFace) can replace the plain
cross-entropy, and a teacher's descriptors add a distillation term (utils/distill.py).
Learning-rate rules copy the original's ``get_lr_scheduler`` and its batch-size-adaptive scaling.
"""
from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from utils.checkpoint import save_figure, write_text_atomic
from utils.config import UserError
from utils.distill import bank_loss, distill_loss, similarity_loss
from utils.runtime import AUTOCAST_DTYPES, autocast

MINING = ("none", "semihard", "hard")
CLASSIFIER_LOSSES = ("softmax", "arcface", "cosface")
DIST_EPS = 1e-12



# ----------------------------------------------------------------------------- losses

def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Euclidean distance; the sqrt never sees 0, so its gradient stays finite."""
    return (a - b).pow(2).sum(-1).clamp_min(DIST_EPS).sqrt()


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """(N, N) Euclidean distance matrix of the rows of ``x``."""
    squared = x.pow(2).sum(1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * x @ x.T
    return d2.clamp_min(DIST_EPS).sqrt()


def mean_of_violations(losses: torch.Tensor) -> torch.Tensor:
    """Average of the positive entries (triplets that violate the margin); zero when there are none."""
    losses = losses.clamp_min(0)
    return losses.sum() / (losses > 0).sum().clamp_min(1)


def triplet_loss(embeddings: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """The original's loss for a batch laid out as [anchors; positives; negatives]."""
    anchor, positive, negative = embeddings.chunk(3)
    return mean_of_violations(distance(anchor, positive) - distance(anchor, negative) + margin)


def mined_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                       mining: str = "hard") -> torch.Tensor:
    """Triplet loss with triplets mined inside the batch from the distance matrix.

    "hard": per anchor, its farthest positive and nearest negative (batch-hard).
    "semihard": FaceNet's rule, per (anchor, positive) pair the nearest negative with
    d(a,p) < d(a,n) < d(a,p) + margin, or the nearest negative of all when none is semi-hard.
    """
    d = pairwise_distances(embeddings.float())
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negative = ~same
    inf = torch.tensor(float("inf"), device=d.device)
    nearest_negative = torch.where(negative, d, inf).min(1).values
    has_negative = negative.any(1)
    if mining == "hard":
        farthest_positive = torch.where(positive, d, -inf).max(1).values
        keep = positive.any(1) & has_negative
        return mean_of_violations((farthest_positive - nearest_negative + margin)[keep])
    if mining != "semihard":
        raise UserError(f"mining must be one of {', '.join(MINING)}, not {mining!r}")
    d_ap = d[:, :, None]
    d_an = d[:, None, :]
    semihard = negative[:, None, :] & (d_an > d_ap) & (d_an < d_ap + margin)
    chosen = torch.where(semihard, d_an, inf).min(2).values
    chosen = torch.where(semihard.any(2), chosen, nearest_negative[:, None])
    keep = positive & has_negative[:, None]
    return mean_of_violations((d - chosen + margin)[keep])


def margin_logits(cosine: torch.Tensor, labels: torch.Tensor, kind: str, scale: float,
                  margin: float) -> torch.Tensor:
    """Scaled logits of a margin softmax from the (N, C) cosines of a cosine classifier.

    "cosface": the true class's cosine minus ``margin``. "arcface": the angle to the true class plus
    ``margin``, cos(theta + m), where theta + m stays below pi; beyond it cos(theta) - m sin(m), which
    keeps the logit falling monotonically with the angle.
    """
    target = cosine.gather(1, labels[:, None])
    if kind == "cosface":
        adjusted = target - margin
    elif kind == "arcface":
        theta = target.clamp(-1 + 1e-7, 1 - 1e-7).acos()
        adjusted = torch.where(theta + margin < math.pi, (theta + margin).cos(), target - margin * math.sin(margin))
    else:
        raise UserError(f"classifier_loss must be one of {', '.join(CLASSIFIER_LOSSES)}, not {kind!r}")
    return cosine.scatter(1, labels[:, None], adjusted) * scale


@dataclass
class Criterion:
    """Total loss = triplet_weight * triplet loss + ce_weight * classifier loss
    + distill_weight * (1 - cos to the teacher) + pair_weight * in-batch similarity mismatch
    + bank_weight * the bank term (utils.distill.bank_loss over the plain views of ``teacher``).
    Unlabelled faces (label -1, train.py's ``unlabelled_path``) count in the teacher's terms only.

    ``classifier_loss`` "softmax" is plain cross-entropy of the logits; "arcface" / "cosface" expect the
    cosines of a cosine classifier and add the margin ``cls_margin`` at scale ``cls_scale``. ``teacher``
    is the (N, 2, D) table of utils.distill.teacher_targets, indexed by the batch's views; the similarity term
    matches ``pair_teacher`` instead when given (another table of the same views, whose random pairs have
    mean similarity ``pair_chance``).
    """

    margin: float = 0.2
    mining: str = "none"
    triplet_weight: float = 1.0
    ce_weight: float = 1.0
    classifier_loss: str = "softmax"
    cls_scale: float = 32.0
    cls_margin: float = 0.5
    teacher: torch.Tensor | None = None
    distill_weight: float = 0.0
    pair_weight: float = 0.0
    pair_teacher: torch.Tensor | None = None
    pair_chance: float = 0.0
    bank_weight: float = 0.0
    bank_temperature: float = 0.1

    def __post_init__(self) -> None:
        # the bank term's rows (plain views), contiguous, moved to the batch's device on first use
        self.bank = self.teacher[:, 0].contiguous() if self.teacher is not None and self.bank_weight else None

    def __call__(self, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                 views: torch.Tensor | None = None, mining: str | None = None) -> dict[str, torch.Tensor]:
        mining = self.mining if mining is None else mining
        embeddings, logits = embeddings.float(), logits.float()
        known, known_logits, known_labels = embeddings, logits, labels
        if bool((labels < 0).any()):   # unlabelled faces (label -1): only the teacher's terms see them
            keep = labels >= 0
            known, known_logits, known_labels = embeddings[keep], logits[keep], labels[keep]
        if mining == "none":
            triplet = triplet_loss(known, self.margin)
        else:
            triplet = mined_triplet_loss(known, known_labels, self.margin, mining)
        if self.classifier_loss == "softmax":
            ce = F.cross_entropy(known_logits, known_labels)
        else:
            ce = F.cross_entropy(margin_logits(known_logits, known_labels, self.classifier_loss, self.cls_scale,
                                               self.cls_margin), known_labels)
        accuracy = (known_logits.argmax(1) == known_labels).float().mean()
        distill = pairs = bank = embeddings.new_zeros(())
        if self.teacher is not None and views is not None:
            target = self.teacher[views // 2, views % 2].to(embeddings.device)
            distill = distill_loss(embeddings, target)
            if self.bank is not None:
                self.bank = self.bank.to(embeddings.device)
                bank = bank_loss(embeddings, target, self.bank, self.bank_temperature)
            if self.pair_teacher is not None:
                target = self.pair_teacher[views // 2, views % 2].to(embeddings.device)
            pairs = similarity_loss(embeddings, target, self.pair_chance)
        loss = self.triplet_weight * triplet + self.ce_weight * ce + self.distill_weight * distill \
            + self.pair_weight * pairs + self.bank_weight * bank
        return {"loss": loss, "triplet": triplet, "ce": ce, "distill": distill, "accuracy": accuracy}


# ----------------------------------------------------------------------------- learning rate, optimiser

def fit_lr(batch_size: int, init_lr: float, min_lr: float, optimizer_type: str) -> tuple[float, float]:
    """The original's batch-size-adaptive learning rates (nominal batch size 64, clamped per optimiser)."""
    nbs = 64
    lr_max = 1e-3 if optimizer_type == "adam" else 1e-1
    lr_min = 3e-4 if optimizer_type == "adam" else 5e-4
    init_fit = min(max(batch_size / nbs * init_lr, lr_min), lr_max)
    min_fit = min(max(batch_size / nbs * min_lr, lr_min * 1e-2), lr_max * 1e-2)
    return init_fit, min_fit


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every epoch of a run, laid out once from its length ``epochs``.

    Saved in the resume checkpoint (``asdict``): a resumed run must follow the same schedule, since
    the warm-up and the tail are fractions of ``epochs`` and another length changes every later rate.
    """

    kind: str                   # cos | step
    lr: float
    min_lr: float
    epochs: int
    warmup: float = 0.0         # cos: epochs of quadratic warm-up from warmup_start
    warmup_start: float = 0.0
    tail: float = 0.0           # cos: last epochs at min_lr
    step_size: float = 0.0      # step: epochs per step
    decay: float = 1.0          # step: factor per step

    def __call__(self, epoch: int) -> float:
        if self.kind == "step":
            return self.lr * self.decay ** (epoch // self.step_size)
        if epoch <= self.warmup:
            return (self.lr - self.warmup_start) * (epoch / float(self.warmup)) ** 2 + self.warmup_start
        if epoch >= self.epochs - self.tail:
            return self.min_lr
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (
            1.0 + math.cos(math.pi * (epoch - self.warmup) / (self.epochs - self.warmup - self.tail)))

    def differences(self, saved: dict) -> list[str]:
        """'name saved -> now' for each entry that differs from a saved ``asdict`` of a schedule."""
        return [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in asdict(self).items()
                if not (saved.get(k) == v or isinstance(v, float) and isinstance(saved.get(k), float)
                        and math.isclose(saved[k], v, rel_tol=1e-12))]


def lr_scheduler(lr_decay_type: str, lr: float, min_lr: float, total_iters: int,
                 warmup_iters_ratio: float = 0.1, warmup_lr_ratio: float = 0.1,
                 no_aug_iter_ratio: float = 0.3, step_num: int = 10) -> Schedule:
    """The schedule of the original's ``get_lr_scheduler`` (same defaults).

    "cos": quadratic warm-up over min(max(0.1 * total, 1), 3) epochs from 0.1 * lr, cosine decay, then
    min_lr for the last min(max(0.3 * total, 1), 15) epochs. "step": ten equal steps from lr to min_lr.
    """
    if lr_decay_type == "cos":
        return Schedule("cos", lr, min_lr, total_iters, warmup=min(max(warmup_iters_ratio * total_iters, 1), 3),
                        warmup_start=max(warmup_lr_ratio * lr, 1e-6),
                        tail=min(max(no_aug_iter_ratio * total_iters, 1), 15))
    if lr_decay_type == "step":
        step_size = total_iters / step_num
        if step_size < 1:
            raise UserError(f"lr_decay_type 'step' needs Epoch >= {step_num}; use --lr_decay_type cos")
        return Schedule("step", lr, min_lr, total_iters, step_size=step_size,
                        decay=(min_lr / lr) ** (1 / (step_num - 1)))
    raise UserError(f"lr_decay_type must be 'cos' or 'step', not {lr_decay_type!r}")


def make_optimizer(params: Iterable[nn.Parameter], optimizer_type: str, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """Adam with betas (momentum, 0.999), or SGD with Nesterov momentum, as the original."""
    if optimizer_type == "adam":
        return torch.optim.Adam(params, lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    if optimizer_type == "sgd":
        return torch.optim.SGD(params, lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    raise UserError(f"optimizer_type must be 'adam' or 'sgd', not {optimizer_type!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ----------------------------------------------------------------------------- one epoch

@dataclass
class Precision:
    """The precision's name (fp32, bf16 or fp16) and the fp16 gradient scaler (None unless fp16 on CUDA)."""

    name: str = "fp32"
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def named(cls, name: str) -> "Precision":
        """fp32, bf16 or fp16 (checked beforehand by utils.runtime.training_precision). Only the backbone
        runs in the lower precision: the head, the losses and the optimizer state stay float32."""
        return cls(name, torch.amp.GradScaler("cuda") if name == "fp16" else None)

    @property
    def dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.name)


def to_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 pixels / 255 on ``device``, the values of ``utils.image.to_tensor``."""
    images = images.to(device, non_blocking=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return images.contiguous(memory_format=fmt).float().div_(255.0)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """Average a small tensor over all ranks (identity without torch.distributed)."""
    if world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world_size()
    return values


KEYS = ("loss", "triplet", "ce", "distill", "accuracy")


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, criterion: Criterion,
                    device: torch.device, precision: Precision, channels_last: bool, desc: str,
                    progress: bool = True) -> dict[str, float]:
    """One pass over ``loader``; returns the mean loss, its terms, accuracy and images/s.

    Losses are averaged over ranks every step, so a NaN or infinite loss stops every rank at once.
    """
    model.train()
    totals = torch.zeros(len(KEYS), dtype=torch.float64)
    seen, steps, start = 0, 0, time.perf_counter()
    bar = tqdm(total=len(loader), desc=desc, disable=not progress, mininterval=0.5, dynamic_ncols=True)
    for images, labels, views in loader:
        images, labels = to_input(images, device, channels_last), labels.to(device, non_blocking=True)
        with autocast(precision.name, device):
            embeddings, logits = model(images)
        losses = criterion(embeddings, logits, labels, views)
        optimizer.zero_grad(set_to_none=True)
        if precision.scaler is not None:
            precision.scaler.scale(losses["loss"]).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            losses["loss"].backward()
            optimizer.step()
        values = all_mean(torch.stack([losses[k].detach() for k in KEYS]).to(torch.float64)).cpu()
        if not torch.isfinite(values[0]):
            bar.close()
            raise UserError(f"{desc}: the loss became {values[0].item()} at step {steps + 1}; training "
                                "stopped (the last saved checkpoint is intact): lower --Init_lr or use fp32")
        totals += values
        steps += 1
        seen += len(labels) * world_size()
        mean = totals / steps
        bar.set_postfix(loss=f"{mean[0]:.3f}", triplet=f"{mean[1]:.3f}", ce=f"{mean[2]:.3f}",
                        distill=f"{mean[3]:.3f}", acc=f"{mean[4]:.3f}",
                        lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                        img_s=f"{seen / (time.perf_counter() - start):.1f}", refresh=False)
        bar.update(1)
    bar.close()
    result = {k: (totals[i] / max(steps, 1)).item() for i, k in enumerate(KEYS)}
    result["images_per_s"] = seen / max(time.perf_counter() - start, 1e-9)
    return result


@torch.no_grad()
def validate(model: nn.Module, loader: Iterable, criterion: Criterion, device: torch.device,
             precision: Precision, channels_last: bool) -> dict[str, float]:
    """Mean loss and accuracy over the fixed validation triplets of every rank (weighted by batch size)."""
    model.eval()
    totals = torch.zeros(len(KEYS) + 1, dtype=torch.float64)
    for images, labels, views in loader:
        images, labels = to_input(images, device, channels_last), labels.to(device)
        with autocast(precision.name, device):
            embeddings, logits = model(images)
        losses = criterion(embeddings, logits, labels, views, mining="none")
        n = len(labels)
        totals += torch.tensor([losses[k].item() * n for k in KEYS] + [n], dtype=torch.float64)
    totals = all_mean(totals)
    if totals[-1] == 0:
        return {}
    return {k: (totals[i] / totals[-1]).item() for i, k in enumerate(KEYS)}


# ----------------------------------------------------------------------------- history

HISTORY_FIELDS = ("epoch", "lr", "loss", "triplet_loss", "ce_loss", "distill_loss", "accuracy", "val_loss",
                  "val_accuracy", "lfw_accuracy", "lfw_std", "images_per_s", "seconds")


class History:
    """Per-epoch metrics of a run: ``history.csv`` and ``history.png`` in the run folder, rewritten every
    epoch (atomically), plus TensorBoard scalars when ``torch.utils.tensorboard`` imports."""

    def __init__(self, run_dir: str, rows: list[dict] | None = None, set_columns: tuple[str, ...] = ()) -> None:
        """``set_columns``: the ``<set>_accuracy`` columns of the validation sets besides LFW's."""
        self.run_dir, self.rows = run_dir, list(rows or [])
        self.fields = HISTORY_FIELDS[:HISTORY_FIELDS.index("images_per_s")] + \
            tuple(c for c in set_columns if c not in HISTORY_FIELDS) + \
            HISTORY_FIELDS[HISTORY_FIELDS.index("images_per_s"):]
        os.makedirs(run_dir, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(run_dir)
        except ImportError:
            self.writer = None

    def append(self, row: dict) -> None:
        self.rows.append({k: row.get(k, float("nan")) for k in self.fields})
        text = io.StringIO()
        out = csv.DictWriter(text, fieldnames=self.fields, lineterminator="\n", restval=float("nan"),
                             extrasaction="ignore")
        out.writeheader()
        out.writerows(self.rows)
        write_text_atomic(os.path.join(self.run_dir, "history.csv"), text.getvalue())
        self.plot(os.path.join(self.run_dir, "history.png"))
        if self.writer is not None:
            for key, value in self.rows[-1].items():
                if key != "epoch" and isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, int(row["epoch"]))
            self.writer.flush()

    def plot(self, path: str) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(10, 4))
        FigureCanvasAgg(figure)
        epochs = [r["epoch"] for r in self.rows]
        accuracies = tuple(k for k in self.fields if k.endswith("accuracy"))  # the training set's, LFW's, each set's
        for axis, keys, ylabel in zip(figure.subplots(1, 2), (("loss", "val_loss"), accuracies), ("loss", "accuracy")):
            for key in keys:
                values = [r.get(key, float("nan")) for r in self.rows]
                if any(math.isfinite(v) for v in values):
                    axis.plot(epochs, values, marker="o", markersize=3, label=key)
            axis.set_xlabel("epoch")
            axis.set_ylabel(ylabel)
            axis.grid(True)
            axis.legend()
        figure.tight_layout()
        save_figure(figure, path)


# ----------------------------------------------------------------------------- resume state

def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and Python RNG states, in a form ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
