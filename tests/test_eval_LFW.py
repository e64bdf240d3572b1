"""eval_LFW.py end to end on the small real LFW fixture: in a subprocess as a user runs it (slow), and
in-process for the bad inputs that stop it before any work."""
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import FIXTURES, ROOT
from nets.facenet import FacenetNet

IMAGES = os.path.join(FIXTURES, "lfw", "images")
PAIRS = os.path.join(FIXTURES, "lfw", "pairs.txt")
SCRIPT = os.path.join(ROOT, "eval_LFW.py")


def run_eval(tmp_path, weights, *extra, shape=("--input_shape", "64,64,3")):
    args = [sys.executable, "eval_LFW.py", "--model_path", str(weights), "--lfw_dir_path", IMAGES,
            "--lfw_pairs_path", PAIRS, *shape, "--num_workers", "1",
            "--png_save_path", str(tmp_path / "out" / "roc.png"),
            "--json_save_path", str(tmp_path / "out" / "eval.json"), *extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


def eval_in_process(tmp_path, weights, monkeypatch, capsys, *extra) -> tuple[int, str]:
    """Run eval_LFW.py here as ``python eval_LFW.py ...`` would; returns (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--model_path", str(weights), "--lfw_dir_path", IMAGES,
                                      "--lfw_pairs_path", PAIRS, "--input_shape", "64,64,3", "--num_workers", "0",
                                      "--png_save_path", str(tmp_path / "out" / "roc.png"),
                                      "--json_save_path", str(tmp_path / "out" / "eval.json"), *extra])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(SCRIPT, run_name="__main__")
    return info.value.code, capsys.readouterr().err


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "random_mobilenet.pth"
    torch.save(FacenetNet("mobilenet").state_dict(), path)
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
    model = FacenetNet("mobilenet")
    torch.nn.init.zeros_(model.Bottleneck.weight)  # every face gets the same embedding
    path = tmp_path / "collapsed.pth"
    torch.save(model.state_dict(), path)
    done = run_eval(tmp_path, path)
    assert done.returncode == 0, done.stderr
    assert "WARNING: all 18 distances are equal" in done.stdout and "Likely cause" in done.stdout
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["accuracy_mean"] is None


@pytest.mark.slow
def test_nearly_collapsed_model_is_named_and_gives_no_threshold(tmp_path):
    torch.manual_seed(0)
    model = FacenetNet("mobilenet")
    with torch.no_grad():  # features of about 1e-9 around an offset of 1e-6: faces lie about 1e-5 apart,
        model.last_bn.bias.normal_(0, 1e-6)  # as after a failed short run
    path = tmp_path / "collapsed.pth"
    torch.save(model.state_dict(), path)
    done = run_eval(tmp_path, path, "--save_threshold", "True")
    assert done.returncode == 0, done.stderr
    assert "WARNING: the embeddings have collapsed" in done.stdout and "--Epoch" in done.stdout
    assert "threshold not saved: the model has collapsed" in done.stdout
    assert not (tmp_path / "collapsed.json").exists()
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["collapsed"] is True and report["threshold"] is None and report["accuracy_mean"] is not None


@pytest.mark.slow
def test_save_threshold_writes_the_short_facts_beside_the_weights(tmp_path, weights):
    from utils.checkpoint import model_settings, write_weights_info
    write_weights_info(str(weights), "mobilenet", [64, 64, 3], extra={"alignment": {"mode": "warp", "size": 112}})
    done = run_eval(tmp_path, weights, "--save_threshold", "True", shape=())
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    info = json.loads((tmp_path / "random_mobilenet.json").read_text())
    assert set(info) == {"backbone", "input_shape", "threshold", "threshold_measured_on", "alignment", "impostors"}
    assert info["threshold"] == report["threshold"] and info["alignment"] == {"mode": "warp", "size": 112}
    assert info["threshold_measured_on"]["pairs"] == 18 and "folds 1,2,3" in info["threshold_measured_on"]["set"]
    assert len(json.dumps(info)) < 2000 and len(report["roc_fpr"]) > 2  # the curve stays in the evaluation
    assert model_settings(str(weights)).threshold == report["threshold"]  # what facenet.py and predict.py use
    done = run_eval(tmp_path, weights, shape=())
    assert "--save_threshold True" in done.stdout  # without it, says how to keep the threshold


@pytest.mark.slow
def test_raw_lfw_photos_get_a_warning_naming_align_dataset(tmp_path, weights):
    from PIL import Image
    raw = tmp_path / "raw_lfw"
    for person in os.listdir(IMAGES):
        os.makedirs(raw / person)
        for name in os.listdir(os.path.join(IMAGES, person)):
            Image.open(os.path.join(IMAGES, person, name)).resize((250, 250)).save(raw / person / name)
    done = run_eval(tmp_path, weights, "--lfw_dir_path", str(raw))
    assert done.returncode == 0, done.stderr
    assert f"warning: {raw} looks unaligned" in done.stdout and "align_dataset.py" in done.stdout
    assert "looks unaligned" not in run_eval(tmp_path, weights).stdout


def test_default_outputs_land_under_the_ignored_logs_folder():
    settings = runpy.run_path(SCRIPT, run_name="settings_only")
    assert settings["json_save_path"].startswith("logs/") and settings["png_save_path"].startswith("logs/")
    with open(os.path.join(ROOT, ".gitignore"), encoding="utf-8") as handle:
        assert "logs/*" in handle.read().split()


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
def test_bad_input_is_one_line_and_exit_2(tmp_path, weights, monkeypatch, capsys, change, words):
    code, err = eval_in_process(tmp_path, weights, monkeypatch, capsys, *change)
    assert code == 2
    assert err.startswith("error: ") and words in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def lfw_with(tmp_path, missing: str, failures: bool) -> str:
    """A copy of the fixture's LFW without image ``missing``, listed in a failures.csv when ``failures``."""
    images = tmp_path / "lfw"
    shutil.copytree(IMAGES, images)
    os.remove(images / missing)
    if failures:
        (images / "failures.csv").write_text(f"path,reason\n{missing},no face found\n")
    return str(images)


@pytest.mark.parametrize("case, words", [
    ("not utf-8", "pairs.txt: not UTF-8 text"),
    ("json under /proc", "--json_save_path /proc/lfw/eval.json: /proc cannot hold files"),
    ("png under /proc", "--png_save_path /proc/roc.png: /proc cannot hold files"),
    ("json is the weights' JSON", "is the weights' JSON, an input of this run"),
    ("missing, failures.csv", "failures.csv; add centre crops for those with python align_dataset.py"),
    ("missing, no failures.csv", "--no_face centre (the pairs need every image)"),
])
def test_more_bad_inputs_name_the_file_and_what_to_do(tmp_path, weights, monkeypatch, capsys, case, words):
    extra = {"json under /proc": ["--json_save_path", "/proc/lfw/eval.json"],
             "png under /proc": ["--png_save_path", "/proc/roc.png"],
             "json is the weights' JSON": ["--json_save_path", str(weights)[:-4] + ".json"]}.get(case, [])
    if case == "not utf-8":
        (tmp_path / "pairs.txt").write_bytes(b"3 3\nAaron\xe9 1 2\n")
        extra = ["--lfw_pairs_path", str(tmp_path / "pairs.txt")]
    elif case.startswith("missing"):
        extra = ["--lfw_dir_path", lfw_with(tmp_path, os.path.join("Dean_Barker", "Dean_Barker_0001.jpg"),
                                            "no failures" not in case)]
    code, err = eval_in_process(tmp_path, weights, monkeypatch, capsys, *extra)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert words in err, err
    if case == "missing, failures.csv":
        assert "--retry_failed True --no_face centre" in err


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


def test_help_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [SCRIPT, "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(SCRIPT, run_name="__main__")
    out, err = capsys.readouterr()
    assert info.value.code == 0 and "json_save_path = " in out and "save_threshold = " in out and err == ""
