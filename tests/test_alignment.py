"""The alignment recorded beside the weights: reading it, folders aligned by align_dataset.py, and its use."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from utils.alignment import (DEFAULT, Alignment, alignment_of, alignment_record, folder_alignment, is_warped,
                             mismatch_warning)
from utils.config import UserError
from utils.detect import ARCFACE_TEMPLATE

SHIPPED = os.path.join(ROOT, "model_data", "facenet_mobilenet.pth")


def test_records_and_their_reading():
    assert alignment_record("warp", 112) == {"mode": "warp", "size": 112}
    assert alignment_record("crop", 160) == {"mode": "crop", "size": 160, "margin": 32}
    assert alignment_of({}, "w.json") == DEFAULT == Alignment("crop", 160, 32)
    assert alignment_of({"alignment": {"mode": "warp", "size": 112}}, "w.json") == Alignment("warp", 112)
    for bad in ({"mode": "warp"}, {"mode": "squash", "size": 112}, "warp", {"mode": "crop", "size": 96, "margin": 96}):
        with pytest.raises(UserError, match="w.json: alignment must be like"):
            alignment_of({"alignment": bad}, "w.json")
    with pytest.raises(UserError, match="--alignment must be one of"):
        alignment_record("squash", 112)


def test_one_spec_holds_the_detector_settings_and_everyone_takes_them_from_it(tmp_path):
    import inspect
    from utils.detect import FaceDetector, align_face, align_file
    assert (DEFAULT.mode, DEFAULT.size, DEFAULT.margin) == ("crop", 160, 32)
    assert DEFAULT.thresholds == (0.6, 0.7, 0.7) and DEFAULT.min_face_size == 20
    detector = inspect.signature(FaceDetector).parameters
    assert detector["thresholds"].default is DEFAULT.thresholds
    assert detector["min_face_size"].default is DEFAULT.min_face_size
    for function in (align_face, align_file):
        found = inspect.signature(function).parameters
        assert (found["mode"].default, found["image_size"].default, found["margin"].default) == \
            (DEFAULT.mode, DEFAULT.size, DEFAULT.margin)
    entry = {"mode": "crop", "size": 160, "margin": 32, "thresholds": [0.5, 0.6, 0.6], "min_face_size": 40}
    assert alignment_of({"alignment": entry}, "w.json") == Alignment("crop", 160, 32, (0.5, 0.6, 0.6), 40)
    with pytest.raises(UserError, match="w.json: thresholds must be three probabilities"):
        alignment_of({"alignment": {**entry, "thresholds": [0.5, 2]}}, "w.json")
    (tmp_path / "align_settings.json").write_text(json.dumps({"mode": "crop", "image_size": 128, "margin": 16,
                                                              "thresholds": [0.6, 0.7, 0.8], "min_face_size": 30}))
    assert folder_alignment(str(tmp_path)) == Alignment("crop", 128, 16, (0.6, 0.7, 0.8), 30)
    # galleries embedded with other detector settings are told apart; the default's words stay as they were
    assert DEFAULT.describe() == "mtcnn crop 160 px margin 32"
    assert Alignment("crop", 128, 16, (0.6, 0.7, 0.8), 30).describe() == \
        "mtcnn crop 128 px margin 16, thresholds 0.6,0.7,0.8, faces from 30 px"


def test_folders_aligned_by_align_dataset_and_mixing_warnings(tmp_path):
    assert folder_alignment(str(tmp_path)) is None
    (tmp_path / "align_settings.json").write_text(json.dumps({"mode": "warp", "image_size": 112, "margin": 32}))
    warped = folder_alignment(str(tmp_path))
    assert warped == Alignment("warp", 112)
    assert "trained on mtcnn crop 160 px margin 32 faces but lfw holds mtcnn five-point warp 112 px" in \
        mismatch_warning(DEFAULT, warped, "lfw")
    assert mismatch_warning(warped, Alignment("warp", 160), "x") is None
    assert mismatch_warning(DEFAULT, None, "x") is None


def test_warped_landmarks_are_recognised():
    on_template = (ARCFACE_TEMPLATE + 0.5) * 2
    assert is_warped(on_template, (224, 224))
    assert not is_warped(on_template + 20, (224, 224)) and not is_warped(on_template, (224, 200))


def test_warp_trained_weights_warp_raw_photos_and_crops_but_keep_warps(tmp_path):
    from facenet import Facenet
    weights = tmp_path / "warp.pth"
    shutil.copy(SHIPPED, weights)
    (tmp_path / "warp.json").write_text(json.dumps({"backbone": "mobilenet", "input_shape": [112, 112, 3],
                                                    "alignment": {"mode": "warp", "size": 112,
                                                                  "thresholds": [0.6, 0.7, 0.75]}}))
    model = Facenet(model_path=str(weights), cuda=False, align="auto", figure=False)
    assert model.detector.thresholds == (0.6, 0.7, 0.75)  # the detector takes the recorded spec
    raw = model.face(os.path.join(FIXTURES, "mtcnn", "Colin_Powell_0047.jpg"))
    assert raw.size == (112, 112)
    crop = os.path.join(FIXTURES, "lfw", "images", "Aaron_Sorkin", "Aaron_Sorkin_0001.jpg")
    assert model.face(crop).size == (112, 112)  # a crop is not what warp weights want: warped too
    from PIL import Image
    again = Image.fromarray(np.asarray(raw))
    assert np.array_equal(np.asarray(model.face(again)), np.asarray(raw))  # a warp is used as it is
