"""Compare two face images: prints the distance of their embeddings and whether they are one person.

    python predict.py                                 # asks for image pairs until Ctrl-C or Ctrl-D
    python predict.py img/1_001.jpg img/1_002.jpg     # one pair; exit status 2 on a bad file
    python predict.py --mode identify --gallery_dir known PHOTO           # who is each face of PHOTO?
    python predict.py --mode dir --gallery_dir known --dir_path photos --csv_path out.csv

Raw photos are detected and aligned like the training data; face crops are used as they are.
"""
#------- settings (edit here or override as --name value) -------
mode = "verify"                                  # verify: two photos; identify: faces of one photo; dir: a folder
gallery_dir = "known"                            # identify/dir: known people, <person>/<image> or flat <name>_<n>.jpg
gallery_path = "model_data/gallery.npz"          # identify/dir: their embeddings, updated when gallery_dir changes
dir_path = "photos"                              # dir: the folder of photos to identify
csv_path = "identify.csv"                        # dir: one row per face (file, box, name, distance)
max_stranger_rate = 0.01                         # identify/dir: share of strangers allowed a name; sets the threshold
# The model's settings are facenet.py's (Facenet._defaults, described there), given here as --name value too:
# model_path, backbone, input_shape, letterbox_image, cuda, threshold, align, flip, figure, figure_path,
# precision, onnx_path. python predict.py -h lists them with their defaults.
#------------------------------------------------------------------
import os
import sys

from PIL import Image

from facenet import Facenet, facenet_kwargs
from utils.checkpoint import figure_extensions
from utils.config import Choice, Number, OutputFile, Text, UserError, configure, run_main, settings_of
from utils.image import ImageError

# The model's settings, declared once in facenet.py, become settings of this script.
globals().update({k: v for k, v in Facenet._defaults.items() if k != "verbose"})
# What each setting accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "mode": Choice("verify", "identify", "dir"), "gallery_dir": Text(),
    "gallery_path": OutputFile(".npz", when=("mode", "identify", "dir")), "dir_path": Text(),
    "csv_path": OutputFile(".csv", when=("mode", "dir")), "max_stranger_rate": Number(0, 0.5, above=True),
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


def ask(model: Facenet, prompt: str) -> Image.Image:
    """Prompt until the user names a usable image; EOFError and KeyboardInterrupt pass through."""
    while True:
        text = input(prompt)
        if not text.strip():
            print("error: type an image file name (Ctrl-D or Ctrl-C to quit)", file=sys.stderr)
            continue
        try:
            return model.face(user_path(text))
        except ImageError as err:
            print(f"error: {err}", file=sys.stderr)


def compare(model: Facenet, image_1, image_2) -> None:
    """Print the distance and the verdict, after the warning when the embeddings cannot be trusted."""
    comparison, shown = model._compare(image_1, image_2)
    if comparison.warning:
        print(f"warning: {comparison.warning}")
    if model.figure:
        model.show(comparison, shown)
    print(f"Distance: {comparison.distance:.3f} -> {comparison.verdict} (threshold {model.threshold:.3f})")


def main(paths: list[str]) -> None:
    """Verify the pair in ``paths`` (or pairs typed in), or hand the identify and dir modes to utils.identify."""
    if mode != "verify":
        from utils import identify  # here: it imports the detector, which --align False never needs
        return identify.run(mode, paths, settings_of(globals()), user_path)
    if len(paths) == 1:
        raise UserError("give two image files to compare, or none to be asked for them")
    model = Facenet(**facenet_kwargs(settings_of(globals())), verbose=True)
    if paths:
        compare(model, *map(user_path, paths))
        return
    try:
        while True:
            image_1 = ask(model, "Input image_1 filename:")
            image_2 = ask(model, "Input image_2 filename:")
            compare(model, image_1, image_2)
    except (EOFError, KeyboardInterrupt):
        print()


if __name__ == "__main__":
    run_main(lambda: main(configure(globals(), positional=2)))
