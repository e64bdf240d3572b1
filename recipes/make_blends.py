"""Make new, unlabelled faces from pairs of training faces, for the teacher to describe.

The student matches the teacher on its 15k training faces far better than on people it never saw; more
faces are the lever, and the teacher can describe any face, known or not. Two aligned crops of different
people make one new face here: ``mix`` blends them (weight 0.2-0.8 of the first), ``cut`` joins the upper
face of one (eyes, brows) to the lower face of the other at a random height of 55-68% (below the eyes) with an 8-pixel
ramp. The images, one annotation per kind and one for both (``<output_dir>/{mix,cut,all}.txt``, every id 0)
and where each face came from (``sources.csv``) go to ``output_dir``; then describe them and train with them:

    python -m recipes.make_blends --annotation_path cls_pilot.txt --output_dir blends
    python -m recipes.teacher_embeddings --annotation_path blends/all.txt --output_path blends/teacher_dlib.npz
    python train.py ... --unlabelled_path blends/mix.txt --unlabelled_teacher_path blends/teacher_dlib.npz \
        --unlabelled_images 16

Pairs come from ``annotation_path`` alone, so blends of cls_pilot.txt (no LFW people of sets 6-10) serve the
pilots and the shipped run alike. Run from the repository root.
"""
#------- settings (edit here or override as --name value) -------
annotation_path = "cls_pilot.txt"   # the faces to blend (aligned crops of one size)
output_dir = "blends"
per_kind = 4000                     # new faces of each kind
seed = 21
#------------------------------------------------------------------
import os

import numpy as np
from PIL import Image

from utils.checkpoint import write_text_atomic
from utils.config import Int, OutputFolder, Text, UserError, configure, print_settings, run_main, settings_of
from utils.dataloader import read_annotation
from utils.image import open_rgb

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {"annotation_path": Text(), "output_dir": OutputFolder(), "per_kind": Int(1), "seed": Int(0)}
KINDS = {"mix": (0.2, 0.8), "cut": (0.55, 0.68)}   # each kind's range of amount (see blend)
RAMP = 8  # pixels over which a cut goes from one face to the other


def blend(first: np.ndarray, second: np.ndarray, kind: str, amount: float) -> np.ndarray:
    """One new face (HWC uint8) from two crops of one size: ``mix``: ``amount`` of the first plus the rest
    of the second; ``cut``: the first above row ``amount`` x height, the second below, joined by a ramp."""
    if kind == "mix":
        weight = np.full((first.shape[0], 1, 1), amount)
    else:
        rows = np.arange(first.shape[0])[:, None, None]
        weight = np.clip((amount * first.shape[0] + RAMP / 2 - rows) / RAMP, 0.0, 1.0)
    mixed = weight * first.astype(np.float64) + (1.0 - weight) * second.astype(np.float64)
    return np.rint(mixed).astype(np.uint8)


def draw_pairs(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` pairs (i, j) of image indices of different people."""
    pairs = np.empty((0, 2), dtype=np.int64)
    while len(pairs) < count:
        draws = rng.integers(len(labels), size=(2 * count, 2))
        pairs = np.concatenate([pairs, draws[labels[draws[:, 0]] != labels[draws[:, 1]]]])
    return pairs[:count]


def main() -> None:
    print_settings(settings_of(globals()))
    annotation = read_annotation(annotation_path)
    if len(np.unique(annotation.labels)) < 2:
        raise UserError(f"{annotation_path}: blends need images of at least two people")
    rng = np.random.default_rng(seed)
    lines = {kind: [] for kind in KINDS}
    sources = ["face,kind,first,second,amount"]
    for kind in KINDS:
        os.makedirs(os.path.join(output_dir, kind), exist_ok=True)
        pairs = draw_pairs(annotation.labels, per_kind, rng)
        amounts = rng.uniform(*KINDS[kind], size=per_kind)
        for n, ((i, j), amount) in enumerate(zip(pairs.tolist(), amounts.tolist())):
            first, second = np.asarray(open_rgb(annotation.paths[i])), np.asarray(open_rgb(annotation.paths[j]))
            if first.shape != second.shape:
                raise UserError(f"{annotation.paths[i]} and {annotation.paths[j]} differ in size; blend aligned "
                                "crops of one size (align_dataset.py)")
            name = f"{kind}/{n:06d}.jpg"
            Image.fromarray(blend(first, second, kind, amount)).save(os.path.join(output_dir, name + ".tmp"),
                                                                     format="JPEG", quality=95)
            os.replace(os.path.join(output_dir, name + ".tmp"), os.path.join(output_dir, name))
            lines[kind].append(f"0;{name}")
            first_path, second_path = (os.path.relpath(annotation.paths[k]) for k in (i, j))
            sources.append(f"{name},{kind},{first_path},{second_path},{amount:.4f}")
    for kind in KINDS:
        write_text_atomic(os.path.join(output_dir, f"{kind}.txt"), "\n".join(lines[kind]) + "\n")
    write_text_atomic(os.path.join(output_dir, "all.txt"), "\n".join(lines["mix"] + lines["cut"]) + "\n")
    write_text_atomic(os.path.join(output_dir, "sources.csv"), "\n".join(sources) + "\n")
    print(f"{output_dir}: {per_kind} faces of each kind ({', '.join(KINDS)}) from {annotation_path}")


if __name__ == "__main__":
    configure(globals())
    run_main(main)
