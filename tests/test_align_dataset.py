"""align_dataset.py and its library utils/align_folder.py on small trees of the committed photos: outputs,
failures.csv, resume, layouts."""
import csv
import json
import os
import runpy
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import FIXTURES, ROOT
from utils import align_folder
from utils.config import UserError
from utils.detect import DetectorError
from utils.runtime import SettingError

PHOTOS = os.path.join(FIXTURES, "mtcnn")
WEIGHTS = os.path.join(ROOT, "model_data")


def put(tree, rel, source):
    """Copy fixture ``source`` to ``tree/rel``, converting it when the extension asks for another format."""
    path = os.path.join(tree, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if rel.endswith(".png"):
        Image.open(os.path.join(PHOTOS, source)).save(path)
    else:
        shutil.copy(os.path.join(PHOTOS, source), path)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {row["path"]: row["reason"] for row in csv.DictReader(f)}


@pytest.fixture
def nested(tmp_path):
    """Person folders with good photos, a photo without a face, a broken file and a non-image file."""
    root = tmp_path / "raw"
    put(root, "Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol_0001.jpg")
    put(root, "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", "Aaron_Peirsol_0002.jpg")
    put(root, "Matthew_Perry/Matthew_Perry_0003.png", "Matthew_Perry_0003.jpg")
    put(root, "Texture/texture_no_face.jpg", "texture_no_face.jpg")
    (root / "Texture" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "Texture" / "notes.txt").write_text("not an image")
    return root


class CountingAligner:
    """Wraps align_folder.align_file to count the images it is asked to do."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, detector, src, dst, **kwargs):
        self.calls.append(os.path.basename(src))
        return self.real(detector, src, dst, **kwargs)


def test_nested_tree_is_aligned_and_failures_listed(nested, tmp_path):
    out = tmp_path / "aligned"
    summary = align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS)
    assert summary.images == 5 and summary.aligned == 3 and summary.kept == 0
    for rel in ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
                "Matthew_Perry/Matthew_Perry_0003.jpg"]:
        with Image.open(out / rel) as face:
            assert face.format == "JPEG" and face.size == (160, 160) and face.mode == "RGB"
    failures = read_csv(out / "failures.csv")
    assert failures == summary.failures
    no_face, broken = os.path.join("Texture", "texture_no_face.jpg"), os.path.join("Texture", "broken.jpg")
    assert set(failures) == {no_face, broken}
    assert failures[no_face] == "no face found"
    assert "broken.jpg" in failures[broken]
    assert not os.path.exists(out / "Texture" / "texture_no_face.jpg")
    assert not [f for _, _, files in os.walk(out) for f in files if f.endswith(".tmp")]


def test_centre_fallback_writes_a_crop_and_still_lists_the_image(nested, tmp_path):
    out = tmp_path / "aligned"
    summary = align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS, no_face="centre")
    no_face = os.path.join("Texture", "texture_no_face.jpg")
    assert summary.failures[no_face] == "no face found; centre crop written"
    with Image.open(out / no_face) as face:
        assert face.size == (160, 160)
    assert not os.path.exists(out / "Texture" / "broken.jpg")


def test_second_run_redoes_nothing_unless_asked(nested, tmp_path, monkeypatch):
    out = tmp_path / "aligned"
    first = align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS)
    stamp = os.path.getmtime(out / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    counter = CountingAligner(align_folder.align_file)
    monkeypatch.setattr(align_folder, "align_file", counter)
    second = align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS)
    assert counter.calls == []
    assert second.aligned == 0 and second.kept == 3 and second.failures == first.failures
    assert os.path.getmtime(out / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg") == stamp
    assert read_csv(out / "failures.csv") == first.failures
    # A removed output is redone; earlier failures are retried only on request.
    os.remove(out / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg")
    third = align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS, retry_failed=True)
    assert sorted(counter.calls) == ["Aaron_Peirsol_0002.jpg", "broken.jpg", "texture_no_face.jpg"]
    assert third.aligned == 1 and third.kept == 2 and third.failures == first.failures


def test_flat_folder_warp_mode_and_name_clash(tmp_path):
    root = tmp_path / "flat"
    put(root, "a.jpg", "Aaron_Peirsol_0001.jpg")
    put(root, "b.png", "Colin_Powell_0047.jpg")
    put(root, "a.png", "Aaron_Peirsol_0002.jpg")  # would also become a.jpg
    out = tmp_path / "aligned"
    summary = align_folder.align_tree(str(root), str(out), mode="warp", image_size=112, weights_dir=WEIGHTS)
    assert sorted(os.listdir(out)) == ["a.jpg", "align_settings.json", "b.jpg", "failures.csv"]
    with Image.open(out / "b.jpg") as face:
        assert face.size == (112, 112)
    assert summary.images == 3 and summary.aligned == 2
    assert summary.failures == {"a.png": "same output name a.jpg as a.jpg"}
    again = align_folder.align_tree(str(root), str(out), mode="warp", image_size=112, weights_dir=WEIGHTS)
    assert again.images == 3 and again.kept == 2


def test_thresholds_reach_the_detector(nested, tmp_path):
    summary = align_folder.align_tree(str(nested), str(tmp_path / "out"), thresholds=(0.6, 0.7, 1.0),
                                       weights_dir=WEIGHTS)
    assert summary.aligned == 0 and len(summary.failures) == 5
    assert list(summary.failures.values()).count("no face found") == 4


def test_missing_weights_stop_before_writing(nested, tmp_path):
    with pytest.raises(DetectorError, match="pnet.pt"):
        align_folder.align_tree(str(nested), str(tmp_path / "out"), weights_dir=str(tmp_path / "none"))
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_command_line_with_two_workers(nested, tmp_path):
    out = tmp_path / "aligned"
    args = ["--input_dir", str(nested), "--output_dir", str(out), "--num_workers", "2",
            "--image_size", "128", "--margin", "16"]
    run = subprocess.run([sys.executable, "align_dataset.py", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "5 images: 3 aligned (60.00%; 3 now, 0 kept from before), 2 failed" in run.stdout
    with Image.open(out / "Matthew_Perry" / "Matthew_Perry_0003.jpg") as face:
        assert face.size == (128, 128)
    bad = subprocess.run([sys.executable, "align_dataset.py", "--input_dir", str(nested), "--mode", "affine"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --mode must be one of crop, warp, not 'affine'"


@pytest.mark.parametrize("where, words", [("same", "is the input folder"), ("inside", "is inside --input_dir"),
                                          ("around", "contains --input_dir")])
def test_output_folder_must_be_apart_from_the_input(nested, where, words):
    out = {"same": nested, "inside": nested / "Texture" / "aligned", "around": nested.parent}[where]
    with pytest.raises(UserError, match=words):
        align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS)
    assert sorted(os.listdir(nested / "Texture")) == ["broken.jpg", "notes.txt", "texture_no_face.jpg"]


def test_settings_are_recorded_and_a_rerun_with_others_refused(nested, tmp_path, monkeypatch):
    out = tmp_path / "aligned"
    align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS)
    recorded = json.loads((out / "align_settings.json").read_text())
    assert recorded["image_size"] == 160 and recorded["mode"] == "crop" and recorded["margin"] == 32
    with pytest.raises(UserError, match="image_size 160.*not image_size 112.*--redo True"):
        align_folder.align_tree(str(nested), str(out), image_size=112, margin=16, weights_dir=WEIGHTS)
    with Image.open(out / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg") as face:
        assert face.size == (160, 160)
    counter = CountingAligner(align_folder.align_file)
    monkeypatch.setattr(align_folder, "align_file", counter)
    redone = align_folder.align_tree(str(nested), str(out), image_size=112, margin=16, weights_dir=WEIGHTS,
                                      redo=True)
    assert redone.kept == 0 and len(counter.calls) == 5
    with Image.open(out / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg") as face:
        assert face.size == (112, 112)
    assert json.loads((out / "align_settings.json").read_text())["image_size"] == 112


def test_a_filled_folder_of_unknown_origin_is_refused(nested, tmp_path):
    out = tmp_path / "someone_elses"
    out.mkdir()
    (out / "photo.jpg").write_bytes(b"keep me")
    with pytest.raises(UserError, match="not empty and has no align_settings.json"):
        align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS)


@pytest.mark.parametrize("args, words", [
    (["--image_size", "0"], "--image_size must be from 16 to 4096"),
    (["--margin", "-1"], "--margin must be at least 0"),
    (["--margin", "160"], "--margin must be below --image_size (160)"),
    (["--num_workers", "-1"], "--num_workers must be auto or a whole number"),
    (["--min_face_size", "0"], "--min_face_size must be from 10 to 10000"),
    (["--thresholds", "0.6,0.7,1.5"], "--thresholds must be from 0 to 1"),
    (["--jpeg_quality", "0"], "--jpeg_quality must be from 1 to 100"),
    (["--no_face", "center"], "--no_face must be one of skip, centre"),
    (["--output_dir", "INPUT"], "is the input folder"),
    (["--output_dir", "FILE"], "is a file, not a folder"),
    (["--input_dir", "NOWHERE"], "input folder not found"),
])
def test_bad_settings_exit_2_with_one_line(nested, tmp_path, monkeypatch, capsys, args, words):
    (tmp_path / "FILE").write_text("a file")
    args = [a.replace("INPUT", str(nested)).replace("FILE", str(tmp_path / "FILE"))
            .replace("NOWHERE", str(tmp_path / "nowhere")) for a in args]
    script = os.path.join(ROOT, "align_dataset.py")
    monkeypatch.setattr(sys, "argv", [script, "--input_dir", str(nested), "--output_dir", str(tmp_path / "out"),
                                      *args])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(script, run_name="__main__")
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and words in line
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_refused(nested, tmp_path, monkeypatch, capsys):
    script = os.path.join(ROOT, "align_dataset.py")
    monkeypatch.setattr(sys, "argv", [script, "--input_dir", str(nested), "--output_dir", str(tmp_path / "o"),
                                      "--device", "cuda"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(script, run_name="__main__")
    assert info.value.code == 2 and "no GPU" in capsys.readouterr().err


def test_retry_failed_with_centre_adds_centre_crops_and_keeps_the_rest(nested, tmp_path, monkeypatch):
    out = tmp_path / "aligned"
    align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS)
    no_face = os.path.join("Texture", "texture_no_face.jpg")
    with pytest.raises(UserError, match="no_face 'skip', not no_face 'centre'.*--retry_failed True"):
        align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS, no_face="centre")
    stamp = os.path.getmtime(out / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    counter = CountingAligner(align_folder.align_file)
    monkeypatch.setattr(align_folder, "align_file", counter)
    summary = align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS, no_face="centre",
                                       retry_failed=True)
    assert sorted(counter.calls) == ["broken.jpg", "texture_no_face.jpg"]
    assert summary.kept == 3 and summary.failures[no_face] == "no face found; centre crop written"
    assert os.path.getmtime(out / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg") == stamp
    with Image.open(out / no_face) as face:
        assert face.size == (160, 160)
    recorded = json.loads((out / "align_settings.json").read_text())
    assert recorded["no_face"] == "centre" and "retried with no_face centre" in recorded["history"][0]
    counter.calls.clear()  # the folder now counts as a centre folder: a plain centre run redoes nothing
    again = align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS, no_face="centre")
    assert counter.calls == [] and again.kept == 3 and again.failures == summary.failures
    assert "history" in json.loads((out / "align_settings.json").read_text())
    with pytest.raises(UserError, match="no_face 'centre', not no_face 'skip'"):
        align_folder.align_tree(str(nested), str(out), weights_dir=WEIGHTS, retry_failed=True)


def test_alignment_workers(monkeypatch):
    monkeypatch.setattr(align_folder, "available_cores", lambda: 4)
    assert align_folder.worker_count("auto", "cpu", 13000) == 4
    assert align_folder.worker_count("auto", "cpu", 250) == 2     # a spawned worker must be worth its start
    assert align_folder.worker_count("auto", "cpu", 10) == 1      # small jobs: in this process
    assert align_folder.worker_count("auto", "cuda", 13000) == 1
    assert align_folder.worker_count("3", "cpu", 10) == 3
    with pytest.raises(SettingError):
        align_folder.worker_count("lots", "cpu", 10)


def test_the_settings_block_shows_the_spec_of_utils_alignment():
    from utils.alignment import DEFAULT
    settings = runpy.run_path(os.path.join(ROOT, "align_dataset.py"), run_name="settings_only")
    assert (settings["mode"], settings["image_size"], settings["margin"]) == (DEFAULT.mode, DEFAULT.size,
                                                                                DEFAULT.margin)
    assert tuple(settings["thresholds"]) == DEFAULT.thresholds and settings["min_face_size"] == DEFAULT.min_face_size
