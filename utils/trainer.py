"""One training run of train.py: its data, model, optimiser and schedule, the epoch loop, saving and resume.

``prepare`` resolves the settings (a resumed run takes its checkpoint's), ``run`` trains. Each piece
(``build_data``, ``build_model``, ``build_optimizer``, ``build_schedule``) is built apart from the loop,
so that tests and other scripts can use one alone. The resume checkpoint holds everything the run
needs to go on exactly, the learning-rate schedule included: a resume that would change the schedule
is refused, since it would not continue the same run.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from nets.facenet import FacenetNet
from utils.checkpoint import load_file, load_weights, save_atomic, write_weights_info
from utils.config import UserError, print_settings
from utils.dataloader import (Annotation, PersonIndex, PKBatchSampler, TripletBatchSampler, ValidationBatchSampler,
                              check_trainable, contiguous_ids, make_loader, read_annotation, repeated_lines,
                              split_train_val, validation_triplets)
from utils.distill import chance_similarity, teacher_rows, teacher_targets
from utils.recordio import RecordAnnotation, dataset_for, read_training_data, training_alignment
from utils.runtime import network_threads, resolve_workers, training_precision
from utils.training import (HISTORY_FIELDS, Criterion, History, Precision, Schedule, fit_lr,
                            lr_scheduler, make_optimizer, rng_state, seed_everything, set_lr, set_rng_state,
                            train_one_epoch, validate)
from utils.valsets import LFW_FOLDER_SET, best_metric, history_entries, load_sets, score_sets, table

CHECKPOINT = "last_checkpoint.pth"
# Settings a resumed run may change: where things are and how far this run goes. The others define the
# run (model, data, losses, optimiser, schedule); changing them mid-run cannot continue the same run.
RESUME_OVERRIDABLE = ("cuda", "Init_Epoch", "run_epochs", "num_workers", "save_period", "save_dir",
                      "annotation_path", "teacher_path", "unlabelled_path", "unlabelled_teacher_path",
                      "lfw_eval_flag", "lfw_dir_path", "lfw_pairs_path",
                      "lfw_folds", "compile", "resume", "val_sets", "best_set", "bin_folds")
SCHEDULE_SETTINGS = ("Epoch", "lr_decay_type", "Init_lr", "Min_lr", "warmup_ratio", "tail_ratio")
COLLAPSE_HINT = ("the model collapsed in training: too few steps for the triplet loss to separate the people "
                 "(it sits at the margin), or a learning rate that does not fit the set; train more epochs, or "
                 "on a small set use --optimizer_type sgd --Init_lr 0.1 --weight_decay 5e-4 --sampler pk "
                 "--images_per_person 4 --mining semihard (see the README's training steps)")


# ----------------------------------------------------------------------------- settings and resume

def normalise(cfg: dict) -> dict:
    """Fill in the settings whose default depends on others (Min_lr, backbone_path)."""
    cfg = dict(cfg)
    if cfg["Min_lr"] is not None and not isinstance(cfg["Min_lr"], (int, float)):
        raise UserError(f"--Min_lr takes a number, not {cfg['Min_lr']!r}")
    cfg["Min_lr"] = cfg["Init_lr"] * 0.01 if cfg["Min_lr"] is None else float(cfg["Min_lr"])
    cfg["backbone_path"] = cfg["backbone_path"] or os.path.join("model_data", f"{cfg['backbone']}_backbone.pth")
    return cfg


def read_checkpoint(path: str) -> dict:
    """The resume checkpoint at ``path``; a missing or unusable one is one line saying what to give instead."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such checkpoint to resume; give the {CHECKPOINT} in the save_dir of "
                            "the run to continue")
    checkpoint = load_file(path, f"give the {CHECKPOINT} of the run to continue")
    if not isinstance(checkpoint, dict) or "optimizer" not in checkpoint:
        raise UserError(f"{path}: holds weights only, not a resume checkpoint; use {CHECKPOINT}, "
                            "or start from these weights with --model_path")
    return checkpoint


def resumed_settings(saved: dict, cfg: dict, given: set[str] | None) -> dict:
    """The settings of a resumed run: the checkpoint's, with the overridable ones the user gave.

    ``given`` names the settings given on the command line; None (a call from Python) takes every
    setting of ``cfg`` that differs from the checkpoint as given. A given setting that would change the
    run itself is refused with one line; one of the schedule's says why the schedule cannot change.
    """
    merged = {**cfg, **{k: v for k, v in saved.items() if k in cfg}}
    asked = set(cfg) if given is None else given & set(cfg)
    for name in sorted(asked):
        if cfg[name] == saved.get(name, cfg[name]) and name != "resume":
            continue
        if name in SCHEDULE_SETTINGS:
            raise UserError(f"--{name} cannot change when resuming: the run's learning-rate schedule was laid "
                                f"out for {name} {saved.get(name)!r} (warm-up and tail are fractions of Epoch); "
                                f"resume without --{name} (--run_epochs N stops earlier), or start a new run "
                                "from its weights with --model_path")
        if name not in RESUME_OVERRIDABLE:
            raise UserError(f"--{name} cannot change when resuming (the run used {saved.get(name)!r}); "
                                f"drop it, or start a new run without --resume")
        merged[name] = cfg[name]
    return merged


def prepare(cfg: dict, given: set[str] | None = None) -> tuple[dict, dict | None]:
    """(settings of the run, its resume checkpoint or None): ``cfg`` normalised, merged with the
    checkpoint's settings when ``cfg['resume']`` names one (``given``: see resumed_settings)."""
    cfg = normalise(cfg)
    if not cfg["resume"]:
        return cfg, None
    checkpoint = read_checkpoint(cfg["resume"])
    return resumed_settings(checkpoint["settings"], cfg, given), checkpoint


def world_of(cfg: dict) -> int:
    """The number of processes the run will have (torchrun's WORLD_SIZE when distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1")) if cfg["distributed"] else 1


# ----------------------------------------------------------------------------- the pieces of a run

def setup_device(cfg: dict) -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, device); starts the process group under torchrun."""
    cuda = cfg["cuda"] and torch.cuda.is_available()
    if cfg["cuda"] and not cuda and os.environ.get("RANK", "0") == "0":
        print("note: cuda is True but no GPU is available; training on the CPU")
    if not cfg["distributed"]:
        return 0, 1, 0, torch.device("cuda" if cuda else "cpu")
    if "RANK" not in os.environ:
        raise UserError("distributed=True needs torchrun, e.g. torchrun --nproc_per_node=2 train.py "
                            "--distributed True")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank, torch.device("cuda", local_rank) if cuda else \
        torch.device("cpu")


def load_lfw(cfg: dict):
    """Load the LFW pairs before training starts, so that a missing folder or file is reported at once."""
    from utils.lfw import load_pairs, parse_folds
    try:
        return load_pairs(cfg["lfw_pairs_path"], cfg["lfw_dir_path"], folds=parse_folds(str(cfg["lfw_folds"])))
    except (OSError, ValueError) as err:
        raise UserError(f"LFW evaluation: {err}; or train without it: --lfw_eval_flag False") from None


@dataclass
class Data:
    """The training data of a run and the sets it is scored on."""

    annotation: Annotation
    train_idx: object
    val_idx: object
    train_index: PersonIndex
    lfw_pairs: object
    val_sets: list                  # utils.valsets.ValSet, scored after every epoch besides LFW
    alignment: dict | None          # how the training faces were aligned (written beside the weights)
    teacher: torch.Tensor | None    # rows of the annotation's images, then of the unlabelled faces
    pair_teacher: torch.Tensor | None   # the raw teacher for the similarity term (distill_pair_target raw)
    notes: list[str]                # what the user should know about the annotation
    unlabelled: Annotation | None = None   # faces known to the teacher only (unlabelled_path)


def build_data(cfg: dict) -> Data:
    """Read the annotation (ids renumbered when they have gaps), split it, load the evaluation sets and the
    teacher; every file problem is found here, before a model is built."""
    path = cfg["annotation_path"]
    annotation, note = contiguous_ids(read_training_data(path), path)
    notes = repeated_lines(annotation, path) + [note] * bool(note)
    train_idx, val_idx = split_train_val(len(annotation.paths), cfg["val_split"], cfg["seed"])
    train_index = PersonIndex(annotation.labels, train_idx)
    check_trainable(train_index, len(train_idx), cfg["batch_size"])
    lfw_pairs = load_lfw(cfg) if cfg["lfw_eval_flag"] else None
    val_sets = load_sets(cfg["val_sets"], cfg["bin_folds"], (LFW_FOLDER_SET,) if lfw_pairs else ())
    names = [LFW_FOLDER_SET] * bool(lfw_pairs) + [s.name for s in val_sets]
    if cfg["best_set"] != LFW_FOLDER_SET and cfg["best_set"] not in names:
        raise UserError(f"--best_set {cfg['best_set']} is none of the validation sets "
                            f"({', '.join(names) or 'none given'}); give one of them or lfw")
    unlabelled = read_unlabelled(cfg, annotation)
    teacher = pair_teacher = None
    if cfg["teacher_path"]:
        rows = teacher_rows(cfg["teacher_path"], annotation.paths, path, 128)
        if unlabelled:
            rows = torch.cat([rows, teacher_rows(cfg["unlabelled_teacher_path"], unlabelled.paths,
                                                 cfg["unlabelled_path"], 128)])
        # centred on the annotation's mean: unlabelled faces do not move it
        teacher = teacher_targets(rows, centre_rows=len(annotation.paths))
        if cfg["distill_pair_target"] == "raw":
            pair_teacher = teacher_targets(rows, centre=False)
    return Data(annotation, train_idx, val_idx, train_index, lfw_pairs, val_sets,
                training_alignment(annotation, cfg["alignment"]), teacher, pair_teacher, notes, unlabelled)


def read_unlabelled(cfg: dict, annotation: Annotation) -> Annotation | None:
    """The faces of ``unlabelled_path`` (their ids are ignored), or None when it is not set."""
    if not cfg["unlabelled_path"]:
        return None
    if isinstance(annotation, RecordAnnotation):
        raise UserError(f"--unlabelled_path needs an annotation of image files, not the face pack "
                        f"{cfg['annotation_path']}")
    return read_annotation(cfg["unlabelled_path"])


def build_model(cfg: dict, num_classes: int, checkpoint: dict | None, verbose: bool) -> FacenetNet:
    """The network, from the checkpoint, the given weights, the pretrained backbone or scratch."""
    model = FacenetNet(cfg["backbone"], dropout_keep_prob=cfg["dropout_keep_prob"], num_classes=num_classes,
                       cosine_classifier=cfg["classifier_loss"] != "softmax")
    if checkpoint is not None:
        if checkpoint["num_classes"] != num_classes:
            raise UserError(f"{cfg['resume']}: was trained on {checkpoint['num_classes']} classes but "
                                f"{cfg['annotation_path']} has {num_classes}; resume with the same annotation")
        model.load_state_dict(checkpoint["model"])
    elif cfg["model_path"]:
        load_weights(model, cfg["model_path"], purpose="train", verbose=verbose)
    elif cfg["pretrained"]:
        path = cfg["backbone_path"]
        if not os.path.isfile(path):
            raise UserError(f"{path}: no backbone weights; pretrained=True needs the {cfg['backbone']} "
                                "backbone weights there (or --backbone_path FILE); nothing is downloaded")
        load_weights(model, path, purpose="backbone", verbose=verbose)
    return model


def wrap_model(cfg: dict, model: FacenetNet, device: torch.device, world: int, local_rank: int,
               log) -> tuple[FacenetNet, torch.nn.Module]:
    """(the module whose weights are saved, the one that is stepped: SyncBN / DDP / compiled)."""
    model.to(device, memory_format=torch.channels_last if device.type == "cpu" else torch.preserve_format)
    model_train = model
    if cfg["sync_bn"] and world > 1 and device.type == "cuda":
        model_train = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif cfg["sync_bn"]:
        log("note: sync_bn needs distributed training on several GPUs; using plain BatchNorm")
    if world > 1:
        model_train = torch.nn.parallel.DistributedDataParallel(
            model_train, device_ids=[local_rank] if device.type == "cuda" else None)
    model = model_train.module if world > 1 else model_train
    return model, torch.compile(model_train) if cfg["compile"] else model_train


def build_schedule(cfg: dict, log=print) -> Schedule:
    """The learning rate of every epoch: the original's batch-size rule, then its cos or step schedule."""
    init_lr, min_lr = fit_lr(cfg["batch_size"], cfg["Init_lr"], cfg["Min_lr"], cfg["optimizer_type"])
    if init_lr != cfg["Init_lr"]:
        log(f"note: learning rate {init_lr:g} (the original's rule: Init_lr {cfg['Init_lr']:g} x batch_size / 64, "
            f"clamped for {cfg['optimizer_type']}), falling to {min_lr:g}")
    return lr_scheduler(cfg["lr_decay_type"], init_lr, min_lr, cfg["Epoch"],
                        warmup_iters_ratio=cfg["warmup_ratio"], no_aug_iter_ratio=cfg["tail_ratio"])


def build_optimizer(cfg: dict, model: FacenetNet, schedule: Schedule) -> torch.optim.Optimizer:
    return make_optimizer(model.parameters(), cfg["optimizer_type"], schedule.lr, cfg["momentum"],
                          cfg["weight_decay"])


def build_criterion(cfg: dict, data: Data) -> Criterion:
    known = len(data.annotation.paths)   # chance among the annotation's faces, as the centring
    chance = chance_similarity(data.pair_teacher[:known]) if data.pair_teacher is not None else 0.0
    return Criterion(cfg["margin"], cfg["mining"], cfg["triplet_weight"], cfg["ce_weight"], cfg["classifier_loss"],
                     cfg["cls_scale"], cfg["cls_margin"], data.teacher, cfg["distill_weight"],
                     cfg["distill_pair_weight"], data.pair_teacher, chance, cfg["distill_bank_weight"],
                     cfg["distill_bank_temperature"])


def build_loaders(cfg: dict, data: Data, rank: int, world: int, device: torch.device,
                  workers: int) -> tuple[object, DataLoader, DataLoader | None]:
    """(the training batch sampler, its loader, the validation loader or None)."""
    num_batches, per_rank = len(data.train_idx) // cfg["batch_size"], cfg["batch_size"] // world
    strength = cfg["augment_strength"] if cfg["augment"] else 0.0
    annotation, unlabelled = data.annotation, range(0)
    if data.unlabelled:   # after the annotation's images, with label -1
        unlabelled = range(len(annotation.paths), len(annotation.paths) + len(data.unlabelled.paths))
        annotation = Annotation(annotation.paths + data.unlabelled.paths,
                                np.concatenate([annotation.labels, np.full(len(unlabelled), -1)]))
    dataset = dataset_for(annotation, cfg["input_shape"], cfg["letterbox_image"], strength)
    if cfg["sampler"] == "pk":
        batches = PKBatchSampler(data.train_index, per_rank, cfg["images_per_person"], num_batches, cfg["seed"],
                                 rank, world, cfg["free_images"] // world, unlabelled,
                                 cfg["unlabelled_images"] // world)
    else:
        batches = TripletBatchSampler(data.train_index, per_rank, num_batches, cfg["seed"], rank, world)
    cuda = device.type == "cuda"
    loader = make_loader(dataset, batches, workers, cuda, cfg["seed"])
    val_rows = validation_triplets(PersonIndex(data.annotation.labels), data.val_idx, data.annotation.labels,
                                   cfg["seed"])
    val_loader = make_loader(dataset, ValidationBatchSampler(val_rows, per_rank, rank, world), workers, cuda,
                             cfg["seed"]) if len(val_rows) else None
    return batches, loader, val_loader


@dataclass
class Session:
    """Everything one training run works with, built once by ``setup``."""

    cfg: dict
    rank: int
    world: int
    device: torch.device
    workers: int                    # data-loading processes (num_workers resolved)
    data: Data
    model: FacenetNet                # the module whose weights are saved
    model_train: torch.nn.Module    # the one that is stepped (DDP / SyncBN wrapper or the model)
    schedule: Schedule
    optimizer: torch.optim.Optimizer
    precision: Precision
    criterion: Criterion
    batches: object
    loader: DataLoader
    val_loader: DataLoader | None
    saved: str | None = None        # the resume checkpoint this run can continue from, once there is one

    @property
    def main_rank(self) -> bool:
        return self.rank == 0

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cpu"

    def log(self, *args) -> None:
        if self.main_rank:
            print(*args)


def setup(cfg: dict, checkpoint: dict | None) -> Session:
    """Device, data, model, schedule, optimiser, losses and loaders of a run (settings checked before)."""
    rank, world, local_rank, device = setup_device(cfg)
    log = print if rank == 0 else (lambda *args, **kwargs: None)
    precision_name = training_precision(cfg["precision"], device)
    data = build_data(cfg)
    if rank == 0:
        print("Settings:")
        print_settings(cfg)
    for note in data.notes:
        log(note)
    log(f"Data: {data.annotation.num_classes} classes, {len(data.train_idx)} training images "
        f"({len(data.train_index.anchor_slots)} people with 2+ images), {len(data.val_idx)} held out; "
        f"{len(data.train_idx) // cfg['batch_size']} steps of {cfg['batch_size']} images per epoch on {world} "
        f"process(es), device {device}, precision {precision_name}")
    seed_everything(cfg["seed"] + rank)
    model, model_train = wrap_model(cfg, build_model(cfg, data.annotation.num_classes, checkpoint, rank == 0),
                                    device, world, local_rank, log)
    schedule = build_schedule(cfg, log)
    workers = resolve_workers(cfg["num_workers"], device.type == "cuda")
    if device.type != "cuda" and workers:
        torch.set_num_threads(network_threads(workers))
    batches, loader, val_loader = build_loaders(cfg, data, rank, world, device, workers)
    if val_loader is None:
        log("note: no validation triplets (val_split too small for this dataset); val_loss is nan")
    return Session(cfg, rank, world, device, workers, data, model, model_train, schedule,
                   build_optimizer(cfg, model, schedule), Precision.named(precision_name),
                   build_criterion(cfg, data), batches, loader, val_loader, saved=cfg["resume"] or None)


def restore(run: Session, checkpoint: dict) -> tuple[int, dict | None, str, list]:
    """Optimiser, scaler and RNG states of a checkpoint; returns (next epoch, best, run folder, history)."""
    where = run.cfg["resume"]
    changed = run.schedule.differences(checkpoint.get("schedule", asdict(run.schedule)))
    if changed:
        raise UserError(f"{where}: the learning-rate schedule would change ({'; '.join(changed)}), so the "
                            "run cannot continue exactly; resume with the run's settings, or start a new run "
                            "from its weights with --model_path")
    start = checkpoint["epoch"] + 1
    if run.cfg["Epoch"] <= start:
        raise UserError(f"{where}: the run is complete ({start} of {run.cfg['Epoch']} epochs); its weights "
                            f"are beside it; to train on, start a new run with --model_path")
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if run.precision.scaler is not None and checkpoint.get("scaler"):
        run.precision.scaler.load_state_dict(checkpoint["scaler"])
    states = checkpoint["rng"]
    if len(states) == run.world:
        set_rng_state(states[run.rank])
    else:
        run.log(f"note: the checkpoint has RNG states of {len(states)} processes, not {run.world}; reseeding")
        seed_everything(run.cfg["seed"] + run.rank + 1000 * start)
    run.log(f"Resuming {where} after epoch {start}")
    return start, checkpoint["best"], checkpoint["run_dir"], checkpoint["history"]


# ----------------------------------------------------------------------------- the epoch loop

def resume_hint(run: Session) -> str:
    """How to go on after a stop: the checkpoint this run wrote (or started from), or that there is none."""
    if run.saved and os.path.isfile(run.saved):
        return f"continue with --resume {run.saved}"
    return "nothing was saved yet (the first epoch had not ended); start the run again"


def score_lfw(run: Session) -> dict:
    """LFW after an epoch; a collapsed model is named with its likely cause (and gives no threshold)."""
    from utils.lfw import evaluate_lfw
    cfg = run.cfg
    run.model.eval()
    lfw = evaluate_lfw(run.model, run.data.lfw_pairs, cfg["input_shape"], cfg["letterbox_image"],
                       cfg["batch_size"], run.device, num_workers=run.workers, progress=True)
    if lfw.get("warning"):
        print(f"LFW: {lfw['warning']}")
    if lfw.get("collapsed"):
        print(f"warning: {COLLAPSE_HINT}")
    return lfw


def fit(run: Session, start: int, best: dict | None, history: History | None) -> dict | None:
    """The epoch loop: train, validate, score LFW and the sets, save; returns the best epoch so far."""
    cfg = run.cfg
    last = cfg["Epoch"] if not cfg["run_epochs"] else min(cfg["Epoch"], start + cfg["run_epochs"])
    for epoch in range(start, last):
        began = time.perf_counter()
        run.batches.set_epoch(epoch)
        set_lr(run.optimizer, run.schedule(epoch))
        stats = train_one_epoch(run.model_train, run.loader, run.optimizer, run.criterion, run.device,
                                run.precision, run.channels_last, desc=f"Epoch {epoch + 1}/{cfg['Epoch']}",
                                progress=run.main_rank)
        val = validate(run.model, run.val_loader, run.criterion, run.device, run.precision,
                       run.channels_last) if run.val_loader else {}
        lfw = score_lfw(run) if run.data.lfw_pairs is not None and run.main_rank else {}
        scored = {}
        if run.data.val_sets and run.main_rank:
            scored = score_sets(run.model, run.data.val_sets, cfg["input_shape"], cfg["letterbox_image"],
                                cfg["batch_size"], run.device, num_workers=run.workers, progress=True)
            print("\n".join(table(scored)))
        states = [rng_state()]
        if run.world > 1:
            states = [None] * run.world
            dist.all_gather_object(states, rng_state())
        if run.main_rank:
            row = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "loss": stats["loss"],
                   "triplet_loss": stats["triplet"], "ce_loss": stats["ce"], "distill_loss": stats["distill"],
                   "accuracy": stats["accuracy"], "val_loss": val.get("loss", math.nan),
                   "val_accuracy": val.get("accuracy", math.nan),
                   "lfw_accuracy": lfw.get("accuracy_mean", math.nan), "lfw_std": lfw.get("accuracy_std", math.nan),
                   "lfw_threshold": lfw.get("threshold_mean"),
                   "images_per_s": stats["images_per_s"], "seconds": time.perf_counter() - began,
                   **history_entries(scored)}
            best = save_epoch(run, history, row, best, states)
        if run.world > 1:
            dist.barrier()
    if last < cfg["Epoch"]:
        run.log(f"Stopped after epoch {last} (run_epochs); {resume_hint(run)}")
    return best


def save_epoch(run: Session, history: History, row: dict, best: dict | None, states: list) -> dict:
    """Write the history, the weights files and the resume checkpoint of one epoch; return the best so far."""
    cfg, epoch = run.cfg, row["epoch"]
    history.append(row)
    print(f"Epoch {epoch}/{cfg['Epoch']}: loss {row['loss']:.4f}  val_loss {row['val_loss']:.4f}  "
          f"accuracy {row['accuracy']:.4f}  LFW accuracy {row['lfw_accuracy']:.4f}+-{row['lfw_std']:.4f}  "
          f"{row['images_per_s']:.1f} img/s  {row['seconds']:.0f} s")
    weights = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    save_dir = cfg["save_dir"]
    # The facts predict.py and eval_LFW.py need beside each weights file; the threshold only when LFW (the
    # folder, else a set named best_set) measured one (a collapsed model measures none); the alignment of the
    # training faces when known.
    lfw = {"lfw_folds": cfg["lfw_folds"], "lfw_accuracy": row["lfw_accuracy"]} \
        if math.isfinite(row["lfw_accuracy"]) else {}
    threshold = row.get("lfw_threshold") if lfw else row.get(f"{cfg['best_set']}_threshold")
    sets = {k: v for k, v in row.items() if k.endswith("_accuracy") and k not in HISTORY_FIELDS}
    alignment = run.data.alignment
    facts = {"backbone": cfg["backbone"], "input_shape": cfg["input_shape"],
             "threshold": threshold if threshold is not None and math.isfinite(threshold) else None,
             "extra": {"epoch": epoch, **lfw, **sets, **({"alignment": alignment} if alignment else {})}}

    def save_weights(name: str) -> None:
        save_atomic(weights, os.path.join(save_dir, name))
        write_weights_info(os.path.join(save_dir, name), **facts)

    if epoch % cfg["save_period"] == 0 or epoch == cfg["Epoch"]:
        save_weights("ep%03d-loss%.3f-val_loss%.3f.pth" % (epoch, row["loss"], row["val_loss"]))
    metric, higher = best_metric(row, cfg["best_set"])
    value = row[metric]
    if best is None or best["metric"] != metric or (value > best["value"] if higher else value < best["value"]):
        best = {"metric": metric, "value": value, "epoch": epoch}
        save_weights("best_epoch_weights.pth")
    save_weights("last_epoch_weights.pth")
    path = os.path.join(save_dir, CHECKPOINT)
    save_atomic({"model": weights, "optimizer": run.optimizer.state_dict(),
                 "scaler": run.precision.scaler.state_dict() if run.precision.scaler is not None else None,
                 "epoch": epoch - 1, "rng": states, "settings": dict(cfg), "schedule": asdict(run.schedule),
                 "history": history.rows, "best": best, "run_dir": history.run_dir,
                 "num_classes": run.data.annotation.num_classes}, path)
    run.saved = path
    return best


def run(cfg: dict, checkpoint: dict | None) -> dict | None:
    """Train with the settings of ``prepare``; returns the best epoch. On Ctrl-C says how to go on."""
    session = setup(cfg, checkpoint)
    start, best, run_dir, rows = cfg["Init_Epoch"], None, None, []
    if checkpoint is not None:
        start, best, run_dir, rows = restore(session, checkpoint)
    run_dir = run_dir or os.path.join(cfg["save_dir"], "loss_" + time.strftime("%Y_%m_%d_%H_%M_%S"))
    history = History(run_dir, rows, tuple(f"{s.name}_accuracy" for s in session.data.val_sets)) \
        if session.main_rank else None
    try:
        best = fit(session, start, best, history)
    except KeyboardInterrupt:
        if session.main_rank:
            print(f"\ninterrupted; {resume_hint(session)}", file=sys.stderr)
        raise
    if session.main_rank and best is not None:
        print(f"Best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}: "
              f"{os.path.join(cfg['save_dir'], 'best_epoch_weights.pth')}; history in {run_dir}")
    if session.world > 1:
        dist.destroy_process_group()
    return best
