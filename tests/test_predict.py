"""predict.py as a user runs it: arguments, the interactive loop, bad inputs, exit codes, no tracebacks."""
import csv
import io
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from test_facenet import SAMPLES, THRESHOLD, bad_files, make_weights, odd_images, png_header
from test_gallery import NO_FACE, STRANGER, face_files, group_photo, make_known
from utils import gallery as galleries
from utils import open_set
from utils.identify import CSV_COLUMNS

PREDICT = os.path.join(ROOT, "predict.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("predict")
    make_weights(directory)
    return directory


def options(workdir) -> list[str]:
    return ["--model_path", str(workdir / "facenet_test.pth"), "--figure_path", str(workdir / "figure.png"),
            "--cuda", "False"]


def run(args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, PREDICT, *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def error_lines(stderr: str) -> list[str]:
    """stderr split into lines; every line must be one of ours, never a traceback or a warning."""
    lines = stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), stderr
    return lines


@pytest.mark.slow
def test_pair_from_arguments_with_spaces_unicode_and_windows_separators(workdir):
    spaced = workdir / "my faces" / "Zoë 1.jpg"
    spaced.parent.mkdir()
    shutil.copy(SAMPLES[0], spaced)
    figure = workdir / "figure.png"
    result = run([str(spaced), "img\\1_002.jpg", *options(workdir)])
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []
    assert f"threshold        {THRESHOLD:.4f}" in result.stdout
    assert "Distance: " in result.stdout and "same person" in result.stdout
    assert f"figure saved to {figure}" in result.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_bad_argument_and_missing_weights_exit_2_with_one_line(workdir):
    result = run([SAMPLES[0], str(workdir / "nobody.jpg"), *options(workdir)])
    assert result.returncode == 2
    assert error_lines(result.stderr) == [f"error: {workdir / 'nobody.jpg'}: no such file"]
    result = run([*SAMPLES[:2], "--model_path", str(workdir / "absent.pth")])
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert "absent.pth" in line and "train.py" in line


@pytest.mark.slow
def test_interactive_session_survives_bad_inputs_and_odd_images(workdir, tmp_path):
    bad = bad_files(tmp_path)
    odd = odd_images(tmp_path)
    # Bad entries and a blank line first (each re-asks for image_1), then five pairs, then end of input.
    typed = [*bad.values(), "", SAMPLES[0], *odd.values(), f'"{SAMPLES[2]}"', "img\\1_002.jpg"]
    result = run(options(workdir), stdin="\n".join(typed) + "\n")
    assert result.returncode == 0, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == len(bad) + 1
    for line, path in zip(errors, bad.values()):
        assert path in line
    assert result.stdout.count("Distance: ") == 5
    assert result.stdout.count("Input image_1 filename:") == len(bad) + 2 + 5


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a console process")
def test_ctrl_c_at_the_prompt_leaves_cleanly(workdir):
    env = dict(os.environ, MPLBACKEND="Agg")
    with subprocess.Popen([sys.executable, PREDICT, *options(workdir)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env) as process:
        seen = b""
        while not seen.endswith(b"Input image_1 filename:"):
            chunk = process.stdout.read(1)
            assert chunk, process.stderr.read().decode()
            seen += chunk
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    assert stderr.decode() == ""


@pytest.mark.parametrize("change, words", [
    (("--precision", "bf32"), "--precision must be one of fp32, bf16, fp16"),
    pytest.param(("--precision", "fp16"), "needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is CUDA")),
    (("--onnx_path", "absent.onnx"), "absent.onnx: no such ONNX file"),
])
def test_precision_and_onnx_settings_that_cannot_work_exit_2(workdir, change, words):
    result = run([*SAMPLES[:2], *options(workdir), *change])
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert words in line


@pytest.mark.slow
def test_bf16_without_figure(workdir):
    result = run([*SAMPLES[:2], *options(workdir), "--precision", "bf16", "--figure", "False"])
    assert result.returncode == 0, result.stderr
    assert "precision        bf16" in result.stdout and "Distance: " in result.stdout
    assert "figure saved" not in result.stdout


@pytest.mark.parametrize("case", ["a_directory.jpg", "text.jpg", "truncated.jpg", "empty.jpg", "one_argument",
                                  "no_face.png", "huge.png"])
def test_each_bad_argument_exits_2(workdir, tmp_path, monkeypatch, capsys, case):
    """The same checks in-process, one case at a time (much faster than a process per case)."""
    paths = bad_files(tmp_path)
    paths["huge.png"] = str(tmp_path / "huge.png")
    (tmp_path / "huge.png").write_bytes(png_header(20000, 20000))
    paths["no_face.png"] = str(tmp_path / "no_face.png")
    Image.new("RGB", (200, 200), (120, 130, 140)).save(paths["no_face.png"])
    args = [SAMPLES[0]] if case == "one_argument" else [SAMPLES[0], paths[case]]
    if case == "no_face.png":
        args += ["--align", "True"]
    monkeypatch.setattr(sys, "argv", [PREDICT, *args, *options(workdir)])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(PREDICT, run_name="__main__")
    assert info.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert case == "one_argument" or paths[case] in line


@pytest.mark.parametrize("args, words", [
    (["--batch", "2"], "unknown setting --batch"),
    (["--input_shape", "160"], "--input_shape takes height,width,channels"),
    (["--input_shape", "0,0,3"], "--input_shape must be height,width,3"),
    (["--backbone", "resnet50"], "--backbone must be one of mobilenet, inception_resnetv1"),
    (["--align", "maybe"], "--align must be one of auto, True, False"),
    (["--threshold", "5"], "--threshold must be above 0 and at most 2, not 5.0"),
    (["--figure_path", "FOLDER"], "is a folder"),
    (["--figure_path", "result.xyz"], "must end in"),
    (["--figure_path", "FILE/result.png"], "is a file, not a folder"),
    (["--cuda", "maybe"], "--cuda takes True or False"),
])
def test_bad_settings_exit_2_with_one_line(workdir, tmp_path, monkeypatch, capsys, args, words):
    """In-process like test_each_bad_argument_exits_2; two of them also run as a process below."""
    (tmp_path / "FILE").write_text("a file")
    args = [a.replace("FOLDER", str(tmp_path)).replace("FILE", str(tmp_path / "FILE")) for a in args]
    monkeypatch.setattr(sys, "argv", [PREDICT, *SAMPLES[:2], *options(workdir), *args])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(PREDICT, run_name="__main__")
    assert info.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert words in line


@pytest.mark.slow
def test_bad_settings_as_a_process_give_no_traceback(workdir):
    for args in (["--input_shape", "0,0,3"], ["--backbone", "resnet50"]):
        result = run([*SAMPLES[:2], *options(workdir), *args])
        assert result.returncode == 2
        assert len(error_lines(result.stderr)) == 1


@pytest.mark.slow
def test_photo_without_a_face_is_an_error_by_default(workdir, tmp_path):
    Image.new("RGB", (300, 200), (120, 130, 140)).save(tmp_path / "wall.jpg")
    result = run([SAMPLES[0], str(tmp_path / "wall.jpg"), *options(workdir)])
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert "wall.jpg: no face found" in line


@pytest.mark.slow
def test_weights_json_is_used_and_a_contradiction_is_a_warning(tmp_path):
    weights = make_weights(tmp_path, threshold=None)
    json_path = os.path.splitext(weights)[0] + ".json"
    with open(json_path, "w") as handle:
        json.dump({"backbone": "mobilenet", "input_shape": [64, 64, 3], "threshold": 0.8}, handle)
    common = [*SAMPLES[:2], "--model_path", weights, "--figure_path", str(tmp_path / "f.png"), "--cuda", "False"]
    result = run(common)
    assert result.returncode == 0, result.stderr
    assert "input_shape      [64, 64, 3]" in result.stdout and "0.8000" in result.stdout
    assert "warning" not in result.stdout
    result = run([*common, "--input_shape", "160,160,3"])
    assert result.returncode == 0, result.stderr
    assert "warning: --input_shape 160,160,3 contradicts" in result.stdout
    os.remove(json_path)
    result = run(common)
    assert "assuming 160,160,3" in result.stdout


@pytest.mark.slow
def test_broken_weights_exit_2_or_warn(tmp_path):
    from test_facenet import broken_weights
    common = [*SAMPLES[:2:1], "--figure_path", str(tmp_path / "f.png"), "--cuda", "False", "--align", "False"]
    for how in ("nan", "nan_output"):
        result = run([SAMPLES[0], SAMPLES[2], *common[2:], "--model_path", broken_weights(tmp_path, how)])
        assert result.returncode == 2
        (line,) = error_lines(result.stderr)
        assert "NaN" in line
    result = run([SAMPLES[0], SAMPLES[2], *common[2:], "--model_path", broken_weights(tmp_path, "collapsed")])
    assert result.returncode == 0, result.stderr
    assert "warning: two different images got the same embedding" in result.stdout
    assert "-> no verdict" in result.stdout and "same person" not in result.stdout


def test_help_prints_the_settings_block_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [PREDICT, "--help"])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(PREDICT, run_name="__main__")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert 'mode = "verify"' in out and "Compare two face images" in out
    assert "--align              one of auto, True, False (default 'auto')" in out  # facenet.py's setting


# --- identify and dir modes ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A gallery folder of three people, its gallery file path, and a photo of two of them and a stranger."""
    directory = tmp_path_factory.mktemp("identify")
    root = make_known(str(directory))
    photos = directory / "photos"
    photos.mkdir()
    group_photo(str(photos / "group.jpg"), [face_files("celeba_7201")[0], STRANGER, face_files("celeba_7203")[0]])
    shutil.copy(NO_FACE, photos / "wall.jpg")
    (photos / "notes.jpg").write_text("not a picture")
    return {"root": root, "gallery": str(directory / "gallery.npz"), "photos": photos, "dir": directory}


def identify_options(known) -> list[str]:
    return ["--gallery_dir", known["root"], "--gallery_path", known["gallery"], "--cuda", "False",
            "--figure_path", str(known["dir"] / "figure.png"), "--threshold", "0.8"]


@pytest.mark.slow
def test_identify_prints_every_face_and_saves_the_figure(known):
    result = run(["--mode", "identify", str(known["photos"] / "group.jpg"), *identify_options(known)])
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []
    assert "gallery: 6 images of 3 people" in result.stdout and "3 face(s)" in result.stdout
    faces = [line for line in result.stdout.splitlines() if line.startswith("  face ")]
    assert len(faces) == 3
    assert "-> celeba_7201 (distance" in faces[0] and "-> unknown (nearest" in faces[1]
    assert "-> celeba_7203 (distance" in faces[2]
    assert (known["dir"] / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_dir_mode_writes_one_row_per_face(known):
    table = known["dir"] / "out.csv"
    result = run(["--mode", "dir", "--dir_path", str(known["photos"]), "--csv_path", str(table),
                  *identify_options(known)])
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []
    assert "3 photos, 3 faces (2 named, 1 unknown), 1 without a face, 1 unreadable" in result.stdout
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["file"], r["name"]) for r in rows] == [
        ("group.jpg", "celeba_7201"), ("group.jpg", "unknown"), ("group.jpg", "celeba_7203"),
        ("notes.jpg", "unreadable"), ("wall.jpg", "no face")]
    assert all(int(r["left"]) < int(r["right"]) and int(r["top"]) < int(r["bottom"]) for r in rows[:3])
    assert float(rows[0]["distance"]) < 0.8 < float(rows[1]["distance"])
    assert rows[4]["left"] == rows[4]["distance"] == "" and "not an image" in rows[3]["note"]


def fake_gallery(gallery_dir: str, path: str) -> None:
    """A gallery file of ``gallery_dir`` as if built with other weights."""
    unit = np.full((1, 128), 128 ** -0.5, np.float32)
    galleries.save(galleries.Gallery(os.path.realpath(gallery_dir), {"weights_sha256": "0" * 64, "embedding_size": 128},
                                     ["a.jpg"], ["a"], ["0" * 64], [1], unit), path)


@pytest.mark.slow
def test_gallery_of_other_weights_exits_2_with_one_line(known, tmp_path):
    options = identify_options(known)
    options[options.index("--gallery_path") + 1] = path = str(tmp_path / "other.npz")
    fake_gallery(known["root"], path)
    result = run(["--mode", "identify", str(known["photos"] / "group.jpg"), *options])
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert "built with other weights" in line and path in line


@pytest.mark.parametrize("case", ["empty_gallery", "faceless_gallery", "missing_gallery", "duplicate_names",
                                  "other_weights", "unreadable_gallery_file", "no_face_photo", "unreadable_photo",
                                  "two_photos", "bad_mode", "missing_dir", "bad_stranger_rate", "bad_impostor_table",
                                  "teacher_file", "npy_gallery", "csv_under_proc", "figure_is_the_photo",
                                  "figure_in_gallery"])
def test_each_bad_identify_input_exits_2(known, tmp_path, monkeypatch, capsys, case):
    """In-process like test_each_bad_argument_exits_2; the subprocess test above covers one case for real."""
    gallery_dir, gallery_path, photo = known["root"], str(tmp_path / "g.npz"), str(known["photos"] / "group.jpg")
    mode, extra = "identify", []
    if case == "empty_gallery":
        gallery_dir = str(tmp_path / "empty")
        os.mkdir(gallery_dir)
    elif case == "faceless_gallery":
        gallery_dir = str(tmp_path / "faceless")
        os.mkdir(gallery_dir)
        shutil.copy(NO_FACE, os.path.join(gallery_dir, "wall_1.jpg"))
    elif case == "missing_gallery":
        gallery_dir = str(tmp_path / "nobody")
    elif case == "duplicate_names":
        gallery_dir = str(tmp_path / "dup")
        shutil.copytree(known["root"], gallery_dir)
        shutil.copy(face_files("celeba_7204")[0], os.path.join(gallery_dir, "CELEBA_7201_9.jpg"))
    elif case == "other_weights":
        fake_gallery(gallery_dir, gallery_path)
    elif case == "unreadable_gallery_file":
        with open(gallery_path, "wb") as handle:
            handle.write(b"\x00" * 100)
    elif case == "no_face_photo":
        photo = str(known["photos"] / "wall.jpg")
    elif case == "unreadable_photo":
        photo = str(known["photos"] / "notes.jpg")
    elif case == "two_photos":
        extra = [photo]
    elif case == "bad_mode":
        mode = "recognise"
    elif case == "missing_dir":
        mode, photo, extra = "dir", None, ["--dir_path", str(tmp_path / "none"), "--csv_path", str(tmp_path / "o.csv")]
    elif case == "bad_stranger_rate":
        extra = ["--max_stranger_rate", "0"]
    elif case == "bad_impostor_table":
        extra = ["--model_path", shipped_copy(tmp_path, {"tails": [0.1], "distances": {"1": [0.2, 0.9]}})]
    elif case == "teacher_file":
        np.savez(gallery_path, keys=np.array(["a/1.jpg"]), embeddings=np.zeros((1, 2, 128), np.float32),
                 missing=np.array([], dtype=str))
    elif case == "npy_gallery":
        with open(gallery_path, "wb") as handle:
            np.save(handle, np.zeros((3, 128), np.float32))
    elif case == "csv_under_proc":
        mode, photo, extra = "dir", None, ["--dir_path", str(known["photos"]), "--csv_path", "/proc/x.csv"]
    elif case == "figure_is_the_photo":
        extra = ["--figure_path", photo]
    elif case == "figure_in_gallery":
        extra = ["--figure_path", os.path.join(gallery_dir, "result.png")]
    args = ["--mode", mode, "--gallery_dir", gallery_dir, "--gallery_path", gallery_path, "--cuda", "False", *extra]
    monkeypatch.setattr(sys, "argv", [PREDICT, *args, *([photo] if photo else [])])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(PREDICT, run_name="__main__")
    assert info.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    expected = {"empty_gallery": "empty gallery: no images", "faceless_gallery": "empty gallery: no usable face",
                "missing_gallery": "no such gallery folder", "duplicate_names": "differ only in case or spaces",
                "other_weights": "built with other weights", "unreadable_gallery_file": "not a readable gallery file",
                "no_face_photo": "wall.jpg: no face found", "unreadable_photo": "notes.jpg: not an image file",
                "two_photos": "identify takes one photo", "bad_mode": "--mode must be one of verify, identify, dir",
                "missing_dir": "no such folder of photos", "bad_stranger_rate": "--max_stranger_rate must be above 0",
                "bad_impostor_table": "impostors row '1' must be",
                "teacher_file": "a teacher embeddings file (recipes/teacher_embeddings.py), not a gallery",
                "npy_gallery": "a single numpy array (.npy), not a gallery file; delete it",
                "csv_under_proc": "--csv_path /proc/x.csv: /proc cannot hold files",
                "figure_is_the_photo": "is also an input of this run",
                "figure_in_gallery": "is inside the folder of photos"}
    assert expected[case] in line
    if case in ("csv_under_proc", "figure_is_the_photo", "figure_in_gallery"):  # refused before any work
        assert not os.path.exists(gallery_path)


def shipped_copy(directory, impostors: dict) -> str:
    """The shipped weights under another name, with their JSON but the given impostor table."""
    path = os.path.join(directory, "shipped_copy.pth")
    shutil.copy(os.path.join(ROOT, "model_data", "facenet_mobilenet.pth"), path)
    with open(os.path.join(ROOT, "model_data", "facenet_mobilenet.json")) as handle:
        info = {key: value for key, value in json.load(handle).items()
                if key in ("backbone", "input_shape", "threshold", "alignment")}
    with open(os.path.join(directory, "shipped_copy.json"), "w") as handle:
        json.dump({**info, open_set.TABLE_KEY: impostors}, handle)
    return path


def test_identify_threshold_follows_the_stranger_rate(known, tmp_path, monkeypatch, capsys):
    """Without --threshold the gallery's threshold comes from the weights' impostor table and says so."""
    table = {"tails": [0.5, 0.1, 0.01, 0.001], "distances": {"1": [1.4, 1.1, 0.85, 0.65], "2": [1.4, 1.12, 0.9, 0.7]},
             "measured_on": "a test table"}
    options = identify_options(known)[:-2]  # no --threshold
    for rate in ("0.01", "0.1"):
        monkeypatch.setattr(sys, "argv", [PREDICT, "--mode", "identify", str(known["photos"] / "group.jpg"), *options,
                                          "--model_path", shipped_copy(tmp_path, table), "--max_stranger_rate", rate])
        monkeypatch.chdir(ROOT)
        runpy.run_path(PREDICT, run_name="__main__")
        out = capsys.readouterr().out
        expected = open_set.table_threshold(table, [2, 2, 2], "mean", float(rate))
        assert (f"threshold {expected:.3f} for a gallery of 3 people x 2 images at <={rate} strangers named: "
                "from the weights' impostor statistics (a test table)") in out
        assert f"unknown above distance {expected:.3f}" in out
    assert 0.85 < open_set.table_threshold(table, [2, 2, 2], "mean", 0.1) < 1.12


def test_identify_asks_for_photos_until_end_of_input(known, tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")
    typed = [str(known["photos"] / "notes.jpg"), "", str(known["photos"] / "wall.jpg"),
             f'"{known["photos"] / "group.jpg"}"']
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(typed) + "\n"))
    monkeypatch.setattr(sys, "argv", [PREDICT, "--mode", "identify", *identify_options(known),
                                      "--figure_path", str(tmp_path / "figure.png")])
    monkeypatch.chdir(ROOT)
    runpy.run_path(PREDICT, run_name="__main__")
    out, err = capsys.readouterr()
    errors = error_lines(err)
    assert len(errors) == 3 and "notes.jpg" in errors[0] and "wall.jpg: no face found" in errors[2]
    assert out.count("Input image filename:") == 5 and out.count("  face ") == 3
    assert (tmp_path / "figure.png").is_file()


def test_ctrl_c_in_dir_mode_leaves_the_csv_of_the_photos_done(known, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the third photo (the second readable one) is identified: exit 130 and a CSV of the two before."""
    from utils import identify
    calls = []
    real = identify.identify_faces

    def interrupted_on_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(identify, "identify_faces", interrupted_on_the_second)
    table = tmp_path / "out.csv"
    monkeypatch.setattr(sys, "argv", [PREDICT, "--mode", "dir", "--dir_path", str(known["photos"]), "--csv_path",
                                      str(table), *identify_options(known)])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(PREDICT, run_name="__main__")
    assert info.value.code == 130
    assert f"interrupted: {table} holds the 2 of 3 photos done" in capsys.readouterr().err
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["file"], r["name"]) for r in rows] == [("group.jpg", "celeba_7201"), ("group.jpg", "unknown"),
                                                      ("group.jpg", "celeba_7203"), ("notes.jpg", "unreadable")]
