"""Face verification with trained FaceNet weights: embeddings, pair distances and a side-by-side figure.

``Facenet`` keeps the original repository's interface (``_defaults`` overridable by keyword,
``detect_image(image_1, image_2)`` returning the embedding distance) and adds a batch ``embed`` API,
the decision threshold that travels with the weights, optional MTCNN alignment of raw photos, bfloat16
inference and an ONNX file run by onnxruntime instead of PyTorch.

matplotlib, the detector and onnxruntime are imported only when the chosen mode needs them: importing
them all would add about half a second to every start of predict.py.
"""
from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from nets.facenet import Facenet as FacenetNet
from utils.checkpoint import CheckpointError, load_weights, write_bytes_atomic
from utils.config import print_settings
from utils.image import ImageError, open_rgb, resize_image, to_rgb, to_tensor
from utils.runtime import SettingError, check_precision, embed, inference_copy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Distance below which two L2-normalised 128-d FaceNet embeddings are taken as one person when the
# weights come without a threshold measured by eval_LFW.py; 1.1 is the usual value for such models.
FALLBACK_THRESHOLD = 1.1
# Network input when neither the caller nor the weights' JSON gives one: the original's.
DEFAULT_INPUT_SHAPE = [160, 160, 3]
# Marks a PIL image that ``Facenet.face`` already aligned, so that aligning is never applied twice.
ALIGNED_KEY = "facenet_aligned"
# Alignment of raw photos, the same as align_dataset.py applies to the training data.
ALIGN_SIZE, ALIGN_MARGIN = 160, 32
# MTCNN's pnet.pt, rnet.pt and onet.pt ship with the repository, so they are found from any directory.
DETECTOR_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_data")

ImageInput = Union[str, os.PathLike, Image.Image]


def sidecar_path(model_path: str) -> str:
    """Where the numbers that travel with ``model_path`` are looked for: the JSON of eval_LFW.py saved
    under the same name with ``.json`` (its ``threshold`` and ``input_shape`` are used)."""
    return os.path.splitext(model_path)[0] + ".json"


def read_sidecar(model_path: str) -> dict:
    """The JSON stored beside ``model_path``, or {} when there is no such file."""
    path = sidecar_path(model_path)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: not a readable JSON object; run eval_LFW.py again, "
                              "or delete it and set --threshold") from None
    return data


def check_threshold(value: object, source: str) -> float:
    """A distance threshold must be a number in (0, 2]: distances of unit vectors lie in [0, 2]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 2:
        raise CheckpointError(f"{source}: threshold must be a number between 0 and 2, not {value!r}")
    return float(value)


def is_interactive_backend() -> bool:
    """True when matplotlib can open a window (a display is there); False for Agg and other file backends."""
    import matplotlib
    from matplotlib.backends import BackendFilter, backend_registry

    names = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    return matplotlib.get_backend().lower() not in names


def save_figure_atomic(figure: Figure, path: str) -> None:
    """Save ``figure`` through a temporary file and a rename, in the format of the file's extension."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=os.path.splitext(path)[1].lstrip(".").lower() or "png")
    write_bytes_atomic(path, buffer.getvalue())


class Facenet:
    """Trained FaceNet for verification; every entry of ``_defaults`` can be overridden by keyword."""

    _defaults = {
        # Trained weights: the released file, or your own from logs/ after train.py.
        "model_path": "model_data/facenet_mobilenet.pth",
        # Network input [height, width, channels]; must match training. None: the input_shape stored
        # beside the weights (<model_path without extension>.json), else [160, 160, 3].
        "input_shape": None,
        # "mobilenet" or "inception_resnetv1"; must match the weights.
        "backbone": "mobilenet",
        # Resize keeping the aspect ratio, padding with grey (as in training).
        "letterbox_image": True,
        # Use the GPU when there is one; falls back to the CPU with a note otherwise.
        "cuda": True,
        # Same-person distance threshold; None reads it from <model_path without extension>.json.
        "threshold": None,
        # Detect and align the face in each photo with MTCNN first (for raw photos, not crops).
        "align": False,
        # detect_image draws the two faces side by side; False skips the figure and with it matplotlib
        # (a faster start when only the distance is wanted).
        "figure": True,
        # Where the side-by-side figure is saved when there is no display.
        "figure_path": "img/result.png",
        # "fp32", "bf16" (bfloat16 autocast, CPU or GPU) or "fp16" (CUDA only).
        "precision": "fp32",
        # An ONNX file written by export.py: run it with onnxruntime on the CPU instead of PyTorch. Its
        # threshold is read from <onnx_path without extension>.json, its input size from the file.
        "onnx_path": "",
    }

    def __init__(self, **kwargs) -> None:
        unknown = sorted(set(kwargs) - set(self._defaults))
        if unknown:
            raise TypeError(f"unknown Facenet setting(s) {', '.join(unknown)}; "
                            f"known: {', '.join(self._defaults)}")
        self.__dict__.update(self._defaults)
        self.__dict__.update(kwargs)
        self.generate()

    def generate(self) -> None:
        """Build the network (or open the ONNX file), load the weights strictly, pick the device,
        the precision and the threshold. Unusable settings raise CheckpointError or SettingError."""
        self.net = self.onnx = None
        if self.cuda and not self.onnx_path and not torch.cuda.is_available():
            print("note: cuda=True but no GPU is available; running on the CPU")
        use_cuda = self.cuda and not self.onnx_path and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        check_precision(self.precision, self.device)
        if self.onnx_path:
            self.load_onnx()
        else:
            self.load_network()

        weights = self.onnx_path or self.model_path
        sidecar = read_sidecar(weights)
        if self.input_shape is None:
            self.input_shape = list(sidecar.get("input_shape") or DEFAULT_INPUT_SHAPE)
        if self.threshold is not None:
            self.threshold = check_threshold(self.threshold, "--threshold")
            self.threshold_source = "setting"
        elif "threshold" in sidecar:
            self.threshold = check_threshold(sidecar["threshold"], sidecar_path(weights))
            self.threshold_source = sidecar_path(weights)
        else:
            print(f"note: no threshold given and {sidecar_path(weights)} has none; using "
                  f"{FALLBACK_THRESHOLD} (typical for 128-d FaceNet embeddings). Run eval_LFW.py "
                  "to measure one for these weights, or set --threshold")
            self.threshold = FALLBACK_THRESHOLD
            self.threshold_source = "fallback"

        self.detector = None
        if self.align:
            # Imported only here so that inference without alignment does not need the detector.
            from utils.detect import DetectorError, FaceDetector
            try:
                self.detector = FaceDetector(weights_dir=DETECTOR_WEIGHTS, device=str(self.device))
            except DetectorError as err:
                raise CheckpointError(str(err)) from None

        print_settings({**({"onnx_path": self.onnx_path} if self.onnx else
                            {"model_path": self.model_path, "backbone": self.backbone}),
                        "input_shape": self.input_shape, "letterbox_image": self.letterbox_image,
                        "device": f"{self.device} (onnxruntime)" if self.onnx else str(self.device),
                        "precision": self.precision,
                        "threshold": f"{self.threshold:.4f} ({self.threshold_source})",
                        "align": self.align, "figure_path": self.figure_path if self.figure else "(no figure)"})

    def load_network(self) -> None:
        """The PyTorch network on the chosen device, BatchNorm folded (1.5x faster on the CPU)."""
        if not os.path.isfile(self.model_path):
            raise CheckpointError(f"{self.model_path}: no weights file; copy the trained "
                                  f"facenet_{self.backbone}.pth there, or train with train.py and pass "
                                  "--model_path logs/<weights>.pth")
        net = FacenetNet(backbone=self.backbone, mode="predict")
        load_weights(net, self.model_path, purpose="predict")
        self.net = inference_copy(net).to(self.device, memory_format=torch.channels_last)
        self.embedding_size = net.Bottleneck.out_features
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def load_onnx(self) -> None:
        """The ONNX file in onnxruntime on the CPU; its input size is fixed by the export."""
        from utils.onnx_model import OnnxEmbedder

        if self.precision != "fp32":
            raise SettingError("an ONNX file runs in fp32; leave --precision fp32 with --onnx_path")
        self.onnx = OnnxEmbedder(self.onnx_path)
        if self.input_shape is not None and list(self.input_shape) != self.onnx.input_shape:
            shape = ",".join(map(str, self.onnx.input_shape))
            raise CheckpointError(f"{self.onnx_path}: exported for input_shape {shape}, not "
                                  f"{','.join(map(str, self.input_shape))}; leave --input_shape unset or "
                                  "export again with python export.py --input_shape ...")
        self.input_shape = self.onnx.input_shape
        self.embedding_size = self.onnx.embedding_size

    def face(self, image: ImageInput) -> Image.Image:
        """The RGB face the network will see: ``image`` (a path or a PIL image) decoded and, with
        ``align``, detected and cropped by MTCNN. Raises ImageError with one line when unusable.
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
        from utils.detect import align_face
        face = align_face(rgb, self.detector.detect(rgb), mode="crop", image_size=ALIGN_SIZE,
                           margin=ALIGN_MARGIN)
        if face is None:
            raise ImageError(f"{name}: no face found; use a photo with a clearly visible face, "
                             "or an already cropped face with --align False")
        face.info[ALIGNED_KEY] = True
        return face

    def _inputs(self, images: Sequence[ImageInput]) -> tuple[torch.Tensor, list[Image.Image]]:
        """The network input batch for ``images`` and the resized pictures it was made from."""
        size = (self.input_shape[1], self.input_shape[0])
        resized = [resize_image(self.face(image), size, self.letterbox_image) for image in images]
        return torch.stack([to_tensor(image) for image in resized]), resized

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        """L2-normalised embeddings of a preprocessed batch in one pass, as float32 (N, 128)."""
        if self.onnx is not None:
            return self.onnx(batch).numpy()
        with torch.inference_mode():
            batch = batch.to(self.device, memory_format=torch.channels_last)
            return embed(self.net, batch, self.precision).cpu().numpy()

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """L2-normalised embeddings (N, 128) float32 of image paths or PIL images, in one forward pass."""
        if len(images) == 0:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        return self._forward(self._inputs(images)[0])

    def verdict(self, distance: float) -> str:
        """'same person' when ``distance`` is below the threshold, else 'different people'."""
        return "same person" if distance < self.threshold else "different people"

    def detect_image(self, image_1: ImageInput, image_2: ImageInput) -> float:
        """Distance between the two faces' embeddings; with ``figure``, shows them side by side with the
        verdict (or, without a display, saves the figure to ``figure_path`` and prints where)."""
        batch, (shown_1, shown_2) = self._inputs([image_1, image_2])
        embedding_1, embedding_2 = self._forward(batch)
        distance = float(np.linalg.norm(embedding_1 - embedding_2))
        if not self.figure:
            return distance

        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(6, 3.4))
        for axis, image in zip(axes, (shown_1, shown_2)):
            axis.imshow(np.asarray(image))
            axis.axis("off")
        figure.suptitle(f"Distance: {distance:.3f} - {self.verdict(distance)} "
                        f"(threshold {self.threshold:.3f})")
        figure.tight_layout()
        if is_interactive_backend():
            plt.show()
        else:
            save_figure_atomic(figure, self.figure_path)
            print(f"figure saved to {self.figure_path}")
        plt.close(figure)
        return distance
