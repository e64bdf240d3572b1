"""predict.py as a user runs it: arguments, the interactive loop, bad inputs, exit codes, no tracebacks."""
import os
import runpy
import shutil
import signal
import subprocess
import sys

import pytest
import torch
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


@pytest.mark.parametrize("change, words", [
    (("--precision", "bf32"), "--precision must be fp32, bf16 or fp16"),
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
