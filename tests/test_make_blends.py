"""recipes/make_blends.py: the two kinds of new face, and the script's files on the real fixture faces."""
import os
import sys

import numpy as np
import pytest

from conftest import FIXTURES
from recipes import make_blends
from recipes.make_blends import RAMP, blend, draw_pairs
from utils.annotation import annotate
from utils.config import run_main
from utils.dataloader import read_annotation
from utils.image import open_rgb


def test_mix_weighs_the_two_faces_and_cut_joins_them_at_the_row():
    first, second = np.full((40, 30, 3), 200, np.uint8), np.full((40, 30, 3), 100, np.uint8)
    assert (blend(first, second, "mix", 0.25) == 125).all()
    cut = blend(first, second, "cut", 0.5)
    assert (cut[:20 - RAMP // 2] == 200).all() and (cut[20 + RAMP // 2:] == 100).all()
    column = cut[:, 0, 0].astype(int)
    assert (np.diff(column) <= 0).all() and 100 < column[20] < 200   # a ramp, not a step


def test_pairs_are_of_different_people():
    labels = np.array([0, 0, 1, 2, 2, 2])
    pairs = draw_pairs(labels, 50, np.random.default_rng(0))
    assert pairs.shape == (50, 2) and (labels[pairs[:, 0]] != labels[pairs[:, 1]]).all()


def run_script(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["make_blends.py", *args])
    for name in make_blends.RULES:   # configure() sets the module's settings; restore them afterwards
        monkeypatch.setattr(make_blends, name, getattr(make_blends, name))
    run_main(lambda: (make_blends.configure(vars(make_blends)), make_blends.main()))


def test_script_writes_the_faces_and_their_annotations(tmp_path, monkeypatch, capsys):
    annotation = tmp_path / "cls_train.txt"
    annotate(os.path.join(FIXTURES, "faces"), str(annotation), str(tmp_path / "cls_names.txt"))
    out = tmp_path / "blends"
    run_script(monkeypatch, "--annotation_path", str(annotation), "--output_dir", str(out), "--per_kind", "3")
    mix, cut, both = (read_annotation(str(out / f"{name}.txt")) for name in ("mix", "cut", "all"))
    assert len(mix.paths) == len(cut.paths) == 3 and both.paths == mix.paths + cut.paths
    assert all(os.path.dirname(p).endswith("mix") for p in mix.paths) and (both.labels == 0).all()
    sources = {np.asarray(open_rgb(p)).tobytes() for p in read_annotation(str(annotation)).paths}
    for path in both.paths:
        face = np.asarray(open_rgb(path))
        assert face.shape == (160, 160, 3) and face.tobytes() not in sources   # new faces, not copies
    assert not list(out.rglob("*.tmp"))
    rows = (out / "sources.csv").read_text().splitlines()
    assert rows[0] == "face,kind,first,second,amount" and len(rows) == 7 and rows[1].startswith("mix/000000.jpg,mix,")


def test_one_person_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    annotation = tmp_path / "one.txt"
    person = os.path.join(FIXTURES, "faces", "celeba_7201")
    annotation.write_text("".join(f"0;{os.path.join(person, n)}\n" for n in sorted(os.listdir(person))))
    with pytest.raises(SystemExit) as stopped:
        run_script(monkeypatch, "--annotation_path", str(annotation), "--output_dir", str(tmp_path / "b"))
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "one.txt: blends need images of at least two people" in err
    assert len(err.strip().splitlines()) == 1
