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
dropout_keep_prob = 0.5         # share of the pooled features kept by the head's dropout in training (1 = none)
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
distill_pair_target = "centred" # similarities matched: the centred teacher's | raw: the raw teacher's,
                                # mapped so that two random faces have 0 (its open-set order kept)
distill_bank_weight = 0.0       # weight of the bank term: the student's softmax over the teacher's descriptors of
                                # all training images pulled towards the teacher's own (utils.distill.bank_loss)
distill_bank_temperature = 0.1  # temperature of those softmaxes (cosines / temperature)
unlabelled_path = ""            # annotation of faces without identities (recipes/make_blends.py); only the
                                # teacher's terms see them (needs teacher_path and the pk sampler)
unlabelled_teacher_path = ""    # their teacher file (recipes/teacher_embeddings.py)
unlabelled_images = 0           # pk: images per batch drawn from them
letterbox_image = True          # keep the aspect ratio with grey padding; False = plain resize
augment = False                 # light augmentation (scale, shift, rotation, colour) on top of the flip
augment_strength = 1.0          # widens augment's ranges by this factor (2: scale 0.8-1.2, shift 10%, 10 degrees)
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

from nets.facenet import BACKBONES
from utils.config import (Bool, Choice, Int, Number, Opt, OutputFolder, Shape, Text, UserError, check_values,
                          configure, given_names, run_main, settings_of)
from utils.runtime import PRECISIONS
from utils.trainer import prepare, run, world_of
from utils.training import CLASSIFIER_LOSSES


# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "cuda": Bool(alias="Cuda"), "seed": Int(0), "distributed": Bool(), "sync_bn": Bool(),
    "precision": Choice("auto", *PRECISIONS), "compile": Bool(), "annotation_path": Text(), "input_shape": Shape(),
    "backbone": Choice(*BACKBONES), "dropout_keep_prob": Number(0, 1, above=True), "model_path": Text(),
    "pretrained": Bool(), "backbone_path": Text(),
    "resume": Text(), "batch_size": Int(1), "Init_Epoch": Int(0), "Epoch": Int(1), "run_epochs": Int(0),
    "Init_lr": Number(0, above=True), "Min_lr": Opt(Number(0)), "optimizer_type": Choice("adam", "sgd"),
    "momentum": Number(0, 1, below=True), "weight_decay": Number(0), "lr_decay_type": Choice("cos", "step"),
    "warmup_ratio": Number(0), "tail_ratio": Number(0), "sampler": Choice("triplet", "pk"),
    "images_per_person": Int(2), "mining": Choice("none", "semihard", "hard"), "margin": Number(0),
    "free_images": Int(0), "triplet_weight": Number(0), "ce_weight": Number(0),
    "classifier_loss": Choice(*CLASSIFIER_LOSSES), "cls_scale": Number(0), "cls_margin": Number(0),
    "teacher_path": Text(), "distill_weight": Number(0), "distill_pair_weight": Number(0),
    "distill_pair_target": Choice("centred", "raw"), "distill_bank_weight": Number(0),
    "distill_bank_temperature": Number(0, above=True), "unlabelled_path": Text(),
    "unlabelled_teacher_path": Text(), "unlabelled_images": Int(0), "letterbox_image": Bool(), "augment": Bool(),
    "augment_strength": Number(0, above=True), "val_split": Number(0, 1, below=True), "save_period": Int(1),
    "save_dir": OutputFolder(), "num_workers": Choice("auto") | Int(0), "lfw_eval_flag": Bool(),
    "lfw_dir_path": Text(), "lfw_pairs_path": Text(), "lfw_folds": Text(), "val_sets": Text(), "best_set": Text(),
    "bin_folds": Int(2), "alignment": Choice("auto", "crop", "warp", "none"),
}


def check_settings(cfg: dict, world: int) -> None:
    """Raise a UserError for settings that cannot work, before anything is loaded: each against its rule,
    then the ones that must agree with each other."""
    check_values(cfg, RULES)
    if cfg["sampler"] == "triplet" and cfg["batch_size"] % (3 * world):
        raise UserError(f"batch_size {cfg['batch_size']} must be a multiple of 3 x {world} processes")
    extra = cfg["free_images"] + cfg["unlabelled_images"]
    if cfg["sampler"] == "pk":
        if cfg["mining"] == "none":
            raise UserError("the pk sampler forms no fixed triplets: add --mining semihard or --mining hard")
        per_process = [cfg[name] // world for name in ("batch_size", "free_images", "unlabelled_images")]
        if any(cfg[name] % world for name in ("batch_size", "free_images", "unlabelled_images")) or \
                not sum(per_process[1:]) < per_process[0] or \
                (per_process[0] - sum(per_process[1:])) % cfg["images_per_person"]:
            raise UserError(f"batch_size {cfg['batch_size']}, free_images {cfg['free_images']} and unlabelled_images "
                            f"{cfg['unlabelled_images']}, split over {world} process(es), must leave each process "
                            f"a multiple of images_per_person {cfg['images_per_person']} besides its free and "
                            "unlabelled images")
    elif extra:
        raise UserError(f"{'free_images' if cfg['free_images'] else 'unlabelled_images'} needs --sampler pk")
    given = [bool(cfg[name]) for name in ("unlabelled_path", "unlabelled_teacher_path", "unlabelled_images")]
    if any(given) and not (all(given) and cfg["teacher_path"]):
        raise UserError("unlabelled faces need all of --unlabelled_path, --unlabelled_teacher_path, "
                        "--unlabelled_images (above 0) and --teacher_path")
    if cfg["backbone"] == "inception_resnetv1" and min(cfg["input_shape"][:2]) < 75:
        raise UserError(f"--input_shape {','.join(map(str, cfg['input_shape']))}: inception_resnetv1 needs "
                            "sides of at least 75 pixels")
    if cfg["Min_lr"] > cfg["Init_lr"]:
        raise UserError(f"--Min_lr must be at most --Init_lr ({cfg['Init_lr']}), not {cfg['Min_lr']}")
    if cfg["Epoch"] <= cfg["Init_Epoch"]:
        raise UserError(f"--Epoch ({cfg['Epoch']}) must exceed --Init_Epoch ({cfg['Init_Epoch']})")


def train(cfg: dict, given: set[str] | None = None) -> None:
    """Train with the settings ``cfg``; ``given`` names those set on the command line (a resumed run takes
    the others from its checkpoint; see utils.trainer.resumed_settings)."""
    cfg, checkpoint = prepare(cfg, given)
    check_settings(cfg, world_of(cfg))
    run(cfg, checkpoint)


def main() -> None:
    configure(globals())
    train(settings_of(globals()), given_names(globals()))


if __name__ == "__main__":
    run_main(main)
