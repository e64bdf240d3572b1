"""predict.py as a user runs it: arguments, the interactive loop, bad inputs, exit codes, no tracebacks."""
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from test_facenet import SAMPLES, THRESHOLD, bad_files, make_weights, odd_images, png_header

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
    (["--threshold", "5"], "threshold must be a number above 0 and at most 2"),
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
    assert 'align = "auto"' in out and "# auto: align raw photos" in out and "Compare two face images" in out
