"""The weights file, the facts that travel with it, and every file the project writes (atomically).

One loader serves every script. It accepts the original repository's released weights, our own
checkpoints (plain or wrapped under ``model``/``state_dict``, with or without a DataParallel
``module.`` prefix) and the Inception-ResNet-V1 files of the common PyTorch port, and it says what
it loaded and skipped. For inference it refuses to run on partly random weights.

Beside each weights file ``<name>.pth`` lies ``<name>.json`` with the facts needed to use it: the
backbone, the input_shape it was trained at, the alignment of its training faces and, once measured
by eval_LFW.py, the threshold with what it was measured on (a short file: the ROC curve and the full
metrics stay in the evaluation's own output). ``write_weights_info`` writes it, ``record_threshold``
adds a measured threshold, and ``model_settings`` resolves the settings of a script from it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from nets.facenet import BACKBONES
from utils.config import UserError, check_input_shape

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")
# Head of the PyTorch port's InceptionResnetV1: 512-d, so it cannot serve our 128-d head.
PORT_HEAD_PREFIXES = ("last_linear.", "last_bn.", "logits.")
BACKBONE_MARKERS = {"backbone.model.stage1.": "mobilenet", "backbone.model.conv2d_1a.": "inception_resnetv1"}



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


def load_file(path: str, fix: str) -> object:
    """The one ``torch.load`` of the project: tensors and plain containers only (``weights_only``), so no
    pickle from a user's file runs code; a file that cannot be read is a UserError saying what it
    holds, with ``fix`` (what to do) for a damaged file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        names = unsafe_globals(path)
        if any(n.startswith("torch.nn.modules.") for n in names):
            raise UserError(f"{path}: holds a whole pickled model (torch.save(model)), which is not loaded "
                                  "because unpickling it could run code; where you trust the file, load it and save "
                                  "its weights: torch.save(model.state_dict(), 'weights.pth')") from None
        if names:
            raise UserError(f"{path}: holds pickled Python objects ({names[0]}), not only tensors, and is not "
                                  "loaded because unpickling them could run code; save plain tensors (a state_dict)"
                                  ) from None
        raise UserError(f"{path}: not a readable PyTorch file (truncated, or not a .pth file); {fix}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a .pth file") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError, AttributeError):
        raise UserError(f"{path}: not a readable PyTorch file (truncated, or not a .pth file); {fix}") from None


def unsafe_globals(path: str) -> list[str]:
    """The Python objects a .pth file's pickle names beyond tensors, read without unpickling."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # an old-format or damaged file: nothing more to say about it
        return []


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read ``path`` and return (state_dict in our naming, notes about what was converted)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such weights file; put the .pth file there or set --model_path")
    obj = load_file(path, "download or copy the weights again")
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: holds no state_dict of tensors (got {type(obj).__name__}); "
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
    """Load ``path`` into a ``nets.facenet.FacenetNet`` and report what happened.

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
        raise UserError(f"{path}: these weights are for backbone {theirs!r} but the model is {ours!r}; "
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

    broken = [k for k, v in to_load.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise UserError(f"{path}: {len(broken)} entries hold NaN or infinite values (first: {broken[0]}); "
                              "these weights are broken (a diverged training run?); use other weights")
    problems = report.missing + report.mismatched
    if purpose != "predict":
        problems = [k for k in problems if k.startswith("backbone.")]
    if problems:
        raise UserError(f"{path}: incomplete weights for backbone {theirs} ({len(problems)} entries "
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


@contextlib.contextmanager
def atomic_stream(path: str) -> Iterator[BinaryIO]:
    """The one writer of the project: a binary file written under a temporary name beside ``path``,
    flushed to disk and renamed onto it once complete, so a crash, Ctrl-C or a full disk leaves the
    previous file intact and never half a file.

    torch.save reports a failed write (Ctrl-C, disk full) as a RuntimeError of its own; the cause is
    raised instead, so that Ctrl-C still exits 130 and a full disk is one line (utils.config.run_main).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; weights are meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        cause = root_cause(err)
        if isinstance(cause, OSError) and cause.filename is None:  # name the file in the one-line error
            cause = OSError(cause.errno, cause.strerror, path)
        raise cause from None
    with contextlib.suppress(OSError):  # the rename itself reaches the disk (not every system can sync a folder)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def root_cause(err: BaseException) -> BaseException:
    """The Ctrl-C or the OSError behind ``err`` when a library wrapped it in its own error, else ``err``."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, (KeyboardInterrupt, OSError)):
            return cause
        cause = cause.__cause__ or cause.__context__
    return err


def save_atomic(obj: object, path: str) -> None:
    """``torch.save`` through ``atomic_stream``."""
    with atomic_stream(path) as handle:
        torch.save(obj, handle)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write a file (JSON, PNG, logs) through ``atomic_stream``."""
    with atomic_stream(path) as handle:
        handle.write(data)


def write_text_atomic(path: str, text: str) -> None:
    """``write_bytes_atomic`` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def jsonable(value: object) -> object:
    """Numbers, arrays and containers as plain JSON values; NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, obj: dict) -> None:
    """Write ``obj`` as JSON with one top-level key per line (long arrays stay on one line), atomically."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in jsonable(obj).items()]
    write_text_atomic(path, "{\n" + ",\n".join(lines) + "\n}\n")


def figure_extensions() -> tuple[str, ...]:
    """The file extensions matplotlib can save a figure as ('.png', '.pdf', ...)."""
    from matplotlib.figure import Figure
    return tuple(sorted("." + ext for ext in Figure().canvas.get_supported_filetypes()))


def save_figure(figure: object, path: str) -> None:
    """Save a matplotlib figure in the format of ``path``'s extension, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=os.path.splitext(path)[1].lstrip(".").lower() or "png", bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def weights_info_path(weights_path: str) -> str:
    """Where the facts of ``weights_path`` are kept: the same name with ``.json``."""
    return os.path.splitext(weights_path)[0] + ".json"


def write_weights_info(weights_path: str, backbone: str, input_shape: Sequence[int],
                       threshold: float | None = None, extra: dict | None = None) -> str:
    """Write ``<weights without .pth>.json`` so that predict and eval use the weights as they were trained.

    ``threshold`` is the same-person distance measured by eval_LFW.py (None: not measured, the file
    then has none and predict says so); ``extra`` adds keys after these (e.g. training metrics).
    Returns the JSON's path.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
    info = {"backbone": backbone, "input_shape": check_input_shape("input_shape", list(input_shape))}
    if threshold is not None:
        info["threshold"] = float(threshold)
    path = weights_info_path(weights_path)
    write_json(path, {**info, **(extra or {})})
    return path


def record_threshold(weights_path: str, backbone: str, input_shape: Sequence[int], threshold: float,
                     measured_on: dict, extra: dict | None = None) -> str:
    """Put a measured ``threshold`` and what it was ``measured_on`` into the JSON of ``weights_path``,
    keeping its other facts (the alignment, training epoch ...); ``extra`` adds keys such as the
    impostor table of utils/open_set.py. Returns the JSON's path."""
    keep = {k: v for k, v in read_weights_info(weights_path).items()
            if k not in ("backbone", "input_shape", "threshold", "threshold_measured_on")}
    return write_weights_info(weights_path, backbone, input_shape, check_threshold(threshold, weights_path),
                              {"threshold_measured_on": measured_on, **keep, **(extra or {})})


def read_weights_info(weights_path: str) -> dict:
    """The JSON beside ``weights_path`` ({} when there is none), its backbone, input_shape and threshold
    checked; a bad value is a UserError naming the file and the key."""
    path = weights_info_path(weights_path)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
        if not isinstance(info, dict):
            raise ValueError
    except (OSError, ValueError):
        raise UserError(f"{path}: not a readable JSON object; run eval_LFW.py again, "
                              "or delete it and give --backbone, --input_shape and --threshold") from None
    fix = "correct or delete it"
    if "backbone" in info and info["backbone"] not in BACKBONES:
        raise UserError(f"{path}: backbone must be one of {', '.join(BACKBONES)}, "
                              f"not {info['backbone']!r}; {fix}")
    if info.get("input_shape") is not None:
        try:
            info["input_shape"] = check_input_shape("input_shape", info["input_shape"])
        except UserError as err:
            raise UserError(f"{path}: {str(err).lstrip('-')}; {fix}") from None
    if info.get("threshold") is not None:
        info["threshold"] = check_threshold(info["threshold"], path)
    return {k: v for k, v in info.items() if v is not None}


def check_threshold(value: object, source: str) -> float:
    """A distance threshold must be a number in (0, 2]: distances of unit vectors lie in [0, 2]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 2:
        raise UserError(f"{source}: threshold must be a number above 0 and at most 2, not {value!r}")
    return float(value)


@dataclass
class ModelSettings:
    """The backbone, input_shape and threshold to use with a weights file, and what to tell the user."""

    backbone: str
    input_shape: list[int]
    threshold: float | None
    threshold_source: str
    messages: list[str] = field(default_factory=list)


def model_settings(weights_path: str, backbone: str | None = None, input_shape: Sequence[int] | None = None,
                   threshold: float | None = None, default_input_shape: Sequence[int] = (160, 160, 3)
                   ) -> ModelSettings:
    """Settings for ``weights_path``: each one given wins, else the weights' JSON, else a stated default.

    A given backbone or input_shape that contradicts the JSON is used, with a ``warning:`` message (the
    user may know better, but a silent mismatch gives wrong answers); weights without a JSON get a
    ``note:`` saying which input size is assumed. The backbone is otherwise read from the weights.
    """
    info = read_weights_info(weights_path)
    where = weights_info_path(weights_path)
    messages = []
    if backbone is None:
        backbone = info.get("backbone") or guess_backbone(read_state_dict(weights_path)[0])
        if backbone not in BACKBONES:
            raise UserError(f"{weights_path}: cannot tell the backbone from the file; set --backbone")
    elif "backbone" in info and info["backbone"] != backbone:
        messages.append(f"warning: --backbone {backbone} contradicts {where} (backbone {info['backbone']}); "
                        f"using {backbone}")
    known = info.get("input_shape")
    if input_shape is None:
        input_shape = known or list(default_input_shape)
        if not known:
            messages.append(f"note: {where} gives no input_shape; assuming {fmt_shape(input_shape)}; "
                            "set --input_shape to the size the weights were trained at")
    elif known and list(input_shape) != known:
        messages.append(f"warning: --input_shape {fmt_shape(input_shape)} contradicts {where}, where the weights "
                        f"were trained at {fmt_shape(known)}; using {fmt_shape(input_shape)}")
    threshold, source, notes = threshold_setting(info, where, threshold)
    messages += notes
    return ModelSettings(backbone, list(input_shape), threshold, source, messages)


def threshold_setting(info: dict, where: str, threshold: float | None) -> tuple[float | None, str, list[str]]:
    """The threshold to use: the given one (checked), else the one of ``info`` (the JSON at ``where``),
    else None; with its source ("setting", ``where`` or "none") and a note when the given one replaces
    a measured one."""
    if threshold is not None:
        threshold = check_threshold(threshold, "--threshold")
        if "threshold" in info and abs(info["threshold"] - threshold) > 1e-9:
            return threshold, "setting", [f"note: --threshold {threshold:g} replaces {info['threshold']:.4f} "
                                          f"measured in {where}"]
        return threshold, "setting", []
    if "threshold" in info:
        return info["threshold"], where, []
    return None, "none", []


def fmt_shape(shape: Sequence[int]) -> str:
    """[112, 112, 3] -> '112,112,3', the way it is given on the command line."""
    return ",".join(map(str, shape))


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks: identifies weights across copies and renames."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
