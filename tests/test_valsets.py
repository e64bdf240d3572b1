"""Validation sets: a .bin built from LFW scores like the folder, CALFW/CPLFW lists, several sets in
eval_LFW.py and per epoch in train.py."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from nets.facenet import FacenetNet
from utils.binset import write_pairs_bin
from utils.checkpoint import load_file
from utils.lfw import PairsError, evaluate_lfw, load_pairs
from utils.valsets import best_metric, expand, load_set, load_sets, read_pairs_list, set_name, table

IMAGES = os.path.join(FIXTURES, "lfw", "images")
PAIRS = os.path.join(FIXTURES, "lfw", "pairs.txt")
SHIPPED = os.path.join(ROOT, "model_data", "facenet_mobilenet.pth")


def lfw_bin(path) -> str:
    """A .bin of the fixture's LFW pairs (in pairs.txt order), made from the aligned image files."""
    write_pairs_bin(str(path), load_pairs(PAIRS, IMAGES))
    return str(path)


@pytest.fixture(scope="module")
def model():
    net = FacenetNet("mobilenet")
    net.load_state_dict(load_file(str(SHIPPED), ""), strict=False)
    return net.eval()


NUMBERS = ("accuracy_mean", "accuracy_std", "fold_accuracies", "threshold_mean", "thresholds", "val", "val_std",
           "far", "auc", "eer", "roc_fpr", "roc_tpr", "same_distance_mean", "diff_distance_mean")


def test_a_bin_built_from_lfw_scores_as_the_folder_number_for_number(tmp_path, model):
    folder = load_pairs(PAIRS, IMAGES)
    binset = load_set(lfw_bin(tmp_path / "lfw.bin"), folds=3)  # the fixture's 3 sets of 6 pairs
    assert binset.pairs.fold.tolist() == folder.fold.tolist()
    args = ([32, 32, 3], True, 1, "cpu")  # one image a batch: each embedding is computed alike in both
    a, b = evaluate_lfw(model, folder, *args, progress=False), evaluate_lfw(model, binset.pairs, *args, progress=False)
    assert np.isfinite(a["accuracy_mean"])
    for key in NUMBERS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # NaN where both are collapsed


def write_pairs_list(folder, rows) -> str:
    """A CALFW-style list of (name, name, label) pairs over the fixture's images, in ``aligned images``."""
    os.makedirs(folder / "aligned images")
    lines = []
    for left, right, label in rows:
        for name in (left, right):
            person = name.rsplit("_", 1)[0]
            shutil.copy(os.path.join(IMAGES, person, name), folder / "aligned images" / name)
            lines.append(f"{name} {label}")
    (folder / "pairs_CALFW.txt").write_text("\n".join(lines) + "\n")
    return str(folder / "pairs_CALFW.txt")


def test_calfw_lists_give_folds_to_positives_and_deal_negatives_in_order(tmp_path):
    rows = [("Abdullah_0001.jpg", "Abdullah_0002.jpg", 1), ("Aaron_Sorkin_0001.jpg", "Aaron_Sorkin_0002.jpg", 1),
            ("Abdullah_0002.jpg", "Abdullah_0003.jpg", 2), ("Abdullah_Gul_0001.jpg", "Abdullah_Gul_0006.jpg", 2),
            ("Abdullah_0001.jpg", "Teresa_Heinz_Kerry_0001.jpg", 0), ("Abdullah_0003.jpg", "Samuel_Waksal_0001.jpg", 0),
            ("Adrien_Brody_0003.jpg", "Damon_Dash_0001.jpg", 0),
            ("Abbas_Kiarostami_0001.jpg", "Fujio_Mitarai_0001.jpg", 0)]
    path = write_pairs_list(tmp_path, rows)
    pairs = read_pairs_list(path)
    assert pairs.issame.tolist() == [True] * 4 + [False] * 4
    assert pairs.fold.tolist() == [1, 1, 2, 2, 1, 1, 2, 2]
    assert len(pairs.paths) == 13 and os.path.basename(pairs.paths[pairs.left[0]]) == "Abdullah_0001.jpg"
    assert pairs.left[4] == pairs.left[0]  # each distinct image once
    assert set_name(path) == "calfw"
    text = open(path).read().splitlines()
    text[1] = text[1].replace(" 1", " 2")
    open(path, "w").write("\n".join(text))
    with pytest.raises(PairsError, match="line 1: the two lines of a pair carry different labels"):
        read_pairs_list(path)


def test_set_names_folders_and_best_metric(tmp_path):
    lfw_bin(tmp_path / "lfw.bin")
    shutil.copy(tmp_path / "lfw.bin", tmp_path / "cfp_fp.bin")
    assert [os.path.basename(p) for p in expand(str(tmp_path))] == ["cfp_fp.bin", "lfw.bin"]
    sets = load_sets(f"{tmp_path},{tmp_path / 'lfw.bin'}", folds=3, taken=("lfw",))
    assert [s.name for s in sets] == ["cfp_fp", "lfw_2", "lfw_3"]
    assert sets[0].alignment is None  # 160 px crops: not insightface's 112 px warps
    nan = float("nan")
    assert best_metric({"cfp_fp_accuracy": 0.7, "val_loss": 1.0}, "cfp_fp") == ("cfp_fp_accuracy", True)
    assert best_metric({"cfp_fp_accuracy": nan, "val_loss": 1.0, "loss": 2.0}, "cfp_fp") == ("val_loss", False)
    assert best_metric({"lfw_accuracy": nan, "val_loss": nan, "loss": 2.0}, "lfw") == ("loss", False)


def test_table_has_a_row_per_set():
    result = {"num_pairs": 600, "accuracy_mean": 0.9, "accuracy_std": 0.01, "val": 0.5, "val_std": 0.1, "auc": 0.95,
              "eer": 0.1, "far_target": 1e-3, "warning": None}
    lines = table({"lfw": result, "agedb_30": result})
    assert len(lines) == 3 and "VAL@FAR=0.001" in lines[0]
    assert lines[2].split()[:5] == ["agedb_30", "600", "0.90000", "+-", "0.01000"]


@pytest.mark.slow
def test_eval_lfw_scores_bins_and_lists_one_row_each(tmp_path):
    lfw_bin(tmp_path / "sets" / "lfw.bin")
    shutil.copy(tmp_path / "sets" / "lfw.bin", tmp_path / "sets" / "agedb_30.bin")
    args = [sys.executable, "eval_LFW.py", "--model_path", SHIPPED, "--bin_path", str(tmp_path / "sets"),
            "--bin_folds", "3", "--input_shape", "64,64,3", "--num_workers", "0",
            "--png_save_path", str(tmp_path / "roc.png"), "--json_save_path", str(tmp_path / "eval.json")]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.split()[:1] in (["lfw"], ["agedb_30"])]
    assert [r[0] for r in rows] == ["agedb_30", "lfw"] and rows[0][2:] == rows[1][2:]  # the same pairs
    saved = json.load(open(tmp_path / "eval.json"))
    assert set(saved["sets"]) == {"lfw", "agedb_30"} and saved["threshold"] == saved["sets"]["lfw"]["threshold_mean"]
    assert (tmp_path / "roc.png").stat().st_size > 1000
    (tmp_path / "evil.bin").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    done = subprocess.run(args[:5] + [str(tmp_path / "evil.bin")] + args[6:], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "refused: it names os.system" in done.stderr


@pytest.mark.slow
def test_train_scores_each_set_every_epoch_and_picks_best_by_name(tmp_path, capsys):
    import train
    from utils.annotation import annotate
    from utils.config import settings_of
    annotate(os.path.join(FIXTURES, "faces"), str(tmp_path / "cls_train.txt"), str(tmp_path / "names.txt"))
    lfw_bin(tmp_path / "lfw.bin")
    shutil.copy(tmp_path / "lfw.bin", tmp_path / "cfp_fp.bin")
    cfg = settings_of(vars(train))
    cfg.update(annotation_path=str(tmp_path / "cls_train.txt"), input_shape=[64, 64, 3], batch_size=6,
               num_workers=0, val_split=0.3, Epoch=1, save_dir=str(tmp_path / "logs"), precision="fp32",
               lfw_dir_path=IMAGES, lfw_pairs_path=PAIRS, val_sets=f"{tmp_path / 'cfp_fp.bin'},{tmp_path / 'lfw.bin'}",
               bin_folds=3, best_set="cfp_fp")
    train.train(cfg)
    out = capsys.readouterr().out
    assert "Best cfp_fp_accuracy" in out or "Best val_loss" in out  # untrained BatchNorm may give equal distances
    run_dir = next((tmp_path / "logs").glob("loss_*"))
    header = next(csv.reader(open(run_dir / "history.csv")))
    assert "lfw_accuracy" in header and "cfp_fp_accuracy" in header and "lfw_2_accuracy" in header
    info = json.load(open(tmp_path / "logs" / "best_epoch_weights.json"))  # NaN (untrained) is written as null
    assert "cfp_fp_accuracy" in info and "alignment" not in info  # a folder without align_settings.json
    cfg.update(best_set="agedb_30", save_dir=str(tmp_path / "other"))
    from utils.config import UserError
    with pytest.raises(UserError, match="--best_set agedb_30 is none of the validation sets"):
        train.train(cfg)
