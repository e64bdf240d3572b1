"""Face verification with trained FaceNet weights: embeddings, pair distances and a side-by-side figure.

``Facenet`` keeps the original repository's interface (``_defaults`` overridable by keyword,
``detect_image(image_1, image_2)`` returning the embedding distance and drawing the pair) and adds
``distance`` / ``compare`` without the figure, a batch ``embed`` API, the backbone, input size and
threshold that travel with the weights (their JSON), automatic MTCNN alignment of raw photos,
bfloat16 inference and an ONNX file run by onnxruntime instead of PyTorch.

matplotlib, the detector and onnxruntime are imported only when the chosen mode needs them: importing
them all would add about half a second to every start of predict.py.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from nets.facenet import BACKBONES
from utils.alignment import alignment_of, choose_face
from utils.checkpoint import ModelSettings, read_weights_info, save_figure, weights_info_path
from utils.config import (Bool, Choice, Number, Opt, Shape, Text, UserError, check_values, configure, print_settings,
                          run_main)
from utils.image import ImageError, open_rgb, resize_image, to_rgb, to_tensor
from utils.runtime import PRECISIONS, check_precision, load_embedder, load_onnx_embedder

if TYPE_CHECKING:
    from utils.detect import Detections

REPOSITORY = os.path.dirname(os.path.abspath(__file__))
# Distance below which two L2-normalised 128-d FaceNet embeddings are taken as one person when the
# weights come without a threshold measured by eval_LFW.py; 1.1 is the usual value for such models.
FALLBACK_THRESHOLD = 1.1
# Network input when neither the caller nor the weights' JSON gives one: the original's.
DEFAULT_INPUT_SHAPE = [160, 160, 3]
# Marks a PIL image that ``Facenet.face`` already prepared, so that aligning is never applied twice.
ALIGNED_KEY = "facenet_aligned"
# Raw photos are aligned as the weights' JSON records (utils/alignment.py), by default as align_dataset.py
# crops: 160 px with a margin of 32.
ALIGN_CHOICES = ("auto", True, False)
# Two different images whose embeddings are closer than this are a collapsed model, not one face.
COLLAPSED_DISTANCE = 1e-3
# Inputs (pixels / 255) differing by less than this on average count as the same image.
SAME_IMAGE = 0.01
# Facenet.embed decodes this many images at a time (about 10 MB of network input at 160 px).
EMBED_BATCH = 32

ImageInput = Union[str, os.PathLike, Image.Image]



@dataclass
class Comparison:
    """The outcome for one pair: distance, verdict ("same person", "different people" or
    "no verdict") and, when the numbers cannot be trusted, the warning saying why."""

    distance: float
    verdict: str
    warning: str | None = None


def is_interactive_backend() -> bool:
    """True when matplotlib can open a window (a display is there); False for Agg and other file backends."""
    import matplotlib
    from matplotlib.backends import BackendFilter, backend_registry

    names = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    return matplotlib.get_backend().lower() not in names


def repository_path(path: str, default: str) -> str:
    """``path``, or the repository's copy of it when it is the relative ``default`` and the working
    directory is elsewhere (so the shipped weights are found from any directory)."""
    if path == default and not os.path.isabs(path) and not os.path.exists(path):
        return os.path.join(REPOSITORY, path)
    return path


def check_paths(model_path: object, onnx_path: object) -> None:
    """UserError unless ``onnx_path`` is a path, "" or None and, without it, ``model_path`` is a path."""
    if onnx_path is not None and not isinstance(onnx_path, (str, os.PathLike)):
        raise UserError(f"onnx_path must be the path of an ONNX file written by export.py, or \"\" for none, "
                        f"not {onnx_path!r}")
    if not onnx_path and (not isinstance(model_path, (str, os.PathLike)) or not os.fspath(model_path)):
        raise UserError(f"model_path must be the path of a weights file (.pth), not {model_path!r}; leave it "
                        "out for the shipped model_data/facenet_mobilenet.pth")


class Facenet:
    """Trained FaceNet for verification; every entry of ``_defaults`` can be overridden by keyword."""

    _defaults = {
        # Trained weights: the released file, or your own from logs/ after train.py. The default is
        # found in the repository when the working directory is elsewhere.
        "model_path": "model_data/facenet_mobilenet.pth",
        # Network input [height, width, channels]; must match training. None: the input_shape stored
        # beside the weights (<model_path without extension>.json), else [160, 160, 3] with a note.
        "input_shape": None,
        # "mobilenet" or "inception_resnetv1"; None: from the weights' JSON, else from the weights.
        "backbone": None,
        # Resize keeping the aspect ratio, padding with grey (as in training).
        "letterbox_image": True,
        # Use the GPU when there is one; falls back to the CPU with a note otherwise.
        "cuda": True,
        # Same-person distance threshold; None reads it from <model_path without extension>.json.
        "threshold": None,
        # "auto": align photos with MTCNN unless they already are face crops like align_dataset.py's;
        # True: always align; False: use every image as it is.
        "align": "auto",
        # Also embed the mirror image and add the two embeddings (as eval_LFW.py --flip).
        "flip": False,
        # detect_image draws the two faces side by side; False skips the figure and with it matplotlib
        # (a faster start when only the distance is wanted).
        "figure": True,
        # Where the side-by-side figure of detect_image is saved when there is no display.
        "figure_path": "img/result.png",
        # "fp32", "bf16" (bfloat16 autocast, CPU or GPU) or "fp16" (CUDA only).
        "precision": "fp32",
        # An ONNX file written by export.py: run it with onnxruntime on the CPU instead of PyTorch. Its
        # threshold is read from <onnx_path without extension>.json, its input size from the file.
        "onnx_path": "",
        # Print the settings, the weights loaded and notes (predict.py does); False keeps the API quiet.
        "verbose": False,
    }
    # What each setting above accepts, checked when the object is made (and by predict.py, which takes them
    # as --name value) and listed by --help.
    _rules = {
        "model_path": Text(), "input_shape": Opt(Shape()), "backbone": Opt(Choice(*BACKBONES)),
        "letterbox_image": Bool(), "cuda": Bool(), "threshold": Opt(Number(0, 2, above=True)),
        "align": Choice(*ALIGN_CHOICES), "flip": Bool(), "figure": Bool(), "figure_path": Text(),
        "precision": Choice(*PRECISIONS), "onnx_path": Text(), "verbose": Bool(),
    }

    def __init__(self, **kwargs) -> None:
        unknown = sorted(set(kwargs) - set(self._defaults))
        if unknown:
            raise TypeError(f"unknown Facenet setting(s) {', '.join(unknown)}; "
                            f"known: {', '.join(self._defaults)}")
        self.__dict__.update(self._defaults)
        self.__dict__.update(kwargs)
        self.generate()

    def say(self, message: str) -> None:
        """Print a note or warning when verbose; a quiet object still raises warnings as Python warnings."""
        if self.verbose:
            print(message)
        elif message.startswith("warning: "):
            warnings.warn(message[len("warning: "):], stacklevel=4)

    def generate(self) -> None:
        """Check the settings, build the network (or open the ONNX file), load the weights strictly, pick
        the device, the precision and the threshold. Unusable settings raise a UserError naming them."""
        check_paths(self.model_path, self.onnx_path)
        if not self.onnx_path:
            self.model_path = repository_path(os.fspath(self.model_path), self._defaults["model_path"])
        self.onnx_path = os.fspath(self.onnx_path or "")
        check_values({name: getattr(self, name) for name in self._rules}, self._rules)
        if self.input_shape is not None:
            self.input_shape = list(self.input_shape)
        if self.cuda and not self.onnx_path and not torch.cuda.is_available():
            self.say("note: cuda=True but no GPU is available; running on the CPU")
        use_cuda = self.cuda and not self.onnx_path and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        check_precision(self.precision, self.device)
        found = self.load()
        for message in found.messages:
            self.say(message)
        if found.threshold is None:
            self.say(f"note: no threshold given and none stored beside {self.weights}; using "
                     f"{FALLBACK_THRESHOLD} (typical for 128-d FaceNet embeddings). Run eval_LFW.py "
                     "to measure one for these weights, or set --threshold")
            self.threshold, self.threshold_source = FALLBACK_THRESHOLD, "fallback"
        else:
            self.threshold, self.threshold_source = found.threshold, found.threshold_source

        self.detector = None
        if self.align:
            from utils.detect import FaceDetector
            self.detector = FaceDetector(weights_dir=os.path.join(REPOSITORY, "model_data"),
                                         device=str(self.device), min_face_size=self.alignment.min_face_size,
                                         thresholds=self.alignment.thresholds)
        if self.verbose:
            print_settings({**({"onnx_path": self.onnx_path} if self.onnx_path else
                               {"model_path": self.model_path, "backbone": self.backbone}),
                            "input_shape": self.input_shape, "letterbox_image": self.letterbox_image,
                            "device": f"{self.device} (onnxruntime)" if self.onnx_path else str(self.device),
                            "precision": self.precision,
                            "threshold": f"{self.threshold:.4f} ({self.threshold_source})",
                            "align": self.align, "flip": self.flip,
                            "figure_path": self.figure_path if self.figure else "(no figure)"})

    @property
    def embedding_size(self) -> int:
        """Length of one embedding (128 for the shipped weights)."""
        return self.embedder.embedding_size

    @property
    def weights(self) -> str:
        """The file the embeddings come from: the ONNX file when there is one, else the weights."""
        return self.onnx_path or self.model_path

    def load(self) -> ModelSettings:
        """The embedder of the weights or of the ONNX file, with the backbone, input size and alignment
        they were trained with; returns the settings found."""
        if self.onnx_path:
            self.embedder, found = load_onnx_embedder(self.onnx_path, self.backbone, self.input_shape,
                                                      self.threshold, self.precision, self.flip)
        else:
            self.embedder, found = load_embedder(self.model_path, self.backbone, self.input_shape, self.threshold,
                                                 DEFAULT_INPUT_SHAPE, self.device, self.precision, self.flip,
                                                 self.verbose)
        self.backbone, self.input_shape = found.backbone, found.input_shape
        self.alignment = alignment_of(read_weights_info(self.weights), weights_info_path(self.weights))
        return found

    def face(self, image: ImageInput) -> Image.Image:
        """The RGB picture the network will see: ``image`` (a path or a PIL image) decoded and, as
        ``align`` says, its main face detected and cropped by MTCNN the way align_dataset.py crops
        training data. Raises ImageError with one line when unusable or when no face is found.
        Applying it to its own result returns that result unchanged."""
        if isinstance(image, Image.Image):
            if image.info.get(ALIGNED_KEY):
                return image
            name = getattr(image, "filename", "") or "image"
            try:
                rgb = to_rgb(ImageOps.exif_transpose(image))
            except (OSError, SyntaxError, ValueError) as err:
                raise ImageError(f"{name}: damaged or truncated image ({err})") from None
        else:
            name = os.fspath(image)
            rgb = open_rgb(name)
        if self.detector is None:
            return rgb
        return self.choose(rgb, self.detector.detect(rgb), name)

    def choose(self, rgb: Image.Image, found: Detections, name: str = "image") -> Image.Image:
        """The picture to embed for the decoded photo ``rgb`` whose faces are ``found``, as ``align`` says
        (``utils.alignment.choose_face``), marked as prepared."""
        face = choose_face(rgb, found, self.align, self.alignment, name)
        face.info[ALIGNED_KEY] = True
        return face

    def _inputs(self, images: Sequence[ImageInput]) -> tuple[torch.Tensor, list[Image.Image]]:
        """The network input batch for ``images`` and the resized pictures it was made from."""
        size = (self.input_shape[1], self.input_shape[0])
        resized = [resize_image(self.face(image), size, self.letterbox_image) for image in images]
        return torch.stack([to_tensor(image) for image in resized]), resized

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        """L2-normalised embeddings of a preprocessed batch, as float32 (N, 128); NaN is an error."""
        embeddings = self.embedder(batch)
        if not np.isfinite(embeddings).all():
            raise UserError(f"{self.weights}: the embeddings are NaN or infinite: these weights are "
                                 "broken (a diverged training run?); use other weights")
        return embeddings

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """L2-normalised embeddings (N, 128) float32 of a list of image paths or PIL images, decoded and
        run ``EMBED_BATCH`` at a time, so that memory stays bounded however many there are."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            raise UserError(f"Facenet.embed takes a list of images, not one: write embed([{images!r}])")
        images = list(images)
        chunks = [self._forward(self._inputs(images[i:i + EMBED_BATCH])[0])
                  for i in range(0, len(images), EMBED_BATCH)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embedding_size), np.float32)

    def verdict(self, distance: float) -> str:
        """'same person' when ``distance`` is below the threshold, else 'different people'."""
        return "same person" if distance < self.threshold else "different people"

    def _compare(self, image_1: ImageInput, image_2: ImageInput) -> tuple[Comparison, list[Image.Image]]:
        batch, shown = self._inputs([image_1, image_2])
        embedding_1, embedding_2 = self._forward(batch)
        distance = float(np.linalg.norm(embedding_1 - embedding_2))
        differ = float((batch[0] - batch[1]).abs().mean()) > SAME_IMAGE
        if distance < COLLAPSED_DISTANCE and differ:
            return Comparison(distance, "no verdict",
                              f"two different images got the same embedding (distance {distance:.2g}): "
                              f"{self.weights} maps faces to one point (collapsed or barely trained "
                              "weights), so the distance says nothing"), shown
        return Comparison(distance, self.verdict(distance)), shown

    def compare(self, image_1: ImageInput, image_2: ImageInput) -> Comparison:
        """Distance, verdict and any warning for two images, without drawing anything."""
        return self._compare(image_1, image_2)[0]

    def distance(self, image_1: ImageInput, image_2: ImageInput) -> float:
        """Euclidean distance (0 to 2) between the two faces' embeddings, without drawing anything."""
        return self.compare(image_1, image_2).distance

    def detect_image(self, image_1: ImageInput, image_2: ImageInput) -> float:
        """Distance between the two faces' embeddings; with ``figure``, shows them side by side with the
        verdict (or, without a display, saves the figure to ``figure_path`` and prints where)."""
        comparison, shown = self._compare(image_1, image_2)
        if self.figure:
            self.show(comparison, shown)
        return comparison.distance

    def show(self, comparison: Comparison, shown: list[Image.Image]) -> None:
        """Draw the pair with its verdict: a window with a display, else the file ``figure_path``."""
        import matplotlib.pyplot as plt
        figure, axes = plt.subplots(1, 2, figsize=(6, 3.4))
        for axis, image in zip(axes, shown):
            axis.imshow(np.asarray(image))
            axis.axis("off")
        figure.suptitle(f"Distance: {comparison.distance:.3f} - {comparison.verdict} "
                        f"(threshold {self.threshold:.3f})")
        figure.tight_layout()
        if is_interactive_backend():
            plt.show()
        else:
            save_figure(figure, self.figure_path)
            print(f"figure saved to {self.figure_path}")
        plt.close(figure)


def facenet_kwargs(settings: dict) -> dict:
    """The entries of a script's settings that configure ``Facenet``; the script may hold others."""
    return {key: value for key, value in settings.items() if key in Facenet._defaults}


def main() -> None:
    """python facenet.py [--name value ...]: load the weights with these settings and print what was found
    (backbone, input size, threshold, device); predict.py compares photos with them."""
    settings = {k: v for k, v in Facenet._defaults.items() if k != "verbose"}
    namespace = {"__doc__": f"{__doc__.strip()}\n\n{main.__doc__}", **settings,
                 "RULES": {k: r for k, r in Facenet._rules.items() if k in settings}}
    configure(namespace)
    Facenet(**{k: namespace[k] for k in settings}, verbose=True)


if __name__ == "__main__":
    run_main(main)
