"""ONNX export: the round trip against PyTorch, the dynamic batch axis, Facenet on the ONNX file, export.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -r requirements.txt)")
pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) is not installed "
                                         "(pip install -r requirements.txt)")

from conftest import ROOT
from facenet import Facenet
from nets.facenet import Facenet as FacenetNet
from test_facenet import SAMPLES, THRESHOLD, make_weights
from utils.checkpoint import CheckpointError, load_weights
from utils.onnx_model import OnnxEmbedder, OnnxError, onnx_bytes
from utils.runtime import SettingError

SHAPE = [64, 64, 3]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Random weights with their threshold JSON, and their ONNX file at 64x64 under the same name."""
    directory = tmp_path_factory.mktemp("export")
    weights = make_weights(directory)
    net = FacenetNet("mobilenet", mode="predict")
    load_weights(net, weights, purpose="predict", verbose=False)
    onnx_path = os.path.join(directory, "facenet_test.onnx")
    with open(onnx_path, "wb") as handle:
        handle.write(onnx_bytes(net, SHAPE))
    return net.eval(), weights, onnx_path


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3, 7])
def test_round_trip_matches_pytorch_at_any_batch_size(exported, batch):
    net, _, onnx_path = exported
    embedder = OnnxEmbedder(onnx_path, threads=1)
    assert embedder.input_shape == SHAPE and embedder.embedding_size == 128
    torch.manual_seed(batch)
    x = torch.rand(batch, 3, 64, 64)
    with torch.no_grad():
        expected = net.embed(x)
    out = embedder(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (batch, 128) and out.dtype == torch.float32
    assert (out - expected).abs().max() < 1e-4


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
    with pytest.raises(CheckpointError, match="exported for input_shape 64,64,3"):
        Facenet(onnx_path=onnx_path, input_shape=[112, 112, 3])
    with pytest.raises(OnnxError, match="no such ONNX file"):
        OnnxEmbedder(str(tmp_path / "absent.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxError, match="not a usable ONNX model"):
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


def test_export_script_without_weights_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "export.py", "--model_path", str(tmp_path / "absent.pth")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "absent.pth" in done.stderr and done.stderr.count("\n") == 1
