"""Compare two face images: prints the distance of their embeddings and whether they are one person.

    python predict.py                                 # asks for image pairs until Ctrl-C or Ctrl-D
    python predict.py img/1_001.jpg img/1_002.jpg     # one pair; exit status 2 on a bad file
    python predict.py --mode identify --gallery_dir known PHOTO           # who is each face of PHOTO?
    python predict.py --mode dir --gallery_dir known --dir_path photos --csv_path out.csv
    python predict.py --mode video --gallery_dir known --video_path clip.mp4 --video_save_path out.mp4
    python predict.py --mode video --gallery_dir known --video_path 0 --detect_interval 3   # a camera
    python predict.py --mode fps --fps_image_path img/1_001.jpg                    # seconds per photo
    python predict.py --mode dir_predict --gallery_dir known --dir_origin_path img/ --dir_save_path img_out/

Raw photos are detected and aligned like the training data; face crops are used as they are.
"""
#------- settings (edit here or override as --name value) -------
mode = "verify"                                  # verify: two photos; identify: faces of one photo; dir: a folder
gallery_dir = "known"                            # identify/dir: known people, <person>/<image> or flat <name>_<n>.jpg
gallery_path = "model_data/gallery.npz"          # identify/dir: their embeddings, updated when gallery_dir changes
dir_path = "photos"                              # dir: the folder of photos to identify
csv_path = "identify.csv"                        # dir: one row per face (file, box, name, distance)
max_stranger_rate = 0.01                         # identify/dir: share of strangers allowed a name; sets the threshold
video_path = "0"                                 # video: a video file, a camera index (0, 1, ...) or a stream URL
video_save_path = ""                             # video: save the annotated video here (.mp4 or .avi); "": not saved
video_fps = 0.0                                  # video: frame rate of the saved video; 0: the source's
detect_interval = 1                              # video: detect and name faces every n-th frame, follow them between
min_face_size = 40                               # video/fps: smallest face searched for, in pixels (smaller: slower)
fps_image_path = "img/1_001.jpg"                 # fps: the photo whose detection, alignment and embedding are timed
test_interval = 100                              # fps: how many calls are timed
dir_origin_path = "img/"                         # dir_predict: the folder of images to draw boxes and names on
dir_save_path = "img_out/"                       # dir_predict: where the drawn images go, under the same names
# The model's settings are facenet.py's (Facenet._defaults, described there), given here as --name value too:
# model_path, backbone, input_shape, letterbox_image, cuda, threshold, align, flip, figure, figure_path,
# precision, onnx_path. python predict.py -h lists them with their defaults.
#------------------------------------------------------------------
import os
import sys
from typing import Callable

import numpy as np
from PIL import Image

from facenet import Facenet, facenet_kwargs, is_interactive_backend
from utils import gallery as galleries
from utils import identify
from utils.checkpoint import figure_extensions, read_weights_info, save_figure, weights_info_path
from utils.config import (Choice, Int, Number, OutputFile, OutputFolder, Text, UserError, configure,
                          given_names, print_settings, run_main, settings_of)
from utils.image import ImageError, is_image_file, open_rgb

MODES = ("verify", "identify", "dir", "video", "fps", "dir_predict")

# The model's settings, declared once in facenet.py, become settings of this script.
globals().update({k: v for k, v in Facenet._defaults.items() if k != "verbose"})
# What each setting accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "mode": Choice(*MODES), "gallery_dir": Text(),
    "gallery_path": OutputFile(".npz", when=("mode", "identify", "dir", "video", "dir_predict")),
    "dir_path": Text(), "csv_path": OutputFile(".csv", when=("mode", "dir", "video")),
    "max_stranger_rate": Number(0, 0.5, above=True),
    "video_path": Text(), "video_save_path": Text(), "video_fps": Number(0, 1000), "detect_interval": Int(1),
    "min_face_size": Number(12, 10000), "fps_image_path": Text(), "test_interval": Int(1),
    "dir_origin_path": Text(), "dir_save_path": OutputFolder(when=("mode", "dir_predict")),
    **{k: rule for k, rule in Facenet._rules.items() if k != "verbose"},
    "figure_path": OutputFile(figure_extensions, when="figure"),
}


def user_path(text: str) -> str:
    """The file a user meant: also accepts surrounding quotes or spaces, ``~`` and Windows separators."""
    if os.path.exists(text):
        return text
    path = text.strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":
        path = path[1:-1]
    candidates = [path, os.path.expanduser(path)]
    if os.sep == "/":
        candidates.append(path.replace("\\", "/"))
    return next((c for c in candidates if os.path.exists(c)), path)


def ask(prompt: str, read: Callable[[str], object]) -> object:
    """Prompt until ``read`` accepts what the user typed (as a path); EOFError and KeyboardInterrupt pass through."""
    while True:
        text = input(prompt)
        if not text.strip():
            print("error: type an image file name (Ctrl-D or Ctrl-C to quit)", file=sys.stderr)
            continue
        try:
            return read(user_path(text))
        except ImageError as err:
            print(f"error: {err}", file=sys.stderr)


def check_outputs(outputs: dict[str, str], inputs: list[str], photo_folders: list[str]) -> None:
    """Stop before any work when an output (setting name -> path) is an input of this run, or an image
    inside a folder of photos the next run would read. (Whether it can be written at all, RULES checked.)"""
    for name, path in outputs.items():
        target = os.path.realpath(path)
        if any(os.path.realpath(item) == target for item in inputs if item):
            raise UserError(f"--{name} {path}: is also an input of this run; choose another file")
        inside = [d for d in photo_folders if os.path.commonpath([os.path.realpath(d), target]) == os.path.realpath(d)]
        if is_image_file(path) and inside:
            raise UserError(f"--{name} {path}: is inside the folder of photos {inside[0]}, which would read it "
                            "as a photo; choose a path elsewhere")


# --- verify: two photos ---------------------------------------------------------------------------

def compare(model: Facenet, image_1, image_2) -> None:
    """Print the distance and the verdict, after the warning when the embeddings cannot be trusted."""
    comparison, shown = model._compare(image_1, image_2)
    if comparison.warning:
        print(f"warning: {comparison.warning}")
    if model.figure:
        model.show(comparison, shown)
    print(f"Distance: {comparison.distance:.3f} -> {comparison.verdict} (threshold {model.threshold:.3f})")


def run_video_modes(paths: list[str]) -> None:
    """video, fps and dir_predict (utils/video.py), with this model and the gallery's names."""
    from functools import partial
    from utils import video
    if paths:
        raise UserError(f"--mode {mode} takes no image files; give --video_path, --fps_image_path or "
                        "--dir_origin_path")
    # --csv_path has a default for dir mode: video writes its CSV only when --csv_path is given.
    video_csv = csv_path if "csv_path" in given_names(globals()) else ""
    if mode == "video":
        video.check_video_settings(user_path(video_path), video_save_path, video_fps, video_csv, detect_interval)
    model = Facenet(**{**facenet_kwargs(settings_of(globals())), "align": True, "figure": False}, verbose=True)
    if mode != "dir_predict":
        model.detector.min_face_size = min_face_size
    if mode == "fps":
        return video.run_fps(user_path(fps_image_path), model.face, model.embed, test_interval)
    gallery = open_gallery(model, gallery_dir, gallery_path)
    set_gallery_threshold(model, gallery, max_stranger_rate, threshold is not None)
    recognise = partial(identify.identify_faces, model, gallery.search())
    if mode == "dir_predict":
        counts = video.run_dir(dir_origin_path, dir_save_path, recognise)
        return print(f"{dir_save_path}: {counts['saved']} of {counts['images']} images drawn, "
                     f"{counts['faces']} faces, {counts['skipped']} unreadable")
    counts = video.run_video(user_path(video_path), recognise, video_save_path, video_fps, video_csv,
                             detect_interval)
    print(f"video: {counts['frames']} frames in {counts['seconds']:.1f} s ({counts['fps']:.1f} FPS), "
          f"{counts['faces']} faces" + "".join(f", {p} written" for p in (video_save_path,) if p))


def run_verify(paths: list[str]) -> None:
    """Compare the pair in ``paths``, or pairs typed in until Ctrl-C or Ctrl-D."""
    if len(paths) == 1:
        raise UserError("give two image files to compare, or none to be asked for them")
    if figure:
        check_outputs({"figure_path": figure_path}, [model_path, onnx_path, *map(user_path, paths)], [])
    model = Facenet(**facenet_kwargs(settings_of(globals())), verbose=True)
    if paths:
        compare(model, *map(user_path, paths))
        return
    try:
        while True:
            image_1 = ask("Input image_1 filename:", model.face)
            image_2 = ask("Input image_2 filename:", model.face)
            compare(model, image_1, image_2)
    except (EOFError, KeyboardInterrupt):
        print()


# --- identify and dir: faces against a gallery of known people -------------------------------------

def open_gallery(model: Facenet, gallery_dir: str, gallery_path: str) -> galleries.Gallery:
    """Update the gallery file from its folder, print what changed, what was skipped and which photos
    show several faces, and return it."""
    gallery, report = galleries.update(galleries.ModelEmbedder(model), gallery_dir, gallery_path)
    if report.moved_from:
        print(f"note: {gallery_path} was built from {report.moved_from}; rebuilt for {gallery_dir}")
    for path, reason in report.skipped.items():
        print(f"  skipped {os.path.join(gallery_dir, path)}: {reason}")
    for path, faces in report.crowded.items():
        print(f"warning: {os.path.join(gallery_dir, path)} shows {faces} faces; the main one (largest, most "
              "central) is enrolled: crop the photo to that person if it is another")
    print(f"gallery: {len(gallery.paths)} images of {len(gallery.people)} people from {gallery_dir} "
          f"({report.added} new, {report.changed} changed, {report.removed} removed, {report.kept} unchanged, "
          f"{len(report.skipped)} skipped){', saved to ' + gallery_path if report.saved else ''}")
    return gallery


def set_gallery_threshold(model: Facenet, gallery: galleries.Gallery, max_stranger_rate: float, given: bool) -> None:
    """Set ``model.threshold`` for naming people of ``gallery`` with at most ``max_stranger_rate`` of
    strangers named (utils.open_set, from the weights' impostor table in their JSON and the gallery
    itself) and print it and why; a threshold the user gave is kept."""
    from utils import open_set  # here: it imports scikit-learn (seconds), which the verify mode never needs
    if given:
        print(f"threshold {model.threshold:.3f} (--threshold); --max_stranger_rate not used")
        return
    table = read_weights_info(model.weights).get(open_set.TABLE_KEY)
    try:
        table = None if table is None else open_set.check_table(table)
    except ValueError as err:
        raise UserError(f"{weights_info_path(model.weights)}: {err}; run eval_LFW.py again, "
                              "or delete the key") from None
    choice = open_set.choose_threshold(gallery.embeddings, np.array(gallery.names), galleries.DEFAULT_RULE,
                                       max_stranger_rate, table, model.threshold)
    model.threshold = choice.threshold
    print(choice.reason)


def known_people(outputs: dict[str, str], inputs: list[str],
                 photo_folders: list[str]) -> tuple[Facenet, galleries.PersonSearch]:
    """The model (aligning every photo) and the search over the gallery, its threshold set, once the
    outputs of the run are known to be writable."""
    check_outputs({"gallery_path": gallery_path, **outputs}, [model_path, onnx_path, *inputs],
                  [gallery_dir, *photo_folders])
    print_settings({"mode": mode, "gallery_dir": gallery_dir, "gallery_path": gallery_path,
                    "max_stranger_rate": max_stranger_rate,
                    **({"dir_path": dir_path, "csv_path": csv_path} if mode == "dir" else {})})
    model = Facenet(**{**facenet_kwargs(settings_of(globals())), "align": True}, verbose=True)
    gallery = open_gallery(model, gallery_dir, gallery_path)
    set_gallery_threshold(model, gallery, max_stranger_rate, threshold is not None)
    return model, gallery.search()


def describe(number: int, match: identify.FaceMatch) -> str:
    """One printed line per face."""
    box = ",".join(map(str, match.box))
    if match.name == identify.UNKNOWN:
        return f"  face {number}: box {box} -> unknown (nearest {match.nearest}, distance {match.distance:.3f})"
    return f"  face {number}: box {box} -> {match.name} (distance {match.distance:.3f})"


def show(image: Image.Image, matches: list[identify.FaceMatch], threshold: float, figure_path: str) -> None:
    """Draw the photo with a box and a name per face; shown on a display, else saved to ``figure_path``."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    width, height = image.size
    drawn, axis = plt.subplots(figsize=(7, 7 * height / max(width, 1) + 0.5))
    axis.imshow(np.asarray(image))
    for match in matches:
        left, top, right, bottom = match.box
        colour = "tab:red" if match.name == identify.UNKNOWN else "lime"
        axis.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor=colour, lw=2))
        axis.text(left, top - 3, f"{match.name} {match.distance:.2f}", color="black", fontsize=9,
                  va="bottom", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    axis.set_title(f"{len(matches)} face(s); unknown above distance {threshold:.3f}")
    axis.axis("off")
    drawn.tight_layout()
    if is_interactive_backend():
        plt.show()
    else:
        save_figure(drawn, figure_path)
        print(f"figure saved to {figure_path}")
    plt.close(drawn)


def identify_photo(model: Facenet, search: galleries.PersonSearch, path: str) -> None:
    """Print every face of the photo at ``path`` and, with ``figure``, draw them. ImageError when the photo
    cannot be read or shows no face."""
    image = open_rgb(path)
    matches = identify.identify_faces(model, search, image)
    if not matches:
        raise ImageError(f"{path}: no face found; use a photo with a clearly visible face")
    print(f"{path}: {len(matches)} face(s), unknown above distance {model.threshold:.3f}")
    for number, match in enumerate(matches, start=1):
        print(describe(number, match))
    if model.figure:
        show(image, matches, model.threshold, model.figure_path)


def run_identify(paths: list[str]) -> None:
    """Who is each face of the photo in ``paths``, or of photos typed in until Ctrl-C or Ctrl-D."""
    if len(paths) > 1:
        raise UserError("identify takes one photo (or none, to be asked for photos)")
    photos = [user_path(p) for p in paths]
    model, search = known_people({"figure_path": figure_path} if figure else {}, photos, [])
    if photos:
        identify_photo(model, search, photos[0])
        return
    try:
        while True:
            ask("Input image filename:", lambda path: identify_photo(model, search, path))
    except (EOFError, KeyboardInterrupt):
        print()


def run_dir(paths: list[str]) -> None:
    """Every face of every photo under ``dir_path`` against the gallery, one CSV row each."""
    if paths:
        raise UserError("dir mode takes no photo: set --dir_path to the folder of photos and --csv_path for the table")
    model, search = known_people({"csv_path": csv_path}, [], [dir_path])
    try:
        counts = identify.identify_folder(model, search, dir_path, csv_path)
    except identify.Interrupted as stop:
        print(f"interrupted: {csv_path} holds the {stop.done} of {stop.counts['photos']} photos done",
              file=sys.stderr)
        raise KeyboardInterrupt from None
    print(f"{csv_path}: {counts['photos']} photos, {counts['faces']} faces ({counts['named']} "
          f"named, {counts['unknown']} unknown), {counts['no face']} without a face, "
          f"{counts['unreadable']} unreadable")


def main(paths: list[str]) -> None:
    """Run the mode the settings name."""
    if mode == "verify":
        run_verify(paths)
    elif mode == "identify":
        run_identify(paths)
    elif mode == "dir":
        run_dir(paths)
    else:
        run_video_modes(paths)


if __name__ == "__main__":
    run_main(lambda: main(configure(globals(), positional=2)))
