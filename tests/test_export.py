"""ONNX export: Facenet on the ONNX file, the output path check, export.py (the round trip of every backbone
at several batch sizes is in test_models.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -r requirements.txt)")
pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) is not installed "
                                         "(pip install -r requirements.txt)")

from conftest import ROOT
from facenet import Facenet
from nets.facenet import FacenetNet
from test_facenet import SAMPLES, THRESHOLD, make_weights
from utils.checkpoint import load_weights
from utils.config import UserError
from utils.onnx_model import OnnxEmbedder, check_onnx_target, onnx_bytes
from utils.runtime import SettingError

SHAPE = [64, 64, 3]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Random weights with their threshold JSON, and their ONNX file at 64x64 under the same name."""
    directory = tmp_path_factory.mktemp("export")
    weights = make_weights(directory)
    net = FacenetNet("mobilenet")
    load_weights(net, weights, purpose="predict", verbose=False)
    onnx_path = os.path.join(directory, "facenet_test.onnx")
    with open(onnx_path, "wb") as handle:
        handle.write(onnx_bytes(net, SHAPE))
    return net.eval(), weights, onnx_path


@pytest.mark.slow
def test_facenet_runs_the_onnx_file_with_the_threshold_beside_it(exported, capsys):
    _, weights, onnx_path = exported
    by_torch = Facenet(model_path=weights, input_shape=SHAPE, cuda=False)
    by_onnx = Facenet(onnx_path=onnx_path, cuda=False, verbose=True)
    out = capsys.readouterr().out
    assert "cpu (onnxruntime)" in out and f"onnx_path        {onnx_path}" in out
    assert by_onnx.input_shape == SHAPE and by_onnx.threshold == pytest.approx(THRESHOLD)
    np.testing.assert_allclose(by_onnx.embed(SAMPLES), by_torch.embed(SAMPLES), atol=1e-4)
    assert by_onnx.embed([]).shape == (0, 128)
    by_torch.figure = by_onnx.figure = False
    distance = by_onnx.detect_image(SAMPLES[0], SAMPLES[2])
    assert distance == pytest.approx(by_torch.detect_image(SAMPLES[0], SAMPLES[2]), abs=1e-4)


@pytest.mark.slow
def test_onnx_settings_that_cannot_work_are_one_line_errors(exported, tmp_path):
    _, _, onnx_path = exported
    with pytest.raises(SettingError, match="runs in fp32"):
        Facenet(onnx_path=onnx_path, precision="bf16")
    with pytest.raises(UserError, match="exported for input_shape 64,64,3"):
        Facenet(onnx_path=onnx_path, input_shape=[112, 112, 3])
    with pytest.raises(UserError, match="no such ONNX file"):
        OnnxEmbedder(str(tmp_path / "absent.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a usable ONNX model"):
        OnnxEmbedder(str(tmp_path / "junk.onnx"))


@pytest.mark.slow
def test_export_script_checks_and_times(tmp_path):
    weights = make_weights(tmp_path)
    target = tmp_path / "out" / "small.onnx"
    done = subprocess.run([sys.executable, "export.py", "--model_path", weights, "--input_shape", "64,64,3",
                           "--onnx_path", str(target), "--speed_batch", "4", "--speed_seconds", "0.05",
                           "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "check passed" in done.stdout and "(below 0.0001)" in done.stdout
    for runtime in ("PyTorch fp32", "PyTorch bf16", "onnxruntime fp32"):
        assert runtime in done.stdout
    assert done.stdout.count("same person") + done.stdout.count("different people") == 3
    card = json.loads((tmp_path / "out" / "small.json").read_text())
    assert card["threshold"] == pytest.approx(THRESHOLD) and card["input_shape"] == [64, 64, 3]
    assert OnnxEmbedder(str(target)).input_shape == [64, 64, 3]
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(".tmp")]


def test_an_onnx_path_that_names_an_input_or_cannot_hold_a_file_is_refused(tmp_path):
    weights = make_weights(tmp_path)
    info = os.path.splitext(weights)[0] + ".json"
    inputs = [weights, info, *SAMPLES]
    before = {path: open(path, "rb").read() for path in (weights, info)}
    (tmp_path / "folder.onnx").mkdir()
    cases = {weights: "would overwrite .*facenet_test.pth",
             info: "would overwrite .*facenet_test.json",
             os.path.splitext(weights)[0] + ".JSON": "would overwrite .*facenet_test.json",
             str(tmp_path / "other.json"): "must end in one of .onnx",
             str(tmp_path / "folder.onnx"): "is a folder",
             "/proc/facenet.onnx": "/proc cannot hold files",
             "/proc/sub/facenet.onnx": "cannot hold files"}
    for target, words in cases.items():
        with pytest.raises(UserError, match=words) as error:
            check_onnx_target(target, inputs)
        assert "\n" not in str(error.value), target
    # A file whose JSON would be the weights' JSON under another name is refused too.
    os.symlink(info, tmp_path / "alias.json")
    with pytest.raises(UserError, match="would overwrite"):
        check_onnx_target(str(tmp_path / "alias.onnx"), inputs)
    assert {path: open(path, "rb").read() for path in (weights, info)} == before
    assert check_onnx_target(str(tmp_path / "new" / "facenet_test.onnx"), inputs).endswith("facenet_test.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("target, words", [(None, "absent.pth"), ("weights", "must end in one of .onnx"),
                                           ("folder", "is a folder"), ("/proc/x.onnx", "cannot hold files")])
def test_export_script_refuses_bad_paths_in_one_line(tmp_path, target, words):
    weights = make_weights(tmp_path)
    (tmp_path / "folder.onnx").mkdir()
    args = {None: ["--model_path", str(tmp_path / "absent.pth")],
            "weights": ["--model_path", weights, "--onnx_path", weights],
            "folder": ["--model_path", weights, "--onnx_path", str(tmp_path / "folder.onnx")]}.get(
        target, ["--model_path", weights, "--onnx_path", target])
    done = subprocess.run([sys.executable, "export.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and words in done.stderr and done.stderr.count("\n") == 1
