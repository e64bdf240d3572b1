"""Inference API (facenet.Facenet) on the real sample faces: the shipped weights' distances, and random
weights for everything else."""
import io
import json
import os
import struct
import zlib

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, SHARED, requires_shared
import facenet
from facenet import FALLBACK_THRESHOLD, Facenet
from nets.facenet import FacenetNet
from utils.config import UserError
from utils.image import ImageError

SAMPLES = [os.path.join(ROOT, "img", name) for name in ("1_001.jpg", "1_002.jpg", "2_001.jpg")]
THRESHOLD = 0.9


def make_weights(directory, threshold: float | None = THRESHOLD) -> str:
    """A complete checkpoint without classifier (random weights) and, optionally, its threshold JSON."""
    torch.manual_seed(0)
    path = os.path.join(directory, "facenet_test.pth")
    torch.save(FacenetNet(backbone="mobilenet").state_dict(), path)
    if threshold is not None:
        with open(os.path.join(directory, "facenet_test.json"), "w") as handle:
            json.dump({"threshold": threshold, "accuracy": 0.5}, handle)
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels but holds no pixel data."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def odd_images(directory) -> dict[str, str]:
    """Valid but unusual encodings of a real face: every one must work like the plain JPEG."""
    face = Image.open(SAMPLES[0]).convert("RGB")
    gray = face.convert("L")
    names = ("gray.png", "rgba.png", "palette.png", "cmyk.jpg", "gray16.png", "exif_rotated.jpg", "large.jpg")
    paths = {name: os.path.join(directory, name) for name in names}
    gray.save(paths["gray.png"])
    rgba = face.convert("RGBA")
    alpha = Image.new("L", face.size, 0)
    alpha.paste(255, (20, 20, 140, 140))
    rgba.putalpha(alpha)
    rgba.save(paths["rgba.png"])
    face.quantize(64).save(paths["palette.png"])
    face.convert("CMYK").save(paths["cmyk.jpg"], quality=95)
    Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257).save(paths["gray16.png"])
    # Stored turned a quarter left; EXIF orientation 6 tells viewers to turn it back.
    exif = Image.Exif()
    exif[0x0112] = 6
    face.crop((0, 20, 160, 140)).transpose(Image.Transpose.ROTATE_90).save(
        paths["exif_rotated.jpg"], exif=exif.tobytes(), quality=95)
    face.resize((6000, 4000)).save(paths["large.jpg"], quality=80)
    return paths


def bad_files(directory) -> dict[str, str]:
    """Inputs that are not usable images; each must give one clear line."""
    paths = {name: os.path.join(directory, name) for name in
             ("missing.jpg", "a_directory.jpg", "text.jpg", "truncated.jpg", "empty.jpg")}
    os.mkdir(paths["a_directory.jpg"])
    with open(paths["text.jpg"], "w") as handle:
        handle.write("this is not a picture\n")
    with open(SAMPLES[0], "rb") as handle:
        data = handle.read()
    with open(paths["truncated.jpg"], "wb") as handle:
        handle.write(data[: len(data) // 2])
    open(paths["empty.jpg"], "wb").close()
    return paths


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def model(weights):
    return Facenet(model_path=weights, cuda=False, align=False)


def test_shipped_weights_give_the_documented_distances_on_the_sample_images():
    """The README's numbers (python predict.py img/1_001.jpg img/1_002.jpg ...): update them together with
    the shipped weights; aligned as predict.py aligns them, by the weights' JSON."""
    shipped = Facenet(cuda=False, figure=False)
    pairs = [(0, 1, 0.461), (0, 2, 1.488), (1, 2, 1.513)]
    assert [round(shipped.distance(SAMPLES[i], SAMPLES[j]), 3) for i, j, _ in pairs] == [d for _, _, d in pairs]
    assert [shipped.compare(SAMPLES[i], SAMPLES[j]).verdict for i, j, _ in pairs] == \
        ["same person", "different people", "different people"]


def test_embed_of_a_list_matches_single_calls(model):
    batch = model.embed(SAMPLES)
    assert batch.shape == (3, 128) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    singles = np.concatenate([model.embed([path]) for path in SAMPLES])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    as_pil = model.embed([Image.open(path) for path in SAMPLES])
    np.testing.assert_allclose(as_pil, batch, atol=1e-6)
    assert model.embed([]).shape == (0, 128)


def test_detect_image_distance_verdict_and_headless_figure(model, tmp_path, capsys):
    matplotlib.use("Agg")
    model.figure_path = str(tmp_path / "sub" / "result.png")
    distance = model.detect_image(SAMPLES[0], SAMPLES[2])
    e1, _, e3 = model.embed(SAMPLES)
    assert isinstance(distance, float)
    assert distance == pytest.approx(float(np.linalg.norm(e1 - e3)), abs=1e-5)
    with open(model.figure_path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"figure saved to {model.figure_path}" in capsys.readouterr().out
    assert model.verdict(THRESHOLD - 0.01) == "same person"
    assert model.verdict(THRESHOLD + 0.01) == "different people"


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the fallback on a machine without a GPU")
def test_cuda_falls_back_to_cpu_with_a_note(weights, capsys):
    model = Facenet(model_path=weights, cuda=True, verbose=True)
    out = capsys.readouterr().out
    assert model.device.type == "cpu"
    assert "no GPU" in out and "device           cpu" in out


def test_input_shape_travels_with_the_weights(tmp_path):
    weights = make_weights(tmp_path)
    assert Facenet(model_path=weights, cuda=False).input_shape == [160, 160, 3]
    with open(os.path.splitext(weights)[0] + ".json", "w") as handle:
        json.dump({"threshold": THRESHOLD, "input_shape": [112, 112, 3]}, handle)
    model = Facenet(model_path=weights, cuda=False)
    assert model.input_shape == [112, 112, 3]
    assert model._inputs(["img/1_001.jpg"])[0].shape == (1, 3, 112, 112)
    with pytest.warns(UserWarning, match="contradicts .*facenet_test.json, where the weights were trained at 112"):
        assert Facenet(model_path=weights, cuda=False, input_shape=[128, 128, 3]).input_shape == [128, 128, 3]


def test_threshold_sources(weights, tmp_path, capsys):
    assert Facenet(model_path=weights, cuda=False).threshold == THRESHOLD
    assert Facenet(model_path=weights, cuda=False, threshold=1.25).threshold == 1.25
    bare = make_weights(tmp_path, threshold=None)
    capsys.readouterr()
    assert Facenet(model_path=bare, cuda=False).threshold == FALLBACK_THRESHOLD
    assert capsys.readouterr().out == ""  # the API is quiet unless asked
    Facenet(model_path=bare, cuda=False, verbose=True)
    assert "none stored beside" in capsys.readouterr().out
    with open(tmp_path / "facenet_test.json", "w") as handle:
        handle.write("{not json")
    with pytest.raises(UserError, match="facenet_test.json"):
        Facenet(model_path=bare, cuda=False)
    with pytest.raises(UserError, match="--threshold must be above 0 and at most 2, not 5"):
        Facenet(model_path=weights, cuda=False, threshold=5)


def test_embed_decodes_a_bounded_number_of_images_at_a_time(model, monkeypatch):
    monkeypatch.setattr(facenet, "EMBED_BATCH", 2)
    sizes = []
    inputs = model._inputs
    monkeypatch.setattr(model, "_inputs", lambda images: (sizes.append(len(images)), inputs(images))[1])
    many = SAMPLES * 2 + SAMPLES[:1]
    embeddings = model.embed(iter(many))
    assert sizes == [2, 2, 2, 1] and embeddings.shape == (7, 128)
    monkeypatch.setattr(facenet, "EMBED_BATCH", 32)
    np.testing.assert_allclose(embeddings, model.embed(many), atol=1e-5)


def test_one_path_where_a_list_belongs_and_paths_that_are_none_are_one_line_errors(model, weights):
    for single in (SAMPLES[0], Image.open(SAMPLES[0])):
        with pytest.raises(UserError, match=r"takes a list of images, not one: write embed\(\[") as info:
            model.embed(single)
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="model_path must be the path of a weights file .*, not None"):
        Facenet(model_path=None, cuda=False)
    with pytest.raises(UserError, match="onnx_path must be the path of an ONNX file"):
        Facenet(model_path=weights, onnx_path=5, cuda=False)


def test_missing_weights_and_unknown_setting(tmp_path):
    with pytest.raises(UserError, match="train.py") as info:
        Facenet(model_path=str(tmp_path / "none.pth"), cuda=False)
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="treshold"):
        Facenet(treshold=1.0)


def test_odd_encodings_decode_like_the_original(model, tmp_path):
    paths = odd_images(tmp_path)
    original = np.asarray(Image.open(SAMPLES[0]).convert("RGB"), dtype=np.float32)
    faces = {name: model.face(path) for name, path in paths.items()}
    assert all(face.mode == "RGB" for face in faces.values())
    for name in ("cmyk.jpg", "palette.png"):
        assert np.abs(np.asarray(faces[name], np.float32) - original).mean() < 8, name
    gray = np.asarray(Image.open(SAMPLES[0]).convert("L"), dtype=np.float32)
    assert np.abs(np.asarray(faces["gray16.png"], np.float32)[..., 0] - gray).mean() < 1
    upright = original[20:140]
    assert faces["exif_rotated.jpg"].size == (160, 120)
    assert np.abs(np.asarray(faces["exif_rotated.jpg"], np.float32) - upright).mean() < 8
    assert faces["large.jpg"].size == (6000, 4000)
    embeddings = model.embed(list(paths.values()))
    assert embeddings.shape == (len(paths), 128) and np.isfinite(embeddings).all()


def test_bad_files_raise_one_line_image_errors(model, tmp_path):
    for name, path in bad_files(tmp_path).items():
        with pytest.raises(ImageError) as info:
            model.embed([SAMPLES[0], path])
        assert path in str(info.value) and "\n" not in str(info.value), name
    with open(SAMPLES[0], "rb") as handle:
        half = handle.read()[:4000]
    with pytest.raises(ImageError, match="truncated"):
        model.face(Image.open(io.BytesIO(half)))


@pytest.fixture(scope="module")
def aligning_model(weights):
    return Facenet(model_path=weights, cuda=False, align=True)


def test_align_crops_the_face_out_of_a_photo(aligning_model, tmp_path):
    photo = Image.new("RGB", (400, 300), (90, 90, 90))
    photo.paste(Image.open(SAMPLES[0]), (200, 100))
    photo.save(tmp_path / "photo.jpg")
    face = aligning_model.face(str(tmp_path / "photo.jpg"))
    assert face.size == (160, 160)
    assert aligning_model.face(face) is face
    (x1, y1, x2, y2), = aligning_model.detector.detect(photo).boxes
    assert abs((x1 + x2) / 2 - 280) < 20 and abs((y1 + y2) / 2 - 180) < 20  # the pasted face's centre
    Image.new("RGB", (200, 200), (120, 130, 140)).save(tmp_path / "wall.png")
    with pytest.raises(ImageError, match="wall.png: no face found"):
        aligning_model.embed([str(tmp_path / "photo.jpg"), str(tmp_path / "wall.png")])


@requires_shared
def test_align_matches_the_aligned_sample_images(aligning_model):
    """img/1_001.jpg is align_dataset.py's crop of this LFW photo: predict must align the same way."""
    raw = os.path.join(SHARED, "data", "lfw", "lfw-deepfunneled", "John_Kerry", "John_Kerry_0003.jpg")
    face = np.asarray(aligning_model.face(raw), dtype=np.float32)
    sample = np.asarray(Image.open(SAMPLES[0]), dtype=np.float32)
    assert np.abs(face - sample).mean() < 3


@pytest.fixture(scope="module")
def auto_model(weights):
    return Facenet(model_path=weights, cuda=False)


def test_auto_align_keeps_face_crops_and_aligns_photos(auto_model, tmp_path):
    assert auto_model.align == "auto"
    crop = auto_model.face(SAMPLES[0])
    assert np.array_equal(np.asarray(crop), np.asarray(Image.open(SAMPLES[0]).convert("RGB")))
    photo = Image.new("RGB", (400, 300), (90, 90, 90))
    photo.paste(Image.open(SAMPLES[0]), (200, 100))
    face = auto_model.face(photo)
    assert face.size == (160, 160) and auto_model.face(face) is face
    Image.new("RGB", (200, 200), (120, 130, 140)).save(tmp_path / "wall.png")
    with pytest.raises(ImageError, match="wall.png: no face found.*--align False"):
        auto_model.face(str(tmp_path / "wall.png"))


@pytest.mark.parametrize("box, size, tight", [
    ((16, 16, 144, 144), (160, 160), True),     # align_dataset's crop: 128 of 160 px, centred
    ((40, 40, 120, 120), (160, 160), False),    # a loose photo: the face is half the side
    ((30, 16, 158, 144), (160, 160), False),    # off centre
    ((16, 56, 144, 184), (160, 240), False),    # not square
    ((4, 4, 156, 156), (160, 160), True),
])
def test_face_crop_geometry(box, size, tight):
    from utils.alignment import is_face_crop
    assert is_face_crop(np.array([box], np.float32), 0, size) is tight


def test_distance_draws_nothing_and_compare_gives_the_verdict(model, tmp_path, capsys):
    model.figure_path = str(tmp_path / "never.png")
    distance = model.distance(SAMPLES[0], SAMPLES[2])
    comparison = model.compare(SAMPLES[0], SAMPLES[2])
    assert comparison.distance == pytest.approx(distance) and comparison.warning is None
    assert comparison.verdict == model.verdict(distance)
    assert not os.path.exists(model.figure_path) and capsys.readouterr().out == ""


def test_default_weights_are_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = Facenet(cuda=False, align=False)
    assert model.model_path == os.path.join(ROOT, "model_data", "facenet_mobilenet.pth")
    assert model.input_shape == [112, 112, 3] and model.backbone == "mobilenet"
    with open(os.path.join(ROOT, "model_data", "facenet_mobilenet.json")) as handle:
        assert model.threshold == json.load(handle)["threshold"]  # the shipped JSON's, read from elsewhere


def broken_weights(directory, how: str) -> str:
    net = FacenetNet(backbone="mobilenet")
    if how == "nan":
        torch.nn.init.constant_(net.Bottleneck.weight, float("nan"))
    elif how == "nan_output":  # every entry finite, but a negative variance gives NaN embeddings
        net.last_bn.running_var.fill_(-1.0)
    else:  # collapsed: every face gets the same embedding
        torch.nn.init.zeros_(net.Bottleneck.weight)
    path = os.path.join(directory, f"{how}.pth")
    torch.save(net.state_dict(), path)
    return path


def test_broken_embeddings_are_never_a_bare_verdict(tmp_path):
    with pytest.raises(UserError, match="NaN or infinite values"):
        Facenet(model_path=broken_weights(tmp_path, "nan"), cuda=False)
    nan_model = Facenet(model_path=broken_weights(tmp_path, "nan_output"), cuda=False, align=False)
    with pytest.raises(UserError, match="NaN"):
        nan_model.distance(SAMPLES[0], SAMPLES[2])
    collapsed = Facenet(model_path=broken_weights(tmp_path, "collapsed"), cuda=False, align=False)
    comparison = collapsed.compare(SAMPLES[0], SAMPLES[2])
    assert comparison.distance < 1e-3 and comparison.verdict == "no verdict"
    assert "same embedding" in comparison.warning
    same = collapsed.compare(SAMPLES[0], SAMPLES[0])  # one image twice: distance 0 is right
    assert same.warning is None and same.verdict == "same person"


def test_bad_settings_and_a_bad_json_are_one_line_errors(weights, tmp_path):
    for kwargs, words in (({"align": "maybe"}, "--align must be one of auto"),
                          ({"backbone": "resnet"}, "--backbone must be one of"),
                          ({"input_shape": [0, 0, 3]}, "sides from 16"),
                          ({"input_shape": 160}, "height,width,channels")):
        with pytest.raises(UserError, match=words):
            Facenet(model_path=weights, cuda=False, **kwargs)
    bad = make_weights(tmp_path, threshold=None)
    with open(os.path.splitext(bad)[0] + ".json", "w") as handle:
        json.dump({"input_shape": [112, 112]}, handle)
    with pytest.raises(UserError, match="facenet_test.json: input_shape takes height,width,channels"):
        Facenet(model_path=bad, cuda=False)


@requires_shared
def test_auto_align_decides_like_the_explicit_settings_on_lfw(auto_model, aligning_model, model):
    raw = os.path.join(SHARED, "data", "lfw", "lfw-deepfunneled", "John_Kerry", "John_Kerry_0003.jpg")
    assert np.array_equal(np.asarray(auto_model.face(raw)), np.asarray(aligning_model.face(raw)))
    assert np.array_equal(np.asarray(auto_model.face(SAMPLES[1])), np.asarray(model.face(SAMPLES[1])))
