"""How far the teacher's descriptor moves when train.py's augmentation changes the view.

    python -m recipes.teacher_views --annotation_path cls_train.txt --teacher_path datasets/teacher_dlib.npz

Distillation pulls every augmented view towards the teacher's descriptor of the plain crop (or of its
mirror). Targets computed per augmented view only help if the teacher itself sees those views
differently. For ``images`` random training images the teacher describes the crop and ``views``
augmented views of it (utils.dataloader.light_augment, as ``train.py --augment True --augment_strength
strength``); printed: the mean and 90th percentile of 1 - cos between a view's descriptor and the crop's,
raw and centred as distillation uses them (the centre of the teacher file), beside 1 - cos between two
images of one person.
"""
#------- settings (edit here or override as --name value) -------
annotation_path = "cls_train.txt"           # the training annotation (txt_annotation.py)
teacher_path = "datasets/teacher_dlib.npz"  # its teacher file (recipes/teacher_embeddings.py): the centre
images = 300                                # random training images described
views = 3                                   # augmented views of each
strength = 1.0                              # train.py's augment_strength of the views
models_dir = ""                             # folder with dlib's .dat files; "" = the face_recognition_models package
margin_ratio = 0.2                          # margin / image_size of the aligned crops (32 / 160 by default)
seed = 0
#------------------------------------------------------------------
import numpy as np

from recipes.teacher_embeddings import descriptors, face_chip, find_models, start_worker
from utils.config import Int, Number, Text, UserError, configure, print_settings, run_main, settings_of
from utils.dataloader import light_augment, read_annotation
from utils.distill import teacher_rows
from utils.image import ImageError, open_rgb

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {"annotation_path": Text(), "teacher_path": Text(), "images": Int(2), "views": Int(1),
         "strength": Number(0, above=True), "models_dir": Text(), "margin_ratio": Number(0, 1, below=True),
         "seed": Int(0)}


def one_minus_cos(a: np.ndarray, b: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """1 - cos between rows of ``a`` and ``b`` (broadcast), after subtracting ``centre`` when given."""
    if centre is not None:
        a, b = a - centre, b - centre
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return 1.0 - (a * b).sum(-1)


def summary(shift: np.ndarray) -> str:
    return f"mean {shift.mean():.4f}, 90th percentile {np.quantile(shift, 0.9):.4f}"


def main() -> None:
    print_settings(settings_of(globals()))
    annotation = read_annotation(annotation_path)
    stored = teacher_rows(teacher_path, annotation.paths, annotation_path, 128).numpy()  # annotation order
    centre = stored.reshape(-1, stored.shape[2]).mean(0)
    start_worker(find_models(models_dir))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(annotation.paths), min(images, len(annotation.paths)), replace=False)
    plain, augmented = [], []
    for i in chosen.tolist():
        try:
            image = open_rgb(annotation.paths[i])
        except ImageError as err:
            raise UserError(f"{err}; fix it or run txt_annotation.py again") from None
        crops = [image] + [light_augment(image, rng, strength) for _ in range(views)]
        found = descriptors([face_chip(np.asarray(crop), margin_ratio) for crop in crops])
        plain.append(found[0])
        augmented.append(found[1:])
    plain, augmented = np.stack(plain), np.stack(augmented)
    others = []
    for i in chosen.tolist():
        same = np.flatnonzero(annotation.labels == annotation.labels[i])
        same = same[same != i]
        if len(same):
            others.append((i, same[0]))
    if not others:
        raise UserError(f"{annotation_path}: none of the chosen images' people has a second image")
    others = np.array(others)
    print(f"{len(chosen)} images x {views} augmented views (strength {strength:g}), "
          "1 - cos to the plain crop's descriptor:")
    print(f"  raw                            {summary(one_minus_cos(augmented, plain[:, None]))}")
    print(f"  centred (distillation targets) {summary(one_minus_cos(augmented, plain[:, None], centre))}")
    print(f"  centred, two images of one person ({len(others)} pairs, teacher file): "
          f"{summary(one_minus_cos(stored[others[:, 0], 0], stored[others[:, 1], 0], centre))}")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
