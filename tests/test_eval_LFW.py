"""eval_LFW.py end to end on the small real LFW fixture, in a subprocess as a user runs it."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import FIXTURES, ROOT
from nets.facenet import Facenet

IMAGES = os.path.join(FIXTURES, "lfw", "images")
PAIRS = os.path.join(FIXTURES, "lfw", "pairs.txt")


def run_eval(tmp_path, weights, *extra, shape=("--input_shape", "64,64,3")):
    args = [sys.executable, "eval_LFW.py", "--model_path", str(weights), "--lfw_dir_path", IMAGES,
            "--lfw_pairs_path", PAIRS, *shape, "--num_workers", "1",
            "--png_save_path", str(tmp_path / "out" / "roc.png"),
            "--json_save_path", str(tmp_path / "out" / "eval.json"), *extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "random_mobilenet.pth"
    torch.save(Facenet("mobilenet", mode="predict").state_dict(), path)
    return path


@pytest.mark.slow
def test_writes_png_and_json_with_every_number(tmp_path, weights):
    done = run_eval(tmp_path, weights)
    assert done.returncode == 0, done.stderr
    for words in ("accuracy", "threshold", "VAL@FAR", "AUC", "EER", "flip off", "folds 1,2,3", "images/s",
                  "wall time"):
        assert words in done.stdout
    with open(tmp_path / "out" / "roc.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["threshold"] == report["threshold_mean"] and 0 < report["threshold"] < 2
    assert report["checkpoint"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert report["settings"]["input_shape"] == [64, 64, 3] and report["flip"] is False
    assert len(report["fold_accuracies"]) == 3 and report["num_images"] == 28
    assert len(report["roc_fpr"]) == len(report["roc_tpr"]) > 2
    impostors = report["impostors"]  # the 1:N statistics predict.py's identify mode reads
    assert impostors["images"] == 28 and len(impostors["distances"]["1"]) >= 2
    assert "folds 1,2,3" in impostors["measured_on"]
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(".tmp")]


@pytest.mark.slow
def test_fold_subset_and_flip(tmp_path, weights):
    done = run_eval(tmp_path, weights, "--folds", "2,3", "--flip", "True")
    assert done.returncode == 0, done.stderr
    assert "flip on" in done.stdout and "folds 2,3" in done.stdout
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["folds"] == [2, 3] and report["num_pairs"] == 12 and report["flip"] is True


@pytest.mark.slow
def test_bf16_and_automatic_workers(tmp_path, weights):
    done = run_eval(tmp_path, weights, "--precision", "bf16", "--num_workers", "auto")
    assert done.returncode == 0, done.stderr
    assert "cpu bf16" in done.stdout and "(auto)" in done.stdout
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["precision"] == "bf16" and isinstance(report["workers"], int)
    assert report["settings"]["num_workers"] == "auto"


@pytest.mark.slow
def test_collapsed_model_prints_a_warning_not_a_score(tmp_path):
    model = Facenet("mobilenet", mode="predict")
    torch.nn.init.zeros_(model.Bottleneck.weight)  # every face gets the same embedding
    path = tmp_path / "collapsed.pth"
    torch.save(model.state_dict(), path)
    done = run_eval(tmp_path, path)
    assert done.returncode == 0, done.stderr
    assert "WARNING: all 18 distances are equal" in done.stdout
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["accuracy_mean"] is None


@pytest.mark.parametrize("change, words", [
    (("--model_path", "missing.pth"), "no such weights file"),
    (("--lfw_dir_path", "no_lfw_here"), "no such LFW folder"),
    (("--lfw_pairs_path", "no_pairs.txt"), "no such pairs file"),
    (("--folds", "11"), "do not exist"),
    (("--batch_size", "0"), "--batch_size must be at least 1"),
    (("--input_shape", "0,0,3"), "--input_shape must be height,width,3"),
    (("--backbone", "resnet"), "--backbone must be one of"),
    (("--png_save_path", "roc.xyz"), "must end in one of"),
    (("--json_save_path", "tests"), "is a folder"),
    (("--precision", "fp64"), "--precision must be one of fp32, bf16, fp16"),
    pytest.param(("--precision", "fp16"), "needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is CUDA")),
    (("--num_workers", "many"), "--num_workers must be auto or a whole number"),
    (("--num_workers", "-1"), "--num_workers must be auto or a whole number"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, weights, change, words):
    done = run_eval(tmp_path, weights, *change)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and words in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.slow
def test_input_shape_comes_from_the_weights_json(tmp_path, weights):
    from utils.checkpoint import write_weights_info
    write_weights_info(str(weights), "mobilenet", [64, 64, 3])
    done = run_eval(tmp_path, weights, shape=())
    assert done.returncode == 0, done.stderr
    assert "images at 64x64" in done.stdout and "warning" not in done.stdout
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["input_shape"] == [64, 64, 3] and report["backbone"] == "mobilenet"
    done = run_eval(tmp_path, weights, shape=("--input_shape", "80,80,3"))
    assert "warning: --input_shape 80,80,3 contradicts" in done.stdout and "images at 80x80" in done.stdout


def test_help_exits_0():
    done = subprocess.run([sys.executable, "eval_LFW.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "json_save_path = " in done.stdout and done.stderr == ""
