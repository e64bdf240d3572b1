"""Face detection with the MTCNN cascade, and face alignment by crop or five-point warp.

``FaceDetector.detect`` runs the three stages on one image: P-Net over the whole image pyramid in
a single call (all levels packed into one canvas), then R-Net and O-Net over all candidates at
once (crops cut and resized together by ``roi_align``). ``align_face`` turns the main face of an
image into a square crop for the recognition networks.

Coordinates are continuous pixel coordinates: the image spans [0, width] x [0, height] and pixel
(i, j) covers [i, i + 1) x [j, j + 1), as in PIL's ``crop``.
"""
from __future__ import annotations

import glob
import importlib.util
import io
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nets.mtcnn import ONet, PNet, RNet
from utils.alignment import DEFAULT
from utils.checkpoint import load_file, write_bytes_atomic
from utils.config import UserError
from utils.image import open_rgb

# ArcFace's five-landmark template for 112x112 crops (eyes, nose tip, mouth corners).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
PNET_CELL, PNET_STRIDE = 12, 2
# Longest side at which a photo is searched for faces: 1600 px finds faces from 20 px at that
# size, and keeps detection within about a second and a few hundred MB on a CPU.
MAX_SIDE = 1600


def load_vision_ops() -> None:
    """Register torchvision's compiled NMS and RoIAlign (``torch.ops.torchvision``) without importing the
    torchvision package, which takes about a second at start-up (it pulls in torch._dynamo), most of what
    predict.py spends before its first face. Imports the package when its library is not where it
    usually lies."""
    if hasattr(torch.ops.torchvision, "nms"):
        return
    spec = importlib.util.find_spec("torchvision")
    folders = spec.submodule_search_locations if spec else None
    libraries = glob.glob(os.path.join(folders[0], "_C*.so")) if folders else []
    try:
        torch.ops.load_library(libraries[0])
        torch.ops.torchvision.nms
    except (IndexError, OSError, AttributeError, RuntimeError):
        import torchvision.ops  # noqa: F401  registers the same operators


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by non-maximum suppression at IoU ``threshold``, by decreasing score."""
    load_vision_ops()
    return torch.ops.torchvision.nms(boxes, scores, threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """NMS within each group only: the groups' boxes are moved apart so that no two groups overlap."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    offsets = groups.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, threshold)


def roi_align(image: torch.Tensor, rois: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each of ``rois`` (batch index, x1, y1, x2, y2) cut out of ``image`` and resized to ``size`` by
    bilinear sampling on continuous coordinates (torchvision's RoIAlign with ``aligned=True``)."""
    load_vision_ops()
    return torch.ops.torchvision.roi_align(image, rois, 1.0, size[0], size[1], -1, True)


class Detections(NamedTuple):
    """Faces found in one image, most probable first.

    boxes: (N, 4) float32 x1, y1, x2, y2, which may reach past the image border; probs: (N,) float32;
    landmarks: (N, 5, 2) float32 x, y of left eye, right eye, nose, left mouth corner, right mouth
    corner ("left" as seen in the image).
    """
    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                          np.zeros((0, 5, 2), np.float32))


class DetectorError(UserError, FileNotFoundError):
    """Detector weights that are missing or unreadable; the message is one line naming the file."""


def load_net(net: torch.nn.Module, path: str) -> torch.nn.Module:
    """Load a state_dict saved as ``path`` into ``net`` and switch it to eval mode."""
    if not os.path.isfile(path):
        raise DetectorError(f"{path}: MTCNN weights not found; put pnet.pt, rnet.pt and onet.pt "
                            f"(shipped in the repository's model_data/) in that folder")
    try:
        net.load_state_dict(load_file(path, "copy it from the repository's model_data/ again"))
    except Exception as err:  # any unpickling or key/shape mismatch means the same to the user
        raise DetectorError(f"{path}: not {type(net).__name__} weights ({type(err).__name__})") from None
    return net.eval()


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which a P-Net cell (12 px) covers faces from ``min_face_size`` up to the image size."""
    scale = PNET_CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def pack_levels(sizes: list[tuple[int, int]]) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Place pyramid levels of (height, width) on shelves of one canvas; offsets stay even.

    The canvas is as wide as the two largest levels side by side; returns ((height, width), offsets).
    """
    even = [(h + h % 2, w + w % 2) for h, w in sizes]
    canvas_w = sum(w for _, w in even[:2])
    offsets, x, y, shelf = [], 0, 0, 0
    for h, w in even:
        if x + w > canvas_w:
            x, y, shelf = 0, y + shelf, 0
        offsets.append((y, x))
        x, shelf = x + w, max(shelf, h)
    return (y + shelf, canvas_w), offsets


def pyramid_canvas(pixels: torch.Tensor, sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, list]:
    """Resize the 0..255 image (3, H, W) to every size, normalise, and pack all levels in one canvas.

    Returns the canvas (1, 3, h, w) and the (y, x) offset of each level in it.
    """
    shape, offsets = pack_levels(sizes)
    canvas = pixels.new_zeros((1, 3) + shape)
    normalised = (pixels[None] - 127.5) * 0.0078125
    for (h, w), (y, x) in zip(sizes, offsets):
        canvas[:, :, y:y + h, x:x + w] = F.interpolate(normalised, size=(h, w), mode="area")
    return canvas, offsets


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square of its longer side around the same centre."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], 1)


def regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply MTCNN box regression: each edge moves by its offset times the box width/height."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS on intersection over the smaller area, which also removes boxes nested in others."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    corner_min = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    corner_max = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (corner_max - corner_min).clamp(min=0).prod(2)
    overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-6)
    keep = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    for i in range(len(boxes)):
        if keep[i]:
            keep[i + 1:] &= overlap[i, i + 1:] <= threshold
    return order[keep]


class FaceDetector:
    """MTCNN face detector (P-Net, R-Net, O-Net) on CPU or GPU.

    ``thresholds`` are the face probabilities each stage requires; faces smaller than
    ``min_face_size`` pixels are not searched for; ``factor`` is the pyramid's scale step. A photo
    longer than ``max_side`` pixels is searched on a copy scaled down to that size (boxes and
    landmarks are mapped back), so time and memory stay bounded whatever the photo: detection on a
    12000x12000 photo would otherwise need over 14 GB. Faces there must then be at least
    ``min_face_size`` pixels in the scaled copy.
    """

    def __init__(self, weights_dir: str = "model_data", device: str = "cpu",
                 min_face_size: float = DEFAULT.min_face_size,
                 thresholds: tuple[float, float, float] = DEFAULT.thresholds, factor: float = 0.709,
                 max_side: int = MAX_SIDE) -> None:
        self.device = torch.device(device)
        self.pnet = load_net(PNet(), os.path.join(weights_dir, "pnet.pt")).to(self.device)
        self.rnet = load_net(RNet(), os.path.join(weights_dir, "rnet.pt")).to(self.device)
        self.onet = load_net(ONet(), os.path.join(weights_dir, "onet.pt")).to(self.device)
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.factor = factor
        self.max_side = max_side

    def detect(self, image: Image.Image) -> Detections:
        """Find the faces in a PIL image; a large one is searched at ``max_side`` pixels."""
        width, height = image.size
        if max(width, height) <= self.max_side:
            return self.detect_as_is(image)
        scale = self.max_side / max(width, height)
        small = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR,
                             reducing_gap=3.0)
        found = self.detect_as_is(small)
        sx, sy = width / small.width, height / small.height
        return Detections((found.boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32), found.probs,
                          (found.landmarks * np.array([sx, sy], np.float32)).astype(np.float32))

    @torch.inference_mode()
    def detect_as_is(self, image: Image.Image) -> Detections:
        """Find the faces in a PIL image at its own size."""
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy())
        pixels = pixels.permute(2, 0, 1).to(self.device)
        boxes = self.propose(pixels)
        if len(boxes):
            boxes = self.refine(pixels, boxes)
        if not len(boxes):
            return Detections.empty()
        boxes, probs, landmarks = self.output(pixels, boxes)
        return Detections(boxes.float().cpu().numpy(), probs.float().cpu().numpy(),
                          landmarks.float().cpu().numpy())

    def propose(self, pixels: torch.Tensor) -> torch.Tensor:
        """Stage 1: P-Net over all pyramid levels in one pass -> square candidate boxes (M, 4)."""
        height, width = pixels.shape[1:]
        scales = pyramid_scales(height, width, self.min_face_size, self.factor)
        if not scales:
            return pixels.new_zeros((0, 4))
        sizes = [(int(height * s + 1), int(width * s + 1)) for s in scales]
        canvas, offsets = pyramid_canvas(pixels, sizes)
        # Each output cell sees a 12x12 window; it belongs to the level that holds its whole window.
        out_h, out_w = (canvas.shape[2] - PNET_CELL) // 2 + 1, (canvas.shape[3] - PNET_CELL) // 2 + 1
        level_of = torch.full((out_h, out_w), -1, dtype=torch.long, device=pixels.device)
        for level, ((h, w), (y, x)) in enumerate(zip(sizes, offsets)):
            level_of[y // 2:(y + h - PNET_CELL) // 2 + 1, x // 2:(x + w - PNET_CELL) // 2 + 1] = level
        prob, shift_map = self.pnet(canvas)
        cells = ((prob[0] >= self.thresholds[0]) & (level_of >= 0)).nonzero()
        if not len(cells):
            return pixels.new_zeros((0, 4))
        level = level_of[cells[:, 0], cells[:, 1]]
        origin = torch.tensor(offsets, dtype=torch.long, device=pixels.device)[level] // PNET_STRIDE
        scale = torch.tensor(scales, dtype=pixels.dtype, device=pixels.device)[level, None]
        corner = (cells - origin).flip(1).to(pixels.dtype) * PNET_STRIDE  # (x, y) in the level
        boxes = torch.cat([corner, corner + PNET_CELL], 1) / scale
        scores = prob[0, cells[:, 0], cells[:, 1]]
        shifts = shift_map[0, :, cells[:, 0], cells[:, 1]].T
        keep = batched_nms(boxes, scores, level, 0.5)
        keep = keep[nms(boxes[keep], scores[keep], 0.7)]
        return square(regress(boxes[keep], shifts[keep]))

    def refine(self, pixels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Stage 2: R-Net on every candidate -> fewer, better square boxes."""
        prob, shifts = self.rnet(self.crops(pixels, boxes, 24))
        keep = prob > self.thresholds[1]
        boxes, prob, shifts = boxes[keep], prob[keep], shifts[keep]
        keep = nms(boxes, prob, 0.7)
        return square(regress(boxes[keep], shifts[keep]))

    def output(self, pixels: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stage 3: O-Net -> final boxes, probabilities and five landmarks."""
        prob, shifts, points = self.onet(self.crops(pixels, boxes, 48))
        keep = prob > self.thresholds[2]
        boxes, prob, shifts, points = boxes[keep], prob[keep], shifts[keep], points[keep]
        size = boxes[:, 2:] - boxes[:, :2]
        landmarks = points.view(-1, 2, 5).transpose(1, 2) * size[:, None] + boxes[:, None, :2]
        boxes = regress(boxes, shifts)
        keep = nms_min(boxes, prob, 0.7)
        return boxes[keep], prob[keep], landmarks[keep]

    @staticmethod
    def crops(pixels: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """Cut ``boxes`` out of the 0..255 image, resize to size x size (zeros outside), normalise."""
        rois = torch.cat([boxes.new_zeros((len(boxes), 1)), boxes], 1)
        patches = roi_align(pixels[None], rois, (size, size))
        return (patches - 127.5) * 0.0078125


def main_face(detections: Detections, image_size: tuple[int, int]) -> int | None:
    """Index of the face to keep: the largest, penalised by its squared distance from the centre."""
    if not len(detections.boxes):
        return None
    boxes = detections.boxes.astype(np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 - np.array(image_size, np.float64) / 2
    return int(np.argmax(area - 2.0 * (centre ** 2).sum(1)))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping src to dst (Umeyama 1991).

    Returns the 2x3 matrix M with dst ~= M[:, :2] @ src + M[:, 2].
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / (src_c ** 2).sum(1).mean()
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image: Image.Image, detections: Detections, mode: str = DEFAULT.mode,
               image_size: int = DEFAULT.size, margin: int = DEFAULT.margin,
               index: int | None = None) -> Image.Image | None:
    """Cut the main face (or face ``index``) out of ``image`` as an image_size x image_size RGB image.

    ``crop``: the face box made square, grown so that ``margin`` output pixels surround it
    (margin / 2 on each side; black where that passes the image border), then resized.
    ``warp``: a similarity transform that puts the five landmarks on ArcFace's template scaled to
    image_size (``margin`` is not used).
    Returns None when there is no face.
    """
    if mode not in ("crop", "warp"):
        raise ValueError(f"mode must be 'crop' or 'warp', not {mode!r}")
    if not 0 <= margin < image_size:
        raise ValueError(f"margin must be at least 0 and below image_size ({image_size}), not {margin}")
    if index is None:
        index = main_face(detections, image.size)
    if index is None:
        return None
    if mode == "crop":
        x1, y1, x2, y2 = detections.boxes[index].astype(np.float64)
        side = max(x2 - x1, y2 - y1) * image_size / (image_size - margin)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        box = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
        return image.crop(box).resize((image_size, image_size), Image.BICUBIC)
    # The template counts pixels from their centres (pixel i at i); here pixel i is centred at i + 0.5.
    target = (ARCFACE_TEMPLATE + 0.5) * (image_size / 112.0)
    matrix = similarity_transform(detections.landmarks[index], target)
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    return image.transform((image_size, image_size), Image.AFFINE, tuple(inverse.ravel()),
                           resample=Image.BICUBIC)


def centre_face(image_size: tuple[int, int], enlargement: float = 2.2) -> Detections:
    """A presumed face box in the middle of a loose face photo (LFW and the CelebA subset are cut to
    about 2.2 times the face box around the face), for photos where the detector finds nothing."""
    width, height = image_size
    side = min(width, height) / enlargement
    box = np.array([[(width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2]], np.float32)
    return Detections(box, np.zeros(1, np.float32), np.zeros((1, 5, 2), np.float32))


def align_file(detector: FaceDetector, src: str, dst: str, mode: str = DEFAULT.mode,
               image_size: int = DEFAULT.size, margin: int = DEFAULT.margin, quality: int = 95,
               no_face: str = "skip") -> str | None:
    """Detect and align the main face of image file ``src`` into JPEG ``dst`` (written atomically).

    ``no_face``: "skip" writes nothing when no face is found; "centre" writes a crop of the presumed
    face box in the middle of the photo (for datasets of loose face photos such as LFW, whose
    evaluation pairs need every image). Returns None on success, else the reason it failed or fell back.
    """
    try:
        image = open_rgb(src)
    except (ValueError, OSError) as err:
        return str(err)
    face = align_face(image, detector.detect(image), mode, image_size, margin)
    reason = None
    if face is None:
        if no_face != "centre":
            return "no face found"
        face = align_face(image, centre_face(image.size), "crop", image_size, margin)
        reason = "no face found; centre crop written"
    buffer = io.BytesIO()
    face.save(buffer, "JPEG", quality=quality)
    write_bytes_atomic(dst, buffer.getvalue())
    return reason
