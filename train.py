"""Train FaceNet with triplet loss + cross-entropy on the people listed in cls_train.txt.

    python txt_annotation.py                     # datasets/<person>/<image> -> cls_train.txt
    python train.py --annotation_path faces_webface_112x112/train.rec --input_shape 112,112,3 \
        --val_sets faces_webface_112x112 --best_set lfw   # an insightface face pack and its .bin sets
    python train.py --Epoch 50 --batch_size 96   # any setting below as --name value
    python train.py --input_shape 112,112,3      # lists are given comma-separated
    python train.py --resume logs/last_checkpoint.pth
    torchrun --nproc_per_node=2 train.py --distributed True

Writes to save_dir: ep%03d-loss%.3f-val_loss%.3f.pth every save_period epochs, best_epoch_weights.pth,
last_epoch_weights.pth (plain state_dicts for predict.py / eval_LFW.py), last_checkpoint.pth (everything
needed to resume) and a run folder loss_<date>/ with history.csv and history.png.
"""
#------- settings (edit here or override as --name value) -------
cuda = True                     # use the GPU when there is one (falls back to the CPU with a note)
seed = 11                       # model init, triplet sampling, augmentation and the validation split
distributed = False             # True under torchrun: one process per GPU (nccl) or per CPU worker (gloo)
sync_bn = False                 # synchronise BatchNorm across GPUs when distributed
precision = "auto"              # auto | fp32 | bf16 | fp16 (CUDA): autocast of the backbone; the head, losses and
                                # optimizer stay float32. auto: bf16 on a CPU with bfloat16 arithmetic, else fp32
compile = False                 # torch.compile the training step's model (a one-off compile of about a minute)
annotation_path = "cls_train.txt"  # or a face pack train.rec (+ train.idx), insightface's or txt_annotation.py's
input_shape = [160, 160, 3]     # height, width, channels
backbone = "mobilenet"          # mobilenet | inception_resnetv1
model_path = ""                 # whole-model weights to start from (fine-tuning); "" = none.
                                # The original defaulted to model_data/facenet_mobilenet.pth; a given
                                # path that does not exist is an error, never silently skipped.
pretrained = False              # start the backbone from backbone_path (ignored when model_path is set)
backbone_path = ""              # "" = model_data/<backbone>_backbone.pth; nothing is downloaded
resume = ""                     # a last_checkpoint.pth to continue a stopped run exactly
batch_size = 96                 # images per step over all processes (a multiple of 3)
Init_Epoch = 0                  # first epoch (ignored with resume)
Epoch = 100                     # last epoch; also the length of the learning-rate schedule
run_epochs = 0                  # stop after this many epochs of this run (0: go on to Epoch); --resume later
Init_lr = 1e-3
Min_lr = None                   # None = Init_lr * 0.01
optimizer_type = "adam"         # adam | sgd
momentum = 0.9
weight_decay = 0.0
lr_decay_type = "cos"           # cos | step
warmup_ratio = 0.1              # cos: warm-up over min(max(ratio * Epoch, 1), 3) epochs (the original's 0.1)
tail_ratio = 0.3                # cos: min_lr for the last min(max(ratio * Epoch, 1), 15) epochs (original: 0.3)
sampler = "triplet"             # triplet: B/3 random triplets (original) | pk: P people x K images
images_per_person = 4           # K of the pk sampler
mining = "none"                 # none: the sampled triplets | semihard | hard: mined in the batch
margin = 0.2                    # triplet-loss margin
free_images = 0                 # pk: images per batch drawn from all images (single-image people too)
triplet_weight = 1.0
ce_weight = 1.0
classifier_loss = "softmax"     # softmax (original) | arcface | cosface: margin softmax on cosines
cls_scale = 32.0                # arcface / cosface: scale s of the cosines
cls_margin = 0.5                # arcface: angular margin m (radians); cosface: cosine margin (e.g. 0.35)
teacher_path = ""               # teacher file of recipes/teacher_embeddings.py; "" = no distillation
distill_weight = 1.0            # weight of 1 - cos(student, teacher) (with teacher_path)
distill_pair_weight = 0.0       # weight of the in-batch similarity mismatch to the teacher
letterbox_image = True          # keep the aspect ratio with grey padding; False = plain resize
augment = False                 # light augmentation (scale, shift, rotation, colour) on top of the flip
val_split = 0.01                # share of images held out for the validation loss
save_period = 1                 # write ep*.pth every save_period epochs
save_dir = "logs"
num_workers = "auto"            # data-loading processes (0 = in the training process); auto: as many as fit
                                # beside the network (0 on a 2-core CPU, see utils/runtime.default_workers)
lfw_eval_flag = True            # LFW verification accuracy after every epoch
lfw_dir_path = "lfw"
lfw_pairs_path = "model_data/lfw_pair.txt"
lfw_folds = "all"               # all, or the pairs.txt folds to use, e.g. 8,9,10
val_sets = ""                   # also scored after every epoch: .bin files (lfw.bin, cfp_fp.bin ...), folders of
                                # them, CALFW/CPLFW lists (pairs_CALFW.txt), comma-separated; a column each
best_set = "lfw"                # the set whose accuracy picks best_epoch_weights.pth: lfw (the folder, or
                                # lfw.bin when the folder is off) or a set's name, e.g. cfp_fp
bin_folds = 10                  # folds of consecutive pairs in a .bin (insightface's protocol)
alignment = "auto"              # how the training faces were aligned, written beside the weights for predict.py:
                                # auto (warp for a .rec; align_dataset.py's record for a folder) | crop | warp | none
#------------------------------------------------------------------
import math
import os
import pickle
import sys
import time
import zipfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from nets.facenet import BACKBONES, FacenetNet
from utils.checkpoint import load_weights, save_atomic, write_weights_info
from utils.config import (Bool, Choice, Int, Number, Opt, OutputFolder, Shape, Text, check_values, configure,
                          given_names, print_settings, run_main, settings_of)
from utils.dataloader import (PersonIndex, PKBatchSampler, TripletBatchSampler, ValidationBatchSampler,
                              check_trainable, make_loader, split_train_val, validation_triplets)
from utils.distill import teacher_for
from utils.recordio import dataset_for, read_training_data, training_alignment
from utils.runtime import PRECISIONS, network_threads, resolve_workers, training_precision
from utils.training import (CLASSIFIER_LOSSES, HISTORY_FIELDS, Criterion, History, Precision, TrainingError, fit_lr,
                            lr_scheduler, make_optimizer, rng_state, seed_everything, set_lr, set_rng_state,
                            train_one_epoch, validate)
from utils.valsets import LFW_FOLDER_SET, best_metric, history_entries, load_sets, score_sets, table


# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "cuda": Bool(alias="Cuda"), "seed": Int(0), "distributed": Bool(), "sync_bn": Bool(),
    "precision": Choice("auto", *PRECISIONS), "compile": Bool(), "annotation_path": Text(), "input_shape": Shape(),
    "backbone": Choice(*BACKBONES), "model_path": Text(), "pretrained": Bool(), "backbone_path": Text(),
    "resume": Text(), "batch_size": Int(1), "Init_Epoch": Int(0), "Epoch": Int(1), "run_epochs": Int(0),
    "Init_lr": Number(0, above=True), "Min_lr": Opt(Number(0)), "optimizer_type": Choice("adam", "sgd"),
    "momentum": Number(0, 1, below=True), "weight_decay": Number(0), "lr_decay_type": Choice("cos", "step"),
    "warmup_ratio": Number(0), "tail_ratio": Number(0), "sampler": Choice("triplet", "pk"),
    "images_per_person": Int(2), "mining": Choice("none", "semihard", "hard"), "margin": Number(0),
    "free_images": Int(0), "triplet_weight": Number(0), "ce_weight": Number(0),
    "classifier_loss": Choice(*CLASSIFIER_LOSSES), "cls_scale": Number(0), "cls_margin": Number(0),
    "teacher_path": Text(), "distill_weight": Number(0), "distill_pair_weight": Number(0),
    "letterbox_image": Bool(), "augment": Bool(), "val_split": Number(0, 1, below=True), "save_period": Int(1),
    "save_dir": OutputFolder(), "num_workers": Choice("auto") | Int(0), "lfw_eval_flag": Bool(),
    "lfw_dir_path": Text(), "lfw_pairs_path": Text(), "lfw_folds": Text(), "val_sets": Text(), "best_set": Text(),
    "bin_folds": Int(2), "alignment": Choice("auto", "crop", "warp", "none"),
}


def check_settings(cfg: dict, world: int) -> None:
    """Raise a UserError for settings that cannot work, before anything is loaded: each against its rule,
    then the ones that must agree with each other."""
    check_values(cfg, RULES)
    if cfg["sampler"] == "triplet" and cfg["batch_size"] % (3 * world):
        raise TrainingError(f"batch_size {cfg['batch_size']} must be a multiple of 3 x {world} processes")
    if cfg["sampler"] == "pk":
        if cfg["mining"] == "none":
            raise TrainingError("the pk sampler forms no fixed triplets: add --mining semihard or --mining hard")
        if cfg["batch_size"] % world or not cfg["free_images"] < cfg["batch_size"] // world or \
                (cfg["batch_size"] // world - cfg["free_images"]) % cfg["images_per_person"]:
            raise TrainingError(f"batch_size {cfg['batch_size']} over {world} process(es) must give per process "
                                f"free_images {cfg['free_images']} plus a multiple of images_per_person "
                                f"{cfg['images_per_person']}")
    elif cfg["free_images"]:
        raise TrainingError("free_images needs --sampler pk")
    if cfg["backbone"] == "inception_resnetv1" and min(cfg["input_shape"][:2]) < 75:
        raise TrainingError(f"--input_shape {','.join(map(str, cfg['input_shape']))}: inception_resnetv1 needs "
                            "sides of at least 75 pixels")
    if cfg["Min_lr"] > cfg["Init_lr"]:
        raise TrainingError(f"--Min_lr must be at most --Init_lr ({cfg['Init_lr']}), not {cfg['Min_lr']}")
    if cfg["Epoch"] <= cfg["Init_Epoch"]:
        raise TrainingError(f"--Epoch ({cfg['Epoch']}) must exceed --Init_Epoch ({cfg['Init_Epoch']})")


def setup_device(cfg: dict) -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, device); starts the process group under torchrun."""
    cuda = cfg["cuda"] and torch.cuda.is_available()
    if cfg["cuda"] and not cuda and os.environ.get("RANK", "0") == "0":
        print("note: cuda is True but no GPU is available; training on the CPU")
    if not cfg["distributed"]:
        return 0, 1, 0, torch.device("cuda" if cuda else "cpu")
    if "RANK" not in os.environ:
        raise TrainingError("distributed=True needs torchrun, e.g. torchrun --nproc_per_node=2 train.py "
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
        raise TrainingError(f"LFW evaluation: {err}; or train without it: --lfw_eval_flag False") from None


def build_model(cfg: dict, num_classes: int, checkpoint: dict | None, verbose: bool) -> FacenetNet:
    model = FacenetNet(cfg["backbone"], num_classes=num_classes,
                    cosine_classifier=cfg["classifier_loss"] != "softmax")
    if checkpoint is not None:
        if checkpoint["num_classes"] != num_classes:
            raise TrainingError(f"{cfg['resume']}: was trained on {checkpoint['num_classes']} classes but "
                                f"{cfg['annotation_path']} has {num_classes}; resume with the same annotation")
        model.load_state_dict(checkpoint["model"])
    elif cfg["model_path"]:
        load_weights(model, cfg["model_path"], purpose="train", verbose=verbose)
    elif cfg["pretrained"]:
        path = cfg["backbone_path"]
        if not os.path.isfile(path):
            raise TrainingError(f"{path}: no backbone weights; pretrained=True needs the {cfg['backbone']} "
                                "backbone weights there (or --backbone_path FILE); nothing is downloaded")
        load_weights(model, path, purpose="backbone", verbose=verbose)
    return model


def read_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise TrainingError(f"{path}: no such checkpoint to resume; use logs/last_checkpoint.pth of the run")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise TrainingError(f"{path}: not a readable resume checkpoint ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or "optimizer" not in checkpoint:
        raise TrainingError(f"{path}: holds weights only, not a resume checkpoint; use last_checkpoint.pth, "
                            "or start from these weights with --model_path")
    return checkpoint


# Settings a resumed run may change: where things are and how long it goes on. The others define the
# run (model, data, losses, optimiser); changing them mid-run cannot continue the same run.
RESUME_OVERRIDABLE = ("cuda", "Init_Epoch", "Epoch", "run_epochs", "num_workers", "save_period", "save_dir",
                      "annotation_path", "teacher_path", "lfw_eval_flag", "lfw_dir_path", "lfw_pairs_path", "lfw_folds",
                      "compile", "resume", "val_sets", "best_set", "bin_folds")


def resumed_settings(saved: dict, cfg: dict, given: set[str] | None) -> dict:
    """The settings of a resumed run: the checkpoint's, with the overridable ones the user gave.

    ``given`` names the settings given on the command line; None (a call from Python) takes every
    setting of ``cfg`` that differs from the checkpoint as given. A given setting that would change the
    run itself is refused with one line.
    """
    merged = {**cfg, **{k: v for k, v in saved.items() if k in cfg}}
    asked = set(cfg) if given is None else given & set(cfg)
    for name in sorted(asked):
        if cfg[name] == saved.get(name, cfg[name]) and name != "resume":
            continue
        if name not in RESUME_OVERRIDABLE:
            raise TrainingError(f"--{name} cannot change when resuming (the run used {saved.get(name)!r}); "
                                f"drop it, or start a new run without --resume")
        merged[name] = cfg[name]
    return merged


def normalise(cfg: dict) -> dict:
    """Fill in the settings whose default depends on others (Min_lr, backbone_path)."""
    cfg = dict(cfg)
    if cfg["Min_lr"] is not None and not isinstance(cfg["Min_lr"], (int, float)):
        raise TrainingError(f"--Min_lr takes a number, not {cfg['Min_lr']!r}")
    cfg["Min_lr"] = cfg["Init_lr"] * 0.01 if cfg["Min_lr"] is None else float(cfg["Min_lr"])
    cfg["backbone_path"] = cfg["backbone_path"] or os.path.join("model_data", f"{cfg['backbone']}_backbone.pth")
    return cfg


@dataclass
class Session:
    """Everything one training run works with, built once by ``setup``."""

    cfg: dict
    rank: int
    world: int
    device: torch.device
    channels_last: bool
    workers: int                    # data-loading processes (num_workers resolved)
    num_classes: int
    model: FacenetNet               # the module whose weights are saved
    model_train: torch.nn.Module    # the one that is stepped (DDP / SyncBN wrapper or the model)
    optimizer: torch.optim.Optimizer
    lr_at: object
    precision: Precision
    criterion: Criterion
    batches: object
    loader: DataLoader
    val_loader: DataLoader | None
    lfw_pairs: object
    val_sets: list                  # utils.valsets.ValSet, scored after every epoch besides LFW
    alignment: dict | None          # how the training faces were aligned (written beside the weights)

    @property
    def main_rank(self) -> bool:
        return self.rank == 0

    def log(self, *args) -> None:
        if self.main_rank:
            print(*args)


def setup(cfg: dict, checkpoint: dict | None) -> Session:
    """Device, data, model, optimiser, losses and loaders of a run; checks every setting first."""
    rank, world, local_rank, device = setup_device(cfg)
    main_rank = rank == 0
    log = print if main_rank else (lambda *args, **kwargs: None)
    check_settings(cfg, world)
    precision_name = training_precision(cfg["precision"], device)

    annotation = read_training_data(cfg["annotation_path"])
    train_idx, val_idx = split_train_val(len(annotation.paths), cfg["val_split"], cfg["seed"])
    train_index = PersonIndex(annotation.labels, train_idx)
    check_trainable(train_index, len(train_idx), cfg["batch_size"])
    lfw_pairs = load_lfw(cfg) if cfg["lfw_eval_flag"] else None
    val_sets = load_sets(cfg["val_sets"], cfg["bin_folds"], (LFW_FOLDER_SET,) if lfw_pairs else ())
    names = [LFW_FOLDER_SET] * bool(lfw_pairs) + [s.name for s in val_sets]
    if cfg["best_set"] != LFW_FOLDER_SET and cfg["best_set"] not in names:
        raise TrainingError(f"--best_set {cfg['best_set']} is none of the validation sets "
                            f"({', '.join(names) or 'none given'}); give one of them or lfw")
    alignment = training_alignment(annotation, cfg["alignment"])
    teacher = teacher_for(cfg["teacher_path"], annotation.paths, cfg["annotation_path"], 128) \
        if cfg["teacher_path"] else None

    if main_rank:
        print("Settings:")
        print_settings(cfg)
    num_batches, per_rank = len(train_idx) // cfg["batch_size"], cfg["batch_size"] // world
    log(f"Data: {annotation.num_classes} classes, {len(train_idx)} training images "
        f"({len(train_index.anchor_slots)} people with 2+ images), {len(val_idx)} held out; "
        f"{num_batches} steps of {cfg['batch_size']} images per epoch on {world} process(es), device {device}, "
        f"precision {precision_name}")

    seed_everything(cfg["seed"] + rank)
    model = build_model(cfg, annotation.num_classes, checkpoint, verbose=main_rank)
    channels_last = device.type == "cpu"
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    model_train = model
    if cfg["sync_bn"] and world > 1 and device.type == "cuda":
        model_train = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif cfg["sync_bn"]:
        log("note: sync_bn needs distributed training on several GPUs; using plain BatchNorm")
    if world > 1:
        model_train = torch.nn.parallel.DistributedDataParallel(
            model_train, device_ids=[local_rank] if device.type == "cuda" else None)
    model = model_train.module if world > 1 else model_train
    if cfg["compile"]:
        model_train = torch.compile(model_train)

    init_lr, min_lr = fit_lr(cfg["batch_size"], cfg["Init_lr"], cfg["Min_lr"], cfg["optimizer_type"])
    if init_lr != cfg["Init_lr"]:
        log(f"note: learning rate {init_lr:g} (the original's rule: Init_lr {cfg['Init_lr']:g} x batch_size / 64, "
            f"clamped for {cfg['optimizer_type']}), falling to {min_lr:g}")
    optimizer = make_optimizer(model.parameters(), cfg["optimizer_type"], init_lr, cfg["momentum"],
                               cfg["weight_decay"])
    lr_at = lr_scheduler(cfg["lr_decay_type"], init_lr, min_lr, cfg["Epoch"],
                         warmup_iters_ratio=cfg["warmup_ratio"], no_aug_iter_ratio=cfg["tail_ratio"])
    precision = Precision.named(precision_name)
    criterion = Criterion(cfg["margin"], cfg["mining"], cfg["triplet_weight"], cfg["ce_weight"],
                          cfg["classifier_loss"], cfg["cls_scale"], cfg["cls_margin"], teacher,
                          cfg["distill_weight"], cfg["distill_pair_weight"])

    dataset = dataset_for(annotation, cfg["input_shape"], cfg["letterbox_image"], cfg["augment"])
    if cfg["sampler"] == "pk":
        batches = PKBatchSampler(train_index, per_rank, cfg["images_per_person"], num_batches, cfg["seed"],
                                 rank, world, cfg["free_images"] // world)
    else:
        batches = TripletBatchSampler(train_index, per_rank, num_batches, cfg["seed"], rank, world)
    cuda = device.type == "cuda"
    workers = resolve_workers(cfg["num_workers"], cuda)
    if not cuda and workers:
        torch.set_num_threads(network_threads(workers))
    loader = make_loader(dataset, batches, workers, cuda, cfg["seed"])
    val_rows = validation_triplets(dataset.index, val_idx, annotation.labels, cfg["seed"])
    val_batches = ValidationBatchSampler(val_rows, per_rank, rank, world)
    val_loader = make_loader(dataset, val_batches, workers, cuda, cfg["seed"]) if len(val_rows) else None
    if val_loader is None:
        log("note: no validation triplets (val_split too small for this dataset); val_loss is nan")
    return Session(cfg, rank, world, device, channels_last, workers, annotation.num_classes, model, model_train,
                   optimizer, lr_at, precision, criterion, batches, loader, val_loader, lfw_pairs, val_sets, alignment)


def restore(run: Session, checkpoint: dict) -> tuple[int, dict | None, str, list]:
    """Optimiser, scaler and RNG states of a checkpoint; returns (next epoch, best, run folder, history)."""
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if run.precision.scaler is not None and checkpoint.get("scaler"):
        run.precision.scaler.load_state_dict(checkpoint["scaler"])
    start = checkpoint["epoch"] + 1
    if run.cfg["Epoch"] <= start:
        raise TrainingError(f"{run.cfg['resume']}: the run has done {start} epochs already; give a larger "
                            f"--Epoch to train on")
    states = checkpoint["rng"]
    if len(states) == run.world:
        set_rng_state(states[run.rank])
    else:
        run.log(f"note: the checkpoint has RNG states of {len(states)} processes, not {run.world}; reseeding")
        seed_everything(run.cfg["seed"] + run.rank + 1000 * start)
    run.log(f"Resuming {run.cfg['resume']} after epoch {start}")
    return start, checkpoint["best"], checkpoint["run_dir"], checkpoint["history"]


def fit(run: Session, start: int, best: dict | None, history: History | None) -> dict | None:
    """The epoch loop: train, validate, score LFW, save; returns the best epoch so far."""
    cfg = run.cfg
    last = cfg["Epoch"] if not cfg["run_epochs"] else min(cfg["Epoch"], start + cfg["run_epochs"])
    for epoch in range(start, last):
        began = time.perf_counter()
        run.batches.set_epoch(epoch)
        set_lr(run.optimizer, run.lr_at(epoch))
        stats = train_one_epoch(run.model_train, run.loader, run.optimizer, run.criterion, run.device,
                                run.precision, run.channels_last, desc=f"Epoch {epoch + 1}/{cfg['Epoch']}",
                                progress=run.main_rank)
        val = validate(run.model, run.val_loader, run.criterion, run.device, run.precision,
                       run.channels_last) if run.val_loader else {}
        lfw = {}
        if run.lfw_pairs is not None and run.main_rank:
            from utils.lfw import evaluate_lfw
            run.model.eval()
            lfw = evaluate_lfw(run.model, run.lfw_pairs, cfg["input_shape"], cfg["letterbox_image"],
                               cfg["batch_size"], run.device, num_workers=run.workers, progress=True)
            if lfw.get("warning"):
                print(f"LFW: {lfw['warning']}")
        scored = {}
        if run.val_sets and run.main_rank:
            scored = score_sets(run.model, run.val_sets, cfg["input_shape"], cfg["letterbox_image"],
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
            best = save_epoch(cfg, run.model, run.optimizer, run.precision, history, row, best, states,
                              run.num_classes, run.alignment)
        if run.world > 1:
            dist.barrier()
    if last < cfg["Epoch"]:
        run.log(f"Stopped after epoch {last} (run_epochs); continue with --resume "
                f"{os.path.join(cfg['save_dir'], 'last_checkpoint.pth')}")
    return best


def train(cfg: dict, given: set[str] | None = None) -> None:
    """Train with the settings ``cfg``; ``given`` names those set on the command line (see resumed_settings)."""
    cfg = normalise(cfg)
    checkpoint = read_checkpoint(cfg["resume"]) if cfg["resume"] else None
    if checkpoint is not None:
        cfg = resumed_settings(checkpoint["settings"], cfg, given)
    run = setup(cfg, checkpoint)
    start, best, run_dir, rows = cfg["Init_Epoch"], None, None, []
    if checkpoint is not None:
        start, best, run_dir, rows = restore(run, checkpoint)
    run_dir = run_dir or os.path.join(cfg["save_dir"], "loss_" + time.strftime("%Y_%m_%d_%H_%M_%S"))
    history = History(run_dir, rows, tuple(f"{s.name}_accuracy" for s in run.val_sets)) if run.main_rank else None
    best = fit(run, start, best, history)
    if run.main_rank and best is not None:
        print(f"Best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}: "
              f"{os.path.join(cfg['save_dir'], 'best_epoch_weights.pth')}; history in {run_dir}")
    if run.world > 1:
        dist.destroy_process_group()


def save_epoch(cfg: dict, model: FacenetNet, optimizer, precision: Precision, history: History, row: dict,
               best: dict | None, states: list, num_classes: int, alignment: dict | None = None) -> dict:
    """Write the history, the weights files and the resume checkpoint of one epoch; return the best so far."""
    epoch = row["epoch"]
    history.append(row)
    print(f"Epoch {epoch}/{cfg['Epoch']}: loss {row['loss']:.4f}  val_loss {row['val_loss']:.4f}  "
          f"accuracy {row['accuracy']:.4f}  LFW accuracy {row['lfw_accuracy']:.4f}+-{row['lfw_std']:.4f}  "
          f"{row['images_per_s']:.1f} img/s  {row['seconds']:.0f} s")
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_dir = cfg["save_dir"]
    # The facts predict.py and eval_LFW.py need beside each weights file; the threshold only when LFW (the
    # folder, else a set named best_set) measured one; the alignment of the training faces when known.
    lfw = {"lfw_folds": cfg["lfw_folds"], "lfw_accuracy": row["lfw_accuracy"]} \
        if math.isfinite(row["lfw_accuracy"]) else {}
    threshold = row.get("lfw_threshold") if lfw else row.get(f"{cfg['best_set']}_threshold")
    sets = {k: v for k, v in row.items() if k.endswith("_accuracy") and k not in HISTORY_FIELDS}
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
    save_atomic({"model": weights, "optimizer": optimizer.state_dict(),
                 "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
                 "epoch": epoch - 1, "rng": states, "settings": dict(cfg), "history": history.rows,
                 "best": best, "run_dir": history.run_dir, "num_classes": num_classes},
                os.path.join(save_dir, "last_checkpoint.pth"))
    return best


def main() -> None:
    configure(globals())
    given = given_names(globals())
    try:
        train(settings_of(globals()), given)
    except KeyboardInterrupt:
        print(f"interrupted; continue with --resume {os.path.join(save_dir, 'last_checkpoint.pth')}", file=sys.stderr)
        raise


if __name__ == "__main__":
    run_main(main)
