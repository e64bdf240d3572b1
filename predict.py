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
model_path = "model_data/facenet_mobilenet.pth"  # trained weights (or logs/<weights>.pth after train.py)
backbone = None                                  # None: from <model_path>.json, else read from the weights
input_shape = None                               # network input as in training; None: from <model_path>.json, else 160,160,3
letterbox_image = True                           # keep the aspect ratio when resizing
cuda = True                                      # use the GPU if there is one
threshold = None                                 # None: verify: from <model_path>.json, else 1.1; identify/dir: above
align = "auto"                                   # auto: align raw photos, keep face crops | True: always | False: never
flip = False                                     # also embed the mirror images (as eval_LFW.py --flip)
figure = True                                    # show the two faces side by side; False: distance only, faster
figure_path = "img/result.png"                   # where the figure goes when there is no display
precision = "fp32"                               # fp32 | bf16 (bfloat16 autocast) | fp16 (CUDA only)
onnx_path = ""                                   # an ONNX file from export.py: run it with onnxruntime instead
video_path = "0"                                 # video: a video file, a camera index (0, 1, ...) or a stream URL
video_save_path = ""                             # video: save the annotated video here (.mp4 or .avi); "": not saved
video_fps = 0.0                                  # video: frame rate of the saved video; 0: the source's
detect_interval = 1                              # video: detect and name faces every n-th frame, follow them between
min_face_size = 40                               # video/fps: smallest face searched for, in pixels (smaller: slower)
fps_image_path = "img/1_001.jpg"                 # fps: the photo whose detection, alignment and embedding are timed
test_interval = 100                              # fps: how many calls are timed
dir_origin_path = "img/"                         # dir_predict: the folder of images to draw boxes and names on
dir_save_path = "img_out/"                       # dir_predict: where the drawn images go, under the same names
#------------------------------------------------------------------
import os
import sys

from PIL import Image

from facenet import Facenet, facenet_kwargs
from utils.checkpoint import figure_extensions
from utils.config import UserError, check_output_file, configure, run_main, settings_of
from utils.image import ImageError


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
    if mode in ("video", "fps", "dir_predict"):  # utils/video.py, with this model and the gallery's names
        from functools import partial
        from utils import identify, video
        from utils.config import check_number
        # --csv_path has a default for dir mode: video writes its CSV only when --csv_path is given.
        video_csv = csv_path if any(a.split("=")[0] == "--csv_path" for a in sys.argv) else ""
        if mode == "video":
            video.check_video_settings(user_path(video_path), video_save_path, video_fps, video_csv, detect_interval)
        model = Facenet(**{**facenet_kwargs(settings_of(globals())), "align": True, "figure": False}, verbose=True)
        if mode != "dir_predict":
            model.detector.min_face_size = check_number("min_face_size", min_face_size, 12)
        if mode == "fps":
            return video.run_fps(user_path(fps_image_path), model.face, model.embed, test_interval)
        gallery = identify.open_gallery(model, gallery_dir, gallery_path)
        identify.set_gallery_threshold(model, gallery, max_stranger_rate, threshold is not None)
        recognise = partial(identify.identify_faces, model, gallery.search())
        if mode == "dir_predict":
            counts = video.run_dir(dir_origin_path, dir_save_path, recognise)
            return print(f"{dir_save_path}: {counts['saved']} of {counts['images']} images drawn, "
                         f"{counts['faces']} faces, {counts['skipped']} unreadable")
        counts = video.run_video(user_path(video_path), recognise, video_save_path, video_fps, video_csv,
                                 detect_interval)
        return print(f"video: {counts['frames']} frames in {counts['seconds']:.1f} s ({counts['fps']:.1f} FPS), "
                     f"{counts['faces']} faces" + "".join(f", {p} written" for p in (video_save_path,) if p))
    if figure:
        check_output_file("figure_path", figure_path, figure_extensions())
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
