"""Face detection and alignment on committed real photos (tests/fixtures/mtcnn)."""
import glob
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FIXTURES, ROOT, SHARED, requires_shared
from utils.detect import (ARCFACE_TEMPLATE, DetectorError, Detections, FaceDetector, align_face,
                          main_face, pack_levels, pyramid_canvas, pyramid_scales, similarity_transform)
from utils.image import open_rgb
from utils import detect

PHOTOS = os.path.join(FIXTURES, "mtcnn")
FACES = ["Aaron_Peirsol_0001.jpg", "Aaron_Peirsol_0002.jpg", "Matthew_Perry_0003.jpg",
         "Colin_Powell_0047.jpg"]


@pytest.fixture(scope="module")
def detector():
    # One thread: these small networks gain nothing from more, and a busy machine makes them crawl.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield FaceDetector(os.path.join(ROOT, "model_data"))
    torch.set_num_threads(threads)


def photo(name):
    return open_rgb(os.path.join(PHOTOS, name))


def check_face(detections, index, frontal=True):
    """Landmarks of face ``index`` are inside its box and in a face's order and layout.

    A turned head may put the nose outside the eyes: ``frontal=False`` leaves that out.
    """
    box, points = detections.boxes[index], detections.landmarks[index]
    assert (points[:, 0] > box[0]).all() and (points[:, 0] < box[2]).all()
    assert (points[:, 1] > box[1]).all() and (points[:, 1] < box[3]).all()
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < min(mouth_left[1], mouth_right[1])
    if frontal:
        assert left_eye[0] < nose[0] < right_eye[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


@pytest.mark.parametrize("name", FACES)
def test_subject_is_found_with_sane_landmarks(detector, name):
    image = photo(name)
    found = detector.detect(image)
    n = len(found.boxes)
    assert n >= 1
    assert found.boxes.shape == (n, 4) and found.probs.shape == (n,) and found.landmarks.shape == (n, 5, 2)
    assert found.boxes.dtype == found.probs.dtype == found.landmarks.dtype == np.float32
    index = main_face(found, image.size)
    assert found.probs[index] > 0.95
    # LFW centres its subject: the chosen box holds the image centre and is 60-150 px wide.
    x1, y1, x2, y2 = found.boxes[index]
    assert x1 < 125 < x2 and y1 < 125 < y2 and 60 < x2 - x1 < 150
    check_face(found, index)


def test_centre_face_wins_over_an_equally_large_one(detector):
    image = photo("Matthew_Perry_0003.jpg")
    found = detector.detect(image)
    assert len(found.boxes) >= 2
    widths = found.boxes[:, 2] - found.boxes[:, 0]
    index = main_face(found, image.size)
    assert widths.max() - widths[index] < 10  # another face is about as large ...
    for other in set(range(len(found.boxes))) - {index}:  # ... but off centre
        check_face(found, other)
    x1, y1, x2, y2 = found.boxes[index]
    assert x1 < 125 < x2 and y1 < 125 < y2


@pytest.mark.parametrize("image", [
    "texture_no_face.jpg", Image.new("RGB", (200, 150), (128, 128, 128)), Image.new("RGB", (15, 15)),
    Image.new("RGB", (1, 1)), Image.new("L", (64, 48))])
def test_no_face_gives_empty_arrays(detector, image):
    image = photo(image) if isinstance(image, str) else image
    found = detector.detect(image)
    assert isinstance(found, Detections)
    assert found.boxes.shape == (0, 4) and found.probs.shape == (0,) and found.landmarks.shape == (0, 5, 2)
    assert main_face(found, image.size) is None
    assert align_face(image, found) is None


def test_exif_rotated_photo_is_found_upright(detector, tmp_path):
    image = photo("Aaron_Peirsol_0001.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer must turn the stored pixels 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    upright = open_rgb(str(path))
    found = detector.detect(upright)
    check_face(found, main_face(found, upright.size))


def test_pyramid_canvas_matches_pnet_level_by_level(detector):
    """P-Net on the packed canvas gives each level's own P-Net output wherever the window is inside."""
    pixels = torch.from_numpy(np.asarray(photo("Aaron_Peirsol_0002.jpg"), np.float32).copy()).permute(2, 0, 1)
    scales = pyramid_scales(250, 250, 20, 0.709)
    sizes = [(int(250 * s + 1), int(250 * s + 1)) for s in scales]
    canvas, offsets = pyramid_canvas(pixels, sizes)
    with torch.inference_mode():
        packed, _ = detector.pnet(canvas)
        for (h, w), (y, x) in zip(sizes, offsets):
            level = torch.nn.functional.interpolate((pixels[None] - 127.5) / 128, size=(h, w), mode="area")
            alone, _ = detector.pnet(level)
            rows, cols = (h - 12) // 2 + 1, (w - 12) // 2 + 1
            window = packed[0, y // 2:y // 2 + rows, x // 2:x // 2 + cols]
            assert torch.allclose(window, alone[0, :rows, :cols], atol=1e-5)


@pytest.mark.parametrize("sizes", [[(150, 150), (107, 107), (76, 76), (54, 54), (39, 39), (28, 28), (20, 20),
                                    (14, 14)], [(13, 400), (12, 285)], [(601, 31), (427, 23), (303, 16)]])
def test_pack_levels_places_levels_apart_inside_the_canvas(sizes):
    (height, width), offsets = pack_levels(sizes)
    cover = np.zeros((height, width), np.int32)
    for (h, w), (y, x) in zip(sizes, offsets):
        assert y % 2 == 0 and x % 2 == 0
        cover[y:y + h, x:x + w] += 1
        assert y + h <= height and x + w <= width
    assert cover.max() == 1
    assert cover.sum() / cover.size > 0.5  # not mostly empty


def test_pyramid_scales_span_min_face_to_image():
    scales = pyramid_scales(250, 200, 20, 0.709)
    assert scales[0] == pytest.approx(12 / 20)
    assert 200 * scales[-1] >= 12 > 200 * scales[-1] * 0.709
    assert pyramid_scales(10, 10, 20, 0.709) == []


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = math.radians(25), 1.7, np.array([12.0, -4.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = scale * src @ rotation.T + shift
    matrix = similarity_transform(src, dst)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(matrix[:, 2], shift)


@pytest.mark.parametrize("size", [160, 112])
def test_crop_is_square_and_centred_on_the_face(detector, size):
    image = photo("Aaron_Peirsol_0001.jpg")
    face = align_face(image, detector.detect(image), "crop", image_size=size, margin=32)
    assert face.size == (size, size) and face.mode == "RGB"
    found = detector.detect(face)
    index = main_face(found, face.size)
    x1, y1, x2, y2 = found.boxes[index]
    assert abs((x1 + x2) / 2 - size / 2) < 0.1 * size and abs((y1 + y2) / 2 - size / 2) < 0.1 * size
    assert max(x2 - x1, y2 - y1) > 0.6 * size  # tight: the face fills most of the crop
    check_face(found, index)


def test_warp_puts_landmarks_on_the_template(detector):
    image = photo("Colin_Powell_0047.jpg")  # a tilted frame
    face = align_face(image, detector.detect(image), "warp", image_size=160)
    assert face.size == (160, 160)
    found = detector.detect(face)
    landmarks = found.landmarks[main_face(found, face.size)]
    template = (ARCFACE_TEMPLATE + 0.5) * 160 / 112
    assert np.abs(landmarks - template).max() < 6  # pixels, out of 160


def test_align_face_rejects_bad_settings(detector):
    image = photo("Aaron_Peirsol_0001.jpg")
    with pytest.raises(ValueError, match="mode"):
        align_face(image, detector.detect(image), "affine")
    with pytest.raises(ValueError, match="margin"):
        align_face(image, detector.detect(image), "crop", image_size=32, margin=32)


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(DetectorError, match=r"pnet\.pt: MTCNN weights not found") as info:
        FaceDetector(str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "pnet.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorError, match=r"pnet\.pt: not PNet weights"):
        FaceDetector(str(tmp_path))


@requires_shared
def test_lfw_sample_all_found(detector):
    files = sorted(glob.glob(os.path.join(SHARED, "data", "lfw", "lfw-deepfunneled", "*", "*.jpg")))[::500]
    for path in files:
        image = open_rgb(path)
        found = detector.detect(image)
        assert len(found.boxes), path
        check_face(found, main_face(found, image.size), frontal=False)


def test_large_photo_is_searched_scaled_down_and_boxes_mapped_back(tmp_path):
    """A photo longer than max_side is searched on a copy of that size: same face, boxes in its pixels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        small = FaceDetector(os.path.join(ROOT, "model_data"), max_side=250)
        image = photo("Aaron_Peirsol_0001.jpg")
        big = image.resize((image.width * 4, image.height * 4), Image.BICUBIC)
        at_size = small.detect(image)
        scaled = small.detect(big)
        assert len(scaled.boxes) == len(at_size.boxes) >= 1
        np.testing.assert_allclose(scaled.boxes[0], at_size.boxes[0] * 4, atol=8)
        np.testing.assert_allclose(scaled.landmarks[0], at_size.landmarks[0] * 4, atol=8)
        check_face(scaled, 0)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("count", [300, 3000])
def test_nms_and_roi_align_equal_torchvisions(count):
    """The detector calls torchvision's compiled operators without importing the package; the results are
    torchvision's own (3000 boxes: above the size where torchvision switches to a per-group loop)."""
    import torchvision.ops
    generator = torch.Generator().manual_seed(count)
    corners = torch.rand(count, 2, generator=generator) * 300
    boxes = torch.cat([corners, corners + 5 + torch.rand(count, 2, generator=generator) * 60], 1)
    scores, groups = torch.rand(count, generator=generator), torch.randint(0, 8, (count,), generator=generator)
    assert torch.equal(detect.nms(boxes, scores, 0.7), torchvision.ops.nms(boxes, scores, 0.7))
    ours = detect.batched_nms(boxes, scores, groups, 0.5)
    theirs = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    assert torch.equal(ours.sort().values, theirs.sort().values)
    assert torch.equal(scores[ours], scores[theirs])  # both by decreasing score
    image = torch.rand(1, 3, 97, 131, generator=generator) * 255
    rois = torch.cat([torch.zeros(5, 1), boxes[:5] / 3], 1)
    assert torch.equal(detect.roi_align(image, rois, (24, 24)),
                       torchvision.ops.roi_align(image, rois, (24, 24), aligned=True))
