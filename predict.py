"""Compare two face images: prints the distance of their embeddings and whether they are one person.

    python predict.py                                 # asks for image pairs until Ctrl-C or Ctrl-D
    python predict.py img/1_001.jpg img/1_002.jpg     # one pair; exit status 2 on a bad file
"""
#------- settings (edit here or override as --name value) -------
model_path = "model_data/facenet_mobilenet.pth"  # trained weights (or logs/<weights>.pth after train.py)
backbone = "mobilenet"                           # "mobilenet" or "inception_resnetv1", as the weights
input_shape = None                               # network input as in training; None: from <model_path>.json, else 160,160,3
letterbox_image = True                           # keep the aspect ratio when resizing
cuda = True                                      # use the GPU if there is one
threshold = None                                 # None: read from <model_path without .pth>.json
align = False                                    # detect and align faces with MTCNN first (raw photos)
figure = True                                    # show the two faces side by side; False: distance only, faster
figure_path = "img/result.png"                   # where the figure goes when there is no display
precision = "fp32"                               # fp32 | bf16 (bfloat16 autocast) | fp16 (CUDA only)
onnx_path = ""                                   # an ONNX file from export.py: run it with onnxruntime instead
#------------------------------------------------------------------
import os
import sys

from PIL import Image

from facenet import Facenet
from utils.checkpoint import CheckpointError
from utils.config import configure, fail, settings_of
from utils.image import ImageError
from utils.runtime import SettingError



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


def report(model: Facenet, distance: float) -> None:
    print(f"Distance: {distance:.3f} -> {model.verdict(distance)} (threshold {model.threshold:.3f})")


def main(paths: list[str]) -> None:
    if len(paths) == 1:
        fail("give two image files to compare, or none to be asked for them")
    try:
        model = Facenet(**settings_of(globals()))
    except (CheckpointError, SettingError) as err:
        fail(err)
    if paths:
        try:
            report(model, model.detect_image(*map(user_path, paths)))
        except ImageError as err:
            fail(err)
        return
    try:
        while True:
            image_1 = ask(model, "Input image_1 filename:")
            image_2 = ask(model, "Input image_2 filename:")
            report(model, model.detect_image(image_1, image_2))
    except (EOFError, KeyboardInterrupt):
        print()


if __name__ == "__main__":
    try:
        main(configure(globals(), positional=2))
    except KeyboardInterrupt:
        print()
        sys.exit(130)
