"""utils/image.py: decoding odd files to RGB, resizing, tensors."""
import numpy as np
import pytest
import torch
from PIL import Image

from utils.image import ImageError, is_image_file, open_rgb, preprocess, resize_image


@pytest.fixture
def face(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)
    return Image.fromarray(array, "RGB")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_every_mode_becomes_rgb(tmp_path, face, mode):
    image = face.convert("L").convert("I;16") if mode == "I;16" else face.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    image.save(path)
    out = open_rgb(str(path))
    assert out.mode == "RGB" and out.size == face.size


def test_sixteen_bit_keeps_its_range(tmp_path):
    values = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    out = np.asarray(open_rgb(str(tmp_path / "deep.png")))
    assert out.max() > 200 and out.min() == 0


def test_exif_orientation_is_applied(tmp_path, face):
    exif = Image.Exif()
    exif[0x0112] = 6
    face.save(tmp_path / "rot.jpg", exif=exif)
    assert open_rgb(str(tmp_path / "rot.jpg")).size == (60, 40)


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "truncated"])
def test_bad_files_raise_one_line(tmp_path, face, case):
    path = tmp_path / "bad.jpg"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not an image")
    elif case == "truncated":
        face.resize((400, 400)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageError) as info:
        open_rgb(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_letterbox_pads_with_grey_and_keeps_aspect(face):
    out = np.asarray(resize_image(face, (80, 80), letterbox=True))
    assert out.shape == (80, 80, 3)
    assert (out[:, :10] == 128).all() and (out[:, -10:] == 128).all()
    assert resize_image(face, (80, 80), letterbox=False).size == (80, 80)


def test_preprocess_is_float32_chw_in_unit_range(face):
    tensor = preprocess(face, [112, 96, 3], letterbox=True)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 112, 96)
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0


def test_is_image_file_is_case_insensitive():
    assert is_image_file("a.JPG") and is_image_file("b.png") and not is_image_file("notes.txt")
