"""recipes/hold_out_sets.py: the pilots' annotation leaves out exactly the people of the chosen sets."""
import sys

import pytest

from recipes import hold_out_sets
from recipes.hold_out_sets import hold_out
from utils.config import run_main


def test_hold_out_drops_the_people_and_renumbers_contiguously():
    lines = ["0;datasets/Ann/Ann_0001.jpg", "0;datasets/Ann/Ann_0002.jpg", "3;datasets/Bob/Bob_0001.jpg",
             "7;datasets/Cid/Cid_0001.jpg", "7;datasets/Cid/Cid_0002.jpg"]
    assert hold_out(lines, {"Bob"}) == ["0;datasets/Ann/Ann_0001.jpg", "0;datasets/Ann/Ann_0002.jpg",
                                        "1;datasets/Cid/Cid_0001.jpg", "1;datasets/Cid/Cid_0002.jpg"]
    assert hold_out(lines, {"Ann", "Cid"}) == ["0;datasets/Bob/Bob_0001.jpg"]


def test_script_writes_the_annotation_and_rejects_a_missing_file(tmp_path, monkeypatch, capsys):
    people = tmp_path / "people.txt"
    people.write_text("2\n1\nAnn 2\n1\nBob 1\n")
    annotation = tmp_path / "cls_train.txt"
    annotation.write_text("0;datasets/Ann/Ann_0001.jpg\n1;datasets/Bob/Bob_0001.jpg\n")
    out = tmp_path / "cls_pilot.txt"
    argv = ["hold_out_sets.py", "--annotation_path", str(annotation), "--lfw_people_path", str(people),
            "--held_out_sets", "1", "--output_path", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    for name in hold_out_sets.RULES:   # configure() sets the module's settings; restore them afterwards
        monkeypatch.setattr(hold_out_sets, name, getattr(hold_out_sets, name))
    run_main(hold_out_sets.main)
    assert out.read_text() == "0;datasets/Bob/Bob_0001.jpg\n"
    argv[argv.index(str(people))] = str(tmp_path / "absent.txt")
    with pytest.raises(SystemExit) as stopped:
        run_main(hold_out_sets.main)
    assert stopped.value.code == 2 and "absent.txt: no such file" in capsys.readouterr().err
