"""LFW pairs parsing on a small real subset, embedding of image lists, and the one-call evaluation."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FIXTURES, ROOT, SHARED, requires_shared
from nets.facenet import FacenetNet
from utils.image import ImageError, open_rgb, preprocess
from utils.runtime import inference_copy
from utils.lfw import (MissingLFWError, PairsError, embed_paths, evaluate_lfw, load_pairs, parse_folds, read_pairs,
                       unaligned_warning)

LFW = os.path.join(FIXTURES, "lfw")
IMAGES = os.path.join(LFW, "images")
PAIRS = os.path.join(LFW, "pairs.txt")


@pytest.fixture(autouse=True)
def one_thread():
    """The networks here are tiny: with two threads on a busy shared machine, OpenMP's threads wait on
    each other at every layer and a 30 ms forward pass takes seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def lfw_copy(tmp_path):
    """A writable copy of the fixture: (pairs path, image folder)."""
    shutil.copytree(LFW, tmp_path / "lfw")
    return str(tmp_path / "lfw" / "pairs.txt"), str(tmp_path / "lfw" / "images")


def test_load_pairs_reads_the_fixture():
    pairs = load_pairs(PAIRS, IMAGES)
    assert len(pairs.issame) == 18 and pairs.issame.sum() == 9
    assert pairs.fold.tolist() == [1] * 6 + [2] * 6 + [3] * 6
    assert pairs.issame.tolist()[:6] == [True] * 3 + [False] * 3
    assert len(pairs.paths) == len(set(pairs.paths)) == 28  # shared images appear once
    assert all(os.path.isfile(p) for p in pairs.paths)
    first = [os.path.basename(pairs.paths[pairs.left[0]]), os.path.basename(pairs.paths[pairs.right[0]])]
    assert first == ["Abel_Pacheco_0001.jpg", "Abel_Pacheco_0004.jpg"]
    mismatched = os.path.basename(pairs.paths[pairs.right[3]])
    assert mismatched == "Dean_Barker_0001.jpg"
    assert pairs.left.dtype == np.int64 and pairs.right.max() < len(pairs.paths)


def test_fold_selection_keeps_only_those_sets_and_images():
    pairs = load_pairs(PAIRS, IMAGES, folds=[2, 3])
    assert set(pairs.fold.tolist()) == {2, 3} and len(pairs.issame) == 12
    assert not any("Abel_Pacheco" in p for p in pairs.paths)
    assert parse_folds("all") is None and parse_folds("8,9,10") == [8, 9, 10]
    with pytest.raises(PairsError, match="sets 1..3"):
        load_pairs(PAIRS, IMAGES, folds=[4])
    with pytest.raises(PairsError, match="folds"):
        parse_folds("eight")


def test_missing_image_is_one_line_naming_the_count_and_file(lfw_copy):
    pairs_path, images = lfw_copy
    os.remove(os.path.join(images, "Dean_Barker", "Dean_Barker_0001.jpg"))
    with pytest.raises(FileNotFoundError) as info:
        load_pairs(pairs_path, images)
    message = str(info.value)
    assert "1 of 28 images" in message and "Dean_Barker_0001.jpg" in message
    assert "align" in message and "\n" not in message
    load_pairs(pairs_path, images, folds=[2, 3])  # the missing image is only used by set 1


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such LFW folder"):
        load_pairs(PAIRS, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no such pairs file"):
        load_pairs(str(tmp_path / "pairs.txt"), IMAGES)


@pytest.mark.parametrize("edit, where", [
    (lambda lines: lines[:3] + ["Abel_Pacheco\tone\t4"] + lines[4:], "line 4"),
    (lambda lines: lines[:3] + ["Abel_Pacheco 1 2 3 4"] + lines[4:], "line 4"),
    (lambda lines: ["10 300"] + lines[1:], "header says"),
    (lambda lines: ["pairs"] + lines[1:], "line 1"),
    (lambda lines: lines[:-1], "header says"),
    (lambda lines: lines[:1] + lines[10:11] + lines[2:10] + lines[1:2] + lines[11:], "set 1 has 2 matched"),
])
def test_malformed_pairs_file_names_the_file_and_line(tmp_path, edit, where):
    lines = open(PAIRS).read().splitlines()
    bad = tmp_path / "bad_pairs.txt"
    bad.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(PairsError) as info:
        load_pairs(str(bad), IMAGES)
    assert str(bad) in str(info.value) and where in str(info.value)


def test_png_and_jpeg_extensions_are_accepted(lfw_copy):
    pairs_path, images = lfw_copy
    jpg = os.path.join(images, "Dean_Barker", "Dean_Barker_0001.jpg")
    Image.open(jpg).save(jpg[:-4] + ".png")
    os.remove(jpg)
    pairs = load_pairs(pairs_path, images)
    assert any(p.endswith("Dean_Barker_0001.png") for p in pairs.paths)


def small_model(backbone="mobilenet", num_classes=None):
    torch.manual_seed(0)
    model = FacenetNet(backbone, num_classes=num_classes)
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding them is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def test_embed_paths_matches_model_embed_and_keeps_the_model_mode():
    paths = load_pairs(PAIRS, IMAGES).paths[:6]
    shape = [64, 64, 3]
    model = small_model(num_classes=5)
    out = embed_paths(model, paths, shape, True, batch_size=4, device="cpu", progress=False)
    assert model.training, "the caller's train mode must be kept"
    assert out.dtype == np.float32 and out.shape == (6, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    x = torch.stack([preprocess(open_rgb(p), shape, True) for p in paths])
    model.eval()
    with torch.no_grad():
        expected = model.embed(x).numpy()
        mirrored = model.embed(x.flip(3)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)
    flipped = embed_paths(model, paths, shape, True, batch_size=4, device="cpu", flip=True, progress=False)
    both = expected + mirrored
    np.testing.assert_allclose(flipped, both / np.linalg.norm(both, axis=1, keepdims=True), atol=1e-4)


def test_batchnorm_folding_keeps_inception_outputs():
    model = small_model("inception_resnetv1").eval()
    fused = inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(fused.embed(x), model.embed(x), atol=1e-4, rtol=1e-4)


def test_bad_image_is_reported_in_one_line(lfw_copy):
    pairs_path, images = lfw_copy
    pairs = load_pairs(pairs_path, images)
    with open(pairs.paths[2], "wb") as handle:
        handle.write(b"not a jpeg")
    torch.set_num_threads(2)  # embed_paths lowers it while the worker runs (when cores are few)
    with pytest.raises(ImageError) as info:
        embed_paths(small_model(), pairs.paths, [32, 32, 3], True, 8, "cpu", num_workers=1,
                    progress=False)
    assert pairs.paths[2] in str(info.value) and "\n" not in str(info.value)
    assert torch.get_num_threads() == 2, "the thread count is restored, also after an error"


def test_evaluate_lfw_on_the_fixture():
    pairs = load_pairs(PAIRS, IMAGES)
    torch.manual_seed(0)
    r = evaluate_lfw(FacenetNet("mobilenet"), pairs, [64, 64, 3], True, 16, "cpu", progress=False)
    assert r["folds"] == [1, 2, 3] and r["num_pairs"] == 18 and r["num_images"] == 28
    assert 0.0 <= r["accuracy_mean"] <= 1.0 and 0.0 < r["threshold_mean"] < 2.0
    assert r["images_per_second"] > 0 and r["warning"] is None


@requires_shared
def test_official_pairs_against_raw_lfw():
    official = os.path.join(SHARED, "data", "lfw", "pairs.txt")
    shipped = os.path.join(ROOT, "model_data", "lfw_pair.txt")
    assert open(shipped).read() == open(official).read()
    pairs = load_pairs(shipped, os.path.join(SHARED, "data", "lfw", "lfw-deepfunneled"))
    assert len(pairs.issame) == 6000 and len(pairs.paths) == 7701
    assert np.bincount(pairs.fold).tolist() == [0] + [600] * 10
    assert pairs.issame.sum() == 3000


def test_missing_images_point_to_failures_csv_and_no_face_centre(lfw_copy):
    pairs_path, images = lfw_copy
    os.remove(os.path.join(images, "Dean_Barker", "Dean_Barker_0001.jpg"))
    with pytest.raises(MissingLFWError, match="--no_face centre \\(the pairs need every image\\)"):
        load_pairs(pairs_path, images)
    with open(os.path.join(images, "align_settings.json"), "w") as handle:
        json.dump({"input_dir": "/data/raw_lfw", "mode": "crop", "image_size": 160}, handle)
    with open(os.path.join(images, "failures.csv"), "w") as handle:
        handle.write("path,reason\nDean_Barker/Dean_Barker_0001.jpg,no face found\n")
    with pytest.raises(MissingLFWError) as info:
        load_pairs(pairs_path, images)
    assert os.path.join(images, "failures.csv") in str(info.value)
    assert f"--input_dir /data/raw_lfw --output_dir {images} --retry_failed True --no_face centre" in str(info.value)


def test_pairs_file_that_is_not_utf8_is_named_in_one_line_and_a_bom_is_fine(tmp_path):
    with open(PAIRS, "rb") as handle:
        text = handle.read()
    (tmp_path / "latin1.txt").write_bytes(text.replace(b"Dean_Barker", b"Dean_B\xe4rker"))
    with pytest.raises(PairsError, match="latin1.txt: not UTF-8 text \\(byte 0xe4"):
        read_pairs(str(tmp_path / "latin1.txt"))
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + text)
    assert read_pairs(str(tmp_path / "bom.txt")) == read_pairs(PAIRS)


def test_raw_lfw_photos_are_told_from_aligned_faces(tmp_path):
    raw = tmp_path / "raw"
    paths = []
    for i in range(3):
        os.makedirs(raw / f"P{i}")
        paths.append(str(raw / f"P{i}" / f"P{i}_0001.jpg"))
        Image.new("RGB", (250, 250)).save(paths[-1])
    assert "looks unaligned" in unaligned_warning(str(raw), paths)
    assert "align_dataset.py" in unaligned_warning(str(raw), paths)
    (raw / "align_settings.json").write_text(json.dumps({"mode": "crop", "image_size": 250, "margin": 40}))
    assert unaligned_warning(str(raw), paths) is None  # aligned by align_dataset.py, at 250 px
    aligned = os.path.join(FIXTURES, "lfw", "images")
    assert unaligned_warning(aligned, [os.path.join(aligned, "Dean_Barker", "Dean_Barker_0001.jpg")]) is None
