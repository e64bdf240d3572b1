"""Compute the distillation teacher's descriptor of every training image and of its mirror image, once.

    pip install dlib-bin face_recognition_models==0.3.0     # this step only; not in requirements.txt
    python -m recipes.teacher_embeddings --annotation_path cls_train.txt --output_path datasets/teacher_dlib.npz

The teacher is dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1.dat, 128-d, CC0),
with dlib's own 5-point shape predictor and its 150x150 face chip. The inputs are the aligned crops the
student trains on (align_dataset.py, crop mode): the face box of such a crop is its centre without the
margin, which is where dlib looks for the landmarks. The mirror's descriptor is that of the mirrored
chip. Output: utils/distill.py's teacher file; images that cannot be read are listed in it and printed.
Partial results are saved every `save_every` images, so an interrupted run resumes where it stopped.

The teacher finds its own landmarks and chip in every crop, so its descriptor belongs to the photo, not to
the crop (1 - cos 0.018 between views, recipes/teacher_views.py): for the same photos aligned another way
(align_dataset.py --mode warp) ``--same_photos_path datasets/teacher_dlib.npz`` copies the descriptors of
each image with the same person folder and file name instead of describing them again.
"""
#------- settings (edit here or override as --name value) -------
annotation_path = "cls_train.txt"   # the training annotation (txt_annotation.py)
output_path = "datasets/teacher_dlib.npz"
models_dir = ""                     # folder with the two dlib .dat files; "" = the face_recognition_models package
margin_ratio = 0.2                  # margin / image_size of the aligned crops (32 / 160 by default)
num_workers = 2                     # processes (dlib runs one thread each)
save_every = 1024                   # images between saved partial results
same_photos_path = ""               # a teacher file of the same photos aligned another way: copy its descriptors
                                    # (matched by person folder and file name) instead of running dlib
#------------------------------------------------------------------
import os
import sys
from multiprocessing import get_context

import numpy as np

from utils.config import Int, Number, OutputFile, Text, configure, fail, print_settings, settings_of
from utils.dataloader import AnnotationError, read_annotation
from utils.distill import TeacherError, read_teacher, save_teacher, teacher_key
from utils.image import ImageError, open_rgb

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {"annotation_path": Text(), "output_path": OutputFile(".npz"), "models_dir": Text(),
         "margin_ratio": Number(0, 1, below=True), "num_workers": Int(1), "save_every": Int(1),
         "same_photos_path": Text()}

RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARK_FILE = "shape_predictor_5_face_landmarks.dat"
_models = None


def find_models(folder: str) -> str:
    """The folder of dlib's model files: the given one, else inside the face_recognition_models package."""
    if not folder:
        import importlib.util
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            fail("the teacher needs dlib and its models: pip install dlib-bin face_recognition_models==0.3.0 "
                 "(or give --models_dir)")
        folder = os.path.join(list(spec.submodule_search_locations)[0], "models")
    for name in (RECOGNITION_FILE, LANDMARK_FILE):
        if not os.path.isfile(os.path.join(folder, name)):
            fail(f"{os.path.join(folder, name)}: missing; install face_recognition_models==0.3.0 or give --models_dir")
    return folder


def start_worker(folder: str) -> None:
    global _models
    import dlib
    _models = (dlib.shape_predictor(os.path.join(folder, LANDMARK_FILE)),
               dlib.face_recognition_model_v1(os.path.join(folder, RECOGNITION_FILE)))


def face_chip(image: np.ndarray, ratio: float) -> np.ndarray:
    """dlib's 150x150 chip of an aligned crop (HWC uint8): 5 landmarks found in the crop's centre
    without the margin (``ratio`` = margin / image size); needs start_worker in this process."""
    import dlib
    h, w = image.shape[:2]
    box = dlib.rectangle(int(w * ratio / 2), int(h * ratio / 2), int(w * (1 - ratio / 2)), int(h * (1 - ratio / 2)))
    return dlib.get_face_chip(image, _models[0](image, box), size=150, padding=0.25)


def descriptors(chips: list[np.ndarray]) -> np.ndarray:
    """The teacher's raw descriptors (n, 128) float32 of 150x150 chips; needs start_worker in this process."""
    return np.asarray(_models[1].compute_face_descriptor(chips), np.float32).reshape(len(chips), -1)


def describe(job: tuple[list[str], float, bool]) -> tuple[np.ndarray, list[str]]:
    """Descriptors (n, views, 128) of the images (and of their mirrors when ``mirrors``: views 2, else 1);
    NaN rows and a reason for failures."""
    paths, ratio, mirrors = job
    chips, failed = [], []
    for path in paths:
        try:
            image = np.asarray(open_rgb(path))
        except ImageError as err:
            failed.append(str(err))
            chips.append(None)
            continue
        chips.append(face_chip(image, ratio))
        failed.append("")
    good = [c for c in chips if c is not None]
    views = 2 if mirrors else 1
    out = np.full((len(paths), views, 128), np.nan, np.float32)
    if good:
        flipped = [np.ascontiguousarray(c[:, ::-1]) for c in good] if mirrors else []
        found = descriptors(good + flipped).reshape(views, len(good), -1).transpose(1, 0, 2)
        out[[i for i, c in enumerate(chips) if c is not None]] = found
    return out, failed


def describe_paths(paths: list[str], models_dir: str = "", margin_ratio: float = 0.2,
                   num_workers: int = 2) -> np.ndarray:
    """The teacher's L2-normalised descriptors (N, 128) of the aligned crops ``paths`` (raw, not
    centred), computed in ``num_workers`` processes; stops with one line when an image cannot be read."""
    folder = find_models(models_dir)
    chunks = [paths[s:s + 32] for s in range(0, len(paths), 32)]
    with get_context("spawn").Pool(max(1, num_workers), start_worker, (folder,)) as pool:
        results = pool.map(describe, [(chunk, margin_ratio, False) for chunk in chunks])
    failed = [reason for _, reasons in results for reason in reasons if reason]
    if failed:
        fail(f"the teacher could not read {len(failed)} images (first: {failed[0]})")
    plain = np.concatenate([vectors[:, 0] for vectors, _ in results])
    return plain / np.linalg.norm(plain, axis=1, keepdims=True)


def photo_of(key: str) -> str:
    """``person/file`` of a teacher key: what two alignments of one photo have in common."""
    return "/".join(key.split("/")[-2:])


def copy_same_photos(keys: list[str]) -> None:
    """Write output_path from same_photos_path's descriptors of the photos behind ``keys``."""
    try:
        old_keys, old, _ = read_teacher(same_photos_path)
    except TeacherError as err:
        fail(err)
    row = {photo_of(k): i for i, k in enumerate(old_keys)}
    absent = [k for k in keys if photo_of(k) not in row]
    if absent:
        fail(f"{same_photos_path}: no descriptor of {len(absent)} of {len(keys)} photos of {annotation_path} "
             f"(first: {absent[0]}); describe them without --same_photos_path")
    save_teacher(output_path, keys, old[[row[photo_of(k)] for k in keys]], [])
    print(f"{output_path}: descriptors of {len(keys)} images and their mirrors, copied from {same_photos_path}")


def main() -> None:
    print_settings(settings_of(globals()))
    try:
        annotation = read_annotation(annotation_path)
    except AnnotationError as err:
        fail(err)
    keys = [teacher_key(p, annotation_path) for p in annotation.paths]
    if same_photos_path:
        copy_same_photos(keys)
        return
    folder = find_models(models_dir)
    partial = output_path + ".partial.npz"
    done: dict[str, np.ndarray] = {}
    missing: list[str] = []
    if os.path.isfile(partial):
        try:
            old_keys, old, missing = read_teacher(partial)
        except TeacherError as err:
            fail(f"{err} (or delete {partial} to start over)")
        done = dict(zip(old_keys, old))
        print(f"resuming: {len(done)} images done in {partial}")
    todo = [i for i, k in enumerate(keys) if k not in done and k not in missing]
    chunks = [todo[s:s + 32] for s in range(0, len(todo), 32)]
    from tqdm import tqdm
    bar = tqdm(total=len(todo), desc="teacher", unit="img")
    since = 0
    with get_context("spawn").Pool(max(1, num_workers), start_worker, (folder,)) as pool:
        results = pool.imap(describe, [([annotation.paths[i] for i in c], margin_ratio, True) for c in chunks])
        for chunk, (vectors, failed) in zip(chunks, results):
            for i, vector, reason in zip(chunk, vectors, failed):
                if reason:
                    missing.append(keys[i])
                    tqdm.write(f"no descriptor: {reason}")
                else:
                    done[keys[i]] = vector
            bar.update(len(chunk))
            since += len(chunk)
            if since >= save_every:
                since = 0
                save_teacher(partial, list(done), np.stack(list(done.values())), missing)
    bar.close()
    ordered = [k for k in keys if k in done]
    if not ordered:
        fail(f"{annotation_path}: the teacher described none of its images; see the lines above")
    save_teacher(output_path, ordered, np.stack([done[k] for k in ordered]), missing)
    if os.path.isfile(partial):
        os.remove(partial)
    print(f"{output_path}: descriptors of {len(ordered)} images and their mirrors; {len(missing)} without"
          + (f" (first: {', '.join(missing[:3])})" if missing else ""))


if __name__ == "__main__":
    configure(globals())
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
