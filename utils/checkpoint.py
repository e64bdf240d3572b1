"""Loading FaceNet weights from every format users bring, and writing files atomically.

One loader serves every script. It accepts the original repository's released weights, our own
checkpoints (plain or wrapped under ``model``/``state_dict``, with or without a DataParallel
``module.`` prefix) and the Inception-ResNet-V1 files of the common PyTorch port, and it says what
it loaded and skipped. For inference it refuses to run on partly random weights.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field

import torch
from torch import nn

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")
# Head of the PyTorch port's InceptionResnetV1: 512-d, so it cannot serve our 128-d head.
PORT_HEAD_PREFIXES = ("last_linear.", "last_bn.", "logits.")
BACKBONE_MARKERS = {"backbone.model.stage1.": "mobilenet", "backbone.model.conv2d_1a.": "inception_resnetv1"}


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message is one line naming the file and the fix."""


@dataclass
class LoadReport:
    """What ``load_weights`` did with each entry of the file."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"Loaded {len(self.loaded)} entries from {self.path}"]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("shape mismatch", self.mismatched)):
            if keys:
                lines.append(f"  {label} ({len(keys)}): {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def guess_backbone(state_dict: dict) -> str:
    """The backbone a (normalised) state_dict was saved for, or 'unknown'."""
    for marker, name in BACKBONE_MARKERS.items():
        if any(k.startswith(marker) for k in state_dict):
            return name
    return "unknown"


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read ``path`` and return (state_dict in our naming, notes about what was converted)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such weights file; put the .pth file there or set --model_path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile,
            UnicodeDecodeError, ValueError, AttributeError):
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, or not a .pth file); "
                              "download or copy the weights again") from None
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state_dict of tensors (got {type(obj).__name__}); "
                              "expected FaceNet weights saved with torch.save(model.state_dict())")
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    notes = []
    if "conv2d_1a.conv.weight" in state_dict:
        head = [k for k in state_dict if k.startswith(PORT_HEAD_PREFIXES)]
        state_dict = {f"backbone.model.{k}": v for k, v in state_dict.items() if k not in head}
        notes.append(f"Inception-ResNet-V1 file of the PyTorch port: backbone taken, its 512-d head "
                     f"({len(head)} entries) not used")
    return state_dict, notes


def load_weights(model: nn.Module, path: str, purpose: str = "predict", verbose: bool = True) -> LoadReport:
    """Load ``path`` into a ``nets.facenet.Facenet`` and report what happened.

    purpose:
      "predict"  every backbone and head entry must be in the file (never run on random weights);
      "train"    the same for the backbone; a missing head or a classifier of another class count
                 is left at its initial values with a note (fine-tuning on another dataset);
      "backbone" only backbone entries are used (pretrained backbone for a new model).
    """
    if purpose not in ("predict", "train", "backbone"):
        raise ValueError(f"purpose must be predict, train or backbone, not {purpose!r}")
    state_dict, notes = read_state_dict(path)
    report = LoadReport(path=path, notes=notes)
    target = model.state_dict()
    ours = guess_backbone(target)
    theirs = guess_backbone(state_dict)
    if theirs != ours:
        raise CheckpointError(f"{path}: these weights are for backbone {theirs!r} but the model is {ours!r}; "
                              f"set --backbone {theirs} or use weights for {ours}")
    if purpose == "backbone":
        state_dict = {k: v for k, v in state_dict.items() if k.startswith("backbone.")}
        target_keys = [k for k in target if k.startswith("backbone.")]
    else:
        target_keys = list(target)
    to_load = {}
    for key in target_keys:
        if key not in state_dict:
            report.missing.append(key)
        elif state_dict[key].shape != target[key].shape:
            report.mismatched.append(f"{key} {tuple(state_dict[key].shape)} vs {tuple(target[key].shape)}")
        else:
            to_load[key] = state_dict[key]
    report.unexpected = [k for k in state_dict if k not in target]
    report.loaded = list(to_load)

    problems = report.missing + report.mismatched
    if purpose != "predict":
        problems = [k for k in problems if k.startswith("backbone.")]
    if problems:
        raise CheckpointError(f"{path}: incomplete weights for backbone {theirs} ({len(problems)} entries "
                              f"missing or of another shape, first: {', '.join(problems[:3])}); "
                              "refusing to run on random weights")
    if report.unexpected and all(k.startswith("classifier.") for k in report.unexpected):
        report.notes.append("classifier not used (only needed for training)")
    if report.mismatched:
        report.notes.append("classifier of another class count skipped: it starts from scratch")
    if report.missing:
        report.notes.append(f"{len(report.missing)} entries not in the file start from scratch")
    model.load_state_dict(to_load, strict=False)
    if verbose:
        print(report.summary())
    return report


def save_atomic(obj: object, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; weights are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write a file (JSON, PNG, logs) through a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """``write_bytes_atomic`` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks: identifies weights across copies and renames."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
