"""txt_annotation.py on a copy of the real fixture faces with the awkward cases users bring."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import FIXTURES, ROOT
from utils.annotation import annotate
from utils.dataloader import AnnotationError, read_annotation

FACES = os.path.join(FIXTURES, "faces")


@pytest.fixture
def datasets(tmp_path):
    """The fixture people plus: a spaced name, a non-ASCII name, a ';' in a name, a one-image person,
    an empty folder, a folder of stray files only, stray files, an upper-case extension and a broken JPEG."""
    root = tmp_path / "datasets"
    shutil.copytree(FACES, root)
    first = sorted(os.listdir(FACES))[0]
    images = sorted(os.path.join(FACES, first, f) for f in os.listdir(os.path.join(FACES, first)))
    for name, count in (("Anna Maria", 2), ("Zoë Ünal", 3), ("semi;colon", 2), ("solo", 1)):
        os.makedirs(root / name)
        for image in images[:count]:
            shutil.copy(image, root / name)
    os.makedirs(root / "empty")
    os.makedirs(root / "notes_only")
    (root / "notes_only" / "readme.txt").write_text("not a face")
    (root / first / "labels.txt").write_text("stray")
    (root / "list.txt").write_text("stray at the top level")
    shutil.copy(images[0], root / "solo" / "UPPER.JPG")
    (root / "Anna Maria" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_ids_names_and_paths(datasets, tmp_path):
    ann, names = tmp_path / "cls_train.txt", tmp_path / "cls_names.txt"
    summary = annotate(str(datasets), str(ann), str(names))
    folders = sorted(["Anna Maria", "Zoë Ünal", "semi;colon", "solo"] + os.listdir(FACES))
    assert [line.split(";", 1)[1] for line in names.read_text(encoding="utf-8").splitlines()] == folders
    assert [int(line.split(";", 1)[0]) for line in names.read_text(encoding="utf-8").splitlines()] == \
        list(range(len(folders)))
    annotation = read_annotation(str(ann))
    assert sorted(set(annotation.labels.tolist())) == list(range(len(folders)))
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in annotation.paths)
    by_name = {folders[label]: [] for label in range(len(folders))}
    for path, label in zip(annotation.paths, annotation.labels):
        by_name[folders[label]].append(os.path.basename(path))
        assert os.path.basename(os.path.dirname(path)) == folders[label]
    assert "UPPER.JPG" in by_name["solo"] and len(by_name["solo"]) == 2
    assert len(by_name["semi;colon"]) == 2 and len(by_name["Zoë Ünal"]) == 3
    assert "broken.jpg" not in by_name["Anna Maria"] and len(by_name["Anna Maria"]) == 2
    assert not any(p.endswith(".txt") for p in annotation.paths)
    assert summary == {"people": len(folders), "images": 24 + 2 + 3 + 2 + 2, "single": 0,
                       "unreadable": [str(datasets / "Anna Maria" / "broken.jpg")], "nested": [], "unsafe": []}


def test_one_image_people_and_unchecked_files(datasets, tmp_path):
    os.remove(datasets / "solo" / "UPPER.JPG")
    summary = annotate(str(datasets), str(tmp_path / "a.txt"), str(tmp_path / "n.txt"), check=False)
    assert summary["single"] == 1 and summary["unreadable"] == []
    assert summary["images"] == 24 + 3 + 3 + 2 + 1  # the broken file is listed when not checked


def test_relative_paths_resolve_against_the_annotation_file(datasets, tmp_path):
    ann = tmp_path / "sub" / "cls_train.txt"
    os.makedirs(ann.parent)
    annotate(str(datasets), str(ann), str(tmp_path / "sub" / "names.txt"), absolute=False)
    first = ann.read_text(encoding="utf-8").splitlines()[0]
    assert first.split(";", 1)[1].startswith(os.path.join("..", "datasets"))
    assert all(os.path.isfile(p) for p in read_annotation(str(ann)).paths)


def test_script_prints_a_summary_and_rejects_a_missing_folder(datasets, tmp_path):
    script = os.path.join(ROOT, "txt_annotation.py")
    done = subprocess.run([sys.executable, script, "--datasets_path", str(datasets)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "10 people, 33 images; 0 people with one image only" in done.stdout
    assert "1 unreadable files left out" in done.stdout
    assert (tmp_path / "cls_train.txt").is_file() and (tmp_path / "cls_names.txt").is_file()
    missing = subprocess.run([sys.executable, script, "--datasets_path", str(tmp_path / "nope")], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such folder" in missing.stderr


def test_bad_annotation_lines_are_named(tmp_path):
    bad = tmp_path / "cls_train.txt"
    bad.write_text("0;a.jpg\nnot a line\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"cls_train.txt:2: expected"):
        read_annotation(str(bad))
    with pytest.raises(AnnotationError, match="run `python txt_annotation.py` first"):
        read_annotation(str(tmp_path / "missing.txt"))


def test_truncated_jpeg_is_left_out(datasets, tmp_path):
    good = sorted((datasets / "solo").iterdir())[0]
    data = good.read_bytes()
    (datasets / "solo" / "truncated.jpg").write_bytes(data[: len(data) * 2 // 3])  # header intact
    summary = annotate(str(datasets), str(tmp_path / "a.txt"), str(tmp_path / "n.txt"))
    assert str(datasets / "solo" / "truncated.jpg") in summary["unreadable"]
    assert "truncated.jpg" not in (tmp_path / "a.txt").read_text(encoding="utf-8")


def test_nested_folders_and_unwritable_names_are_reported(datasets, tmp_path):
    source = sorted((datasets / "solo").iterdir())[0]
    os.makedirs(datasets / "solo" / "sub")
    shutil.copy(source, datasets / "solo" / "sub" / "deep.jpg")
    os.makedirs(datasets / "two\nlines")
    shutil.copy(source, datasets / "two\nlines" / "a.jpg")
    shutil.copy(source, datasets / "solo" / "odd\u2028name.jpg")
    summary = annotate(str(datasets), str(tmp_path / "a.txt"), str(tmp_path / "n.txt"))
    assert summary["nested"] == [str(datasets / "solo" / "sub" / "deep.jpg")]
    assert sorted(summary["unsafe"]) == sorted([str(datasets / "solo" / "odd\u2028name.jpg"),
                                                str(datasets / "two\nlines" / "a.jpg")])
    names = (tmp_path / "n.txt").read_text(encoding="utf-8")
    assert "two" not in names and len(read_annotation(str(tmp_path / "a.txt")).paths) == summary["images"]


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--check_images", "perhaps"], "--check_images takes True or False"),
    (["--annotation_path", "DIR"], "is a folder"),
    (["--names_path", "cls_train.txt"], "are the same file"),
    (["--datasets_path", "DIR/nope"], "no such folder"),
])
def test_bad_settings_exit_2_with_one_line(datasets, tmp_path, args, words):
    args = [a.replace("DIR", str(tmp_path)) for a in args]
    done = subprocess.run([sys.executable, os.path.join(ROOT, "txt_annotation.py"), "--datasets_path",
                           str(datasets), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and words in line
