"""recipes/make_trainset.py: the training folder links the chosen LFW people, the extra people, and their alignment."""
import json
import os
import subprocess
import sys

from conftest import ROOT, assert_one_line_error


def aligned_folder(root, people, mode, size):
    for person in people:
        (root / person).mkdir(parents=True)
        (root / person / f"{person}_0001.jpg").write_bytes(b"")
    (root / "align_settings.json").write_text(json.dumps({"mode": mode, "image_size": size, "margin": 32}))
    return root


def arguments(tmp_path, lfw, extra):
    people = tmp_path / "people.txt"
    people.write_text("2\n1\nAnn 1\n1\nBob 1\n")
    return ["-m", "recipes.make_trainset", "--lfw_dir_path", str(lfw), "--lfw_people_path", str(people),
            "--lfw_sets", "1", "--extra_dirs", str(extra), "--output_dir", str(tmp_path / "datasets")]


def test_links_the_chosen_people_and_the_shared_alignment(tmp_path):
    lfw = aligned_folder(tmp_path / "lfw", ["Ann", "Bob"], "warp", 112)
    extra = aligned_folder(tmp_path / "celeba", ["celeba_1"], "warp", 112)
    subprocess.run([sys.executable, *arguments(tmp_path, lfw, extra)], cwd=ROOT, check=True, capture_output=True)
    out = tmp_path / "datasets"
    assert sorted(os.listdir(out)) == ["Ann", "align_settings.json", "celeba_1"]   # Bob is of set 2
    assert json.loads((out / "align_settings.json").read_text())["mode"] == "warp"


def test_folders_aligned_two_ways_are_refused_in_one_line(tmp_path):
    lfw = aligned_folder(tmp_path / "lfw", ["Ann"], "warp", 112)
    extra = aligned_folder(tmp_path / "celeba", ["celeba_1"], "crop", 160)
    assert_one_line_error(arguments(tmp_path, lfw, extra), "were aligned differently")
    assert not (tmp_path / "datasets").exists()
