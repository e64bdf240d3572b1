"""Train FaceNet with triplet loss + cross-entropy on the people listed in cls_train.txt.

    python txt_annotation.py                     # datasets/<person>/<image> -> cls_train.txt
    python train.py --annotation_path faces_webface_112x112/train.rec --input_shape 112,112,3 \
        --val_sets faces_webface_112x112 --best_set lfw   # an insightface face pack and its .bin sets
    python train.py --Epoch 50 --batch_size 96   # any setting below as --name value
    python train.py --input_shape 112,112,3      # lists are given comma-separated
    python train.py --resume logs/last_checkpoint.pth   # the same run goes on: its schedule (--Epoch, the
                                                        # learning rates) cannot change; --run_epochs N stops earlier
    torchrun --nproc_per_node=2 train.py --distributed True

Writes to save_dir: ep%03d-loss%.3f-val_loss%.3f.pth every save_period epochs, best_epoch_weights.pth,
last_epoch_weights.pth (plain state_dicts for predict.py / eval_LFW.py), last_checkpoint.pth (everything
needed to resume) and a run folder loss_<date>/ with history.csv and history.png.
"""
#------- settings (edit here or override as --name value) -------
Cuda = True                     # use the GPU when there is one (falls back to the CPU with a note)
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
import os
import sys

from utils.config import configure, run_main, settings_of
from utils.runtime import resolve_workers
from utils.trainer import prepare, run, world_of
from utils.training import TrainingError


def check_settings(cfg: dict, world: int) -> None:
    """Raise TrainingError for settings that cannot work, before anything is loaded."""
    from utils.training import CLASSIFIER_LOSSES  # imported here: a module-level tuple would be a setting
    choices = {"optimizer_type": ("adam", "sgd"), "lr_decay_type": ("cos", "step"), "sampler": ("triplet", "pk"),
               "mining": ("none", "semihard", "hard"), "backbone": ("mobilenet", "inception_resnetv1"),
               "classifier_loss": CLASSIFIER_LOSSES, "alignment": ("auto", "crop", "warp", "none")}
    for name, allowed in choices.items():
        if cfg[name] not in allowed:
            raise TrainingError(f"--{name} must be one of {', '.join(allowed)}, not {cfg[name]!r}")
    resolve_workers(cfg["num_workers"], cuda=False)
    for name, low in (("batch_size", 1), ("Epoch", 1), ("Init_Epoch", 0), ("run_epochs", 0),
                      ("images_per_person", 2), ("save_period", 1), ("bin_folds", 2), ("margin", 0),
                      ("triplet_weight", 0), ("ce_weight", 0), ("weight_decay", 0), ("warmup_ratio", 0),
                      ("tail_ratio", 0),
                      ("distill_weight", 0), ("distill_pair_weight", 0), ("cls_scale", 0), ("cls_margin", 0)):
        if cfg[name] < low:
            raise TrainingError(f"--{name} must be at least {low}, not {cfg[name]}")
    if cfg["sampler"] == "triplet" and cfg["batch_size"] % (3 * world):
        raise TrainingError(f"batch_size {cfg['batch_size']} must be a multiple of 3 x {world} processes")
    if cfg["sampler"] == "pk":
        if cfg["mining"] == "none":
            raise TrainingError("the pk sampler forms no fixed triplets: add --mining semihard or --mining hard")
        if cfg["batch_size"] % world or not 0 <= cfg["free_images"] < cfg["batch_size"] // world or \
                (cfg["batch_size"] // world - cfg["free_images"]) % cfg["images_per_person"]:
            raise TrainingError(f"batch_size {cfg['batch_size']} over {world} process(es) must give per process "
                                f"free_images {cfg['free_images']} plus a multiple of images_per_person "
                                f"{cfg['images_per_person']}")
    elif cfg["free_images"]:
        raise TrainingError("free_images needs --sampler pk")
    if len(cfg["input_shape"]) != 3 or cfg["input_shape"][2] != 3 or min(cfg["input_shape"][:2]) < 32:
        raise TrainingError(f"input_shape must be height,width,3 with sides of at least 32 pixels, e.g. 160,160,3; "
                            f"not {','.join(map(str, cfg['input_shape']))}")
    if not cfg["Init_lr"] > 0 or not 0 <= cfg["Min_lr"] <= cfg["Init_lr"]:
        raise TrainingError(f"--Init_lr must be above 0 and --Min_lr between 0 and Init_lr, not "
                            f"{cfg['Init_lr']} and {cfg['Min_lr']}")
    if not 0 <= cfg["momentum"] < 1:
        raise TrainingError(f"--momentum must be in [0, 1), not {cfg['momentum']}")
    if os.path.exists(cfg["save_dir"]) and not os.path.isdir(cfg["save_dir"]):
        raise TrainingError(f"--save_dir {cfg['save_dir']} is a file; give a folder for the outputs")
    if not 0 <= cfg["val_split"] < 1:
        raise TrainingError(f"val_split must be in [0, 1), not {cfg['val_split']}")
    if cfg["Epoch"] <= cfg["Init_Epoch"]:
        raise TrainingError(f"--Epoch ({cfg['Epoch']}) must exceed --Init_Epoch ({cfg['Init_Epoch']})")


def train(cfg: dict, given: set[str] | None = None) -> None:
    """Train with the settings ``cfg``; ``given`` names those set on the command line (a resumed run takes
    the others from its checkpoint; see utils.trainer.resumed_settings)."""
    cfg, checkpoint = prepare(cfg, given)
    check_settings(cfg, world_of(cfg))
    run(cfg, checkpoint)


def main() -> None:
    configure(globals())
    train(settings_of(globals()), {arg[2:].partition("=")[0] for arg in sys.argv[1:] if arg.startswith("--")})


if __name__ == "__main__":
    run_main(main)
