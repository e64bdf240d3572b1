"""How far the student is from its teacher on the images it trained on, and on people it never saw.

    python -m recipes.student_gap --lfw_sets 8,9,10      # the shipped weights, people held out from training

Distillation pulls the student's embedding of every training image towards the teacher's centred
descriptor of it. If the student is as far from the teacher on unseen people as on its training images,
it has not yet fitted what it was shown (a longer run, a bigger student); if it is much further on unseen
people, it has learnt the training images rather than the teacher's map (more faces). For ``images``
random training images and ``images`` random aligned LFW images of the people of ``lfw_sets``, printed:
the mean and 90th percentile of 1 - cos between the student's embedding and the teacher's descriptor,
centred as distillation uses it (on the mean of the teacher file).
"""
#------- settings (edit here or override as --name value) -------
model_path = "model_data/facenet_mobilenet.pth"
input_shape = None                          # None: from <model_path without .pth>.json
annotation_path = "cls_train.txt"           # the weights' training annotation (txt_annotation.py)
teacher_path = "datasets/teacher_dlib.npz"  # its teacher file (recipes/teacher_embeddings.py): the centre
lfw_dir_path = "lfw"                        # aligned LFW: <name>/<name>_0001.jpg ...
lfw_people_path = "model_data/lfw_people.txt"
lfw_sets = [8, 9, 10]                       # people.txt sets of the unseen people (not in the annotation)
images = 300                                # random images of each side
models_dir = ""                             # folder with dlib's .dat files; "" = the face_recognition_models package
margin_ratio = 0.2                          # margin / image_size of the aligned crops (32 / 160 by default)
seed = 0
#------------------------------------------------------------------
import os

import numpy as np

from facenet import DEFAULT_INPUT_SHAPE
from nets.facenet import FacenetNet
from recipes.eval_identification import person_images
from recipes.make_trainset import read_people_sets
from recipes.teacher_embeddings import descriptors, face_chip, find_models, start_worker
from recipes.teacher_views import one_minus_cos, summary
from utils.checkpoint import load_weights, model_settings
from utils.config import (Int, List, Number, Opt, Shape, Text, UserError, configure, print_settings, run_main,
                          settings_of)
from utils.dataloader import read_annotation
from utils.distill import teacher_rows
from utils.image import ImageError, open_rgb
from utils.lfw import embed_paths

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {"model_path": Text(), "input_shape": Opt(Shape()), "annotation_path": Text(), "teacher_path": Text(),
         "lfw_dir_path": Text(), "lfw_people_path": Text(), "lfw_sets": List(Int(1, 10)), "images": Int(1),
         "models_dir": Text(), "margin_ratio": Number(0, 1, below=True), "seed": Int(0)}


def unseen_images(trained: set[str]) -> list[str]:
    """The aligned LFW images of the people of ``lfw_sets``; none of them may be in training."""
    sets = read_people_sets(lfw_people_path)
    people = [name for s in lfw_sets for name in sets[s - 1]]
    seen = sorted(trained.intersection(people))
    if seen:
        raise UserError(f"{annotation_path}: trains on {len(seen)} people of sets {lfw_sets} (first: {seen[0]}); "
                        "give sets whose people it does not hold")
    return [path for paths in person_images(lfw_dir_path, people).values() for path in paths]


def teacher_of(paths: list[str]) -> np.ndarray:
    """The teacher's raw descriptors of the aligned crops ``paths`` (as stored in the teacher file)."""
    try:
        return descriptors([face_chip(np.asarray(open_rgb(p)), margin_ratio) for p in paths])
    except ImageError as err:
        raise UserError(f"{err}; fix or replace that file") from None


def main() -> None:
    print_settings(settings_of(globals()))
    annotation = read_annotation(annotation_path)
    stored = teacher_rows(teacher_path, annotation.paths, annotation_path, 128).numpy()
    centre = stored.reshape(-1, stored.shape[2]).mean(0)
    unseen = unseen_images({os.path.basename(os.path.dirname(p)) for p in annotation.paths})
    rng = np.random.default_rng(seed)
    sides = {"training images": rng.choice(annotation.paths, min(images, len(annotation.paths)), replace=False),
             f"unseen people (LFW sets {','.join(map(str, lfw_sets))})":
                 rng.choice(unseen, min(images, len(unseen)), replace=False)}
    found = model_settings(model_path, None, input_shape, None, DEFAULT_INPUT_SHAPE)
    model = FacenetNet(found.backbone)
    load_weights(model, model_path, purpose="predict", verbose=False)
    start_worker(find_models(models_dir))
    print(f"1 - cos between {model_path}'s embedding and the centred teacher's descriptor "
          f"({found.input_shape[0]}x{found.input_shape[1]}):")
    for name, paths in sides.items():
        paths = paths.tolist()
        student = embed_paths(model, paths, found.input_shape, True, 64, "cpu", progress=False)
        print(f"  {name:<32} {len(paths)} images: {summary(one_minus_cos(student, teacher_of(paths) - centre))}")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
