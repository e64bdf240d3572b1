"""recipes/student_gap.py: the unseen people it picks, and bad input as one line."""
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from recipes import student_gap
from utils.config import UserError


@pytest.fixture
def lfw(tmp_path, monkeypatch):
    people = tmp_path / "people.txt"
    people.write_text("2\n2\nAnn 2\nBob 1\n1\nCid 1\n")
    for name, count in (("Ann", 2), ("Bob", 1), ("Cid", 1)):
        (tmp_path / "lfw" / name).mkdir(parents=True)
        for i in range(count):
            (tmp_path / "lfw" / name / f"{name}_{i + 1:04d}.jpg").write_bytes(b"")
    monkeypatch.setattr(student_gap, "lfw_people_path", str(people))
    monkeypatch.setattr(student_gap, "lfw_dir_path", str(tmp_path / "lfw"))
    return tmp_path / "lfw"


def test_unseen_images_are_those_of_the_sets_people(lfw, monkeypatch):
    monkeypatch.setattr(student_gap, "lfw_sets", [1])
    assert [Path(p).name for p in student_gap.unseen_images({"Cid"})] == ["Ann_0001.jpg", "Ann_0002.jpg",
                                                                         "Bob_0001.jpg"]


def test_people_seen_in_training_are_refused(lfw, monkeypatch):
    monkeypatch.setattr(student_gap, "lfw_sets", [1, 2])
    with pytest.raises(UserError, match="trains on 1 people of sets"):
        student_gap.unseen_images({"Cid"})


def test_a_missing_teacher_file_is_one_line_and_exit_2(tmp_path):
    annotation = tmp_path / "cls_train.txt"
    annotation.write_text("0;a.jpg\n")
    assert_one_line_error(["-m", "recipes.student_gap", "--annotation_path", str(annotation), "--teacher_path",
                           str(tmp_path / "none.npz")], "none.npz: no such teacher file")
