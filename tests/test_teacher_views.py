"""recipes/teacher_views.py: the distance it reports, and a missing teacher file as one line."""
import numpy as np

from conftest import assert_one_line_error
from recipes.teacher_views import one_minus_cos


def test_one_minus_cos_is_scale_free_and_centres_when_asked():
    a = np.array([[2.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 3.0], [1.0, 1.0]])
    assert np.allclose(one_minus_cos(a, b), [1.0, 0.0])
    centre = np.array([1.0, 1.0])   # a[0] - centre = (1, -1), b[0] - centre = (-1, 2)
    assert np.isclose(one_minus_cos(a[:1], b[:1], centre)[0], 1 + 3 / np.sqrt(10))


def test_a_missing_teacher_file_is_one_line_and_exit_2(tmp_path):
    annotation = tmp_path / "cls_train.txt"
    annotation.write_text("0;a.jpg\n")
    assert_one_line_error(["-m", "recipes.teacher_views", "--annotation_path", str(annotation), "--teacher_path",
                           str(tmp_path / "none.npz")], "none.npz: no such teacher file")
