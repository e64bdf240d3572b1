"""recipes/teacher_embeddings.py --same_photos_path: the descriptors of the same photos aligned another way."""
import subprocess
import sys

import numpy as np

from conftest import ROOT, assert_one_line_error
from utils.distill import read_teacher, save_teacher


def write_inputs(tmp_path, people):
    annotation = tmp_path / "cls_warp.txt"
    annotation.write_text("".join(f"{i};warp/{p}/{p}_0001.jpg\n" for i, p in enumerate(people)))
    crop = tmp_path / "crop.npz"
    vectors = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    save_teacher(str(crop), [f"datasets/{p}/{p}_0001.jpg" for p in ("Ann", "Bob", "Cy")], vectors, [])
    return annotation, crop, vectors


def test_copies_each_photos_descriptors_under_the_new_keys(tmp_path):
    annotation, crop, vectors = write_inputs(tmp_path, ["Cy", "Ann"])
    output = tmp_path / "warp.npz"
    subprocess.run([sys.executable, "-m", "recipes.teacher_embeddings", "--annotation_path", str(annotation),
                    "--output_path", str(output), "--same_photos_path", str(crop)], cwd=ROOT, check=True,
                   capture_output=True)
    keys, copied, missing = read_teacher(str(output))
    assert keys == ["warp/Cy/Cy_0001.jpg", "warp/Ann/Ann_0001.jpg"] and missing == []
    assert np.array_equal(copied, vectors[[2, 0]])   # both views of each photo, in the annotation's order


def test_a_photo_without_a_descriptor_is_one_line_and_exit_2(tmp_path):
    annotation, crop, _ = write_inputs(tmp_path, ["Ann", "Dee"])
    assert_one_line_error(["-m", "recipes.teacher_embeddings", "--annotation_path", str(annotation),
                           "--output_path", str(tmp_path / "warp.npz"), "--same_photos_path", str(crop)],
                          "no descriptor of 1 of 2 photos")
