"""utils/checkpoint.py: every accepted checkpoint format round-trips; every bad file gets one clear line."""
import json
import os

import pytest
import torch

from conftest import FIXTURES
from nets.facenet import FacenetNet
from utils.checkpoint import (load_weights, model_settings, read_state_dict, read_weights_info,
                              save_atomic, weights_info_path, write_text_atomic, write_weights_info)
from utils.config import UserError


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(1)
    model = FacenetNet("mobilenet", num_classes=10)
    for p in model.parameters():
        p.data.normal_()
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items() if k in sb)


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "module_prefix", "wrapped_module_prefix"])
def test_round_trip_through_every_accepted_format(tmp_path, trained, wrap):
    sd = trained.state_dict()
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    obj = {"plain": sd, "model": {"model": sd, "epoch": 3}, "state_dict": {"state_dict": sd},
           "module_prefix": prefixed, "wrapped_module_prefix": {"model": prefixed}}[wrap]
    path = str(tmp_path / "w.pth")
    save_atomic(obj, path)
    model = FacenetNet("mobilenet")
    report = load_weights(model, path, purpose="predict", verbose=False)
    assert same_weights(model, trained)
    assert report.missing == [] and report.unexpected == ["classifier.weight", "classifier.bias"]


def test_train_purpose_skips_classifier_of_other_class_count(tmp_path, trained):
    path = str(tmp_path / "w.pth")
    save_atomic(trained.state_dict(), path)
    model = FacenetNet("mobilenet", num_classes=4)
    before = model.classifier.weight.clone()
    report = load_weights(model, path, purpose="train", verbose=False)
    assert len(report.mismatched) == 2 and torch.equal(model.classifier.weight, before)
    assert any("class count" in n for n in report.notes)
    torch.testing.assert_close(model.Bottleneck.weight, trained.Bottleneck.weight)


def test_pytorch_port_inception_file_gives_backbone_and_reports_head(tmp_path):
    torch.manual_seed(2)
    source = FacenetNet("inception_resnetv1")
    port = {k[len("backbone.model."):]: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    port.update({"last_linear.weight": torch.zeros(512, 1792), "last_bn.weight": torch.ones(512),
                 "last_bn.bias": torch.zeros(512), "last_bn.running_mean": torch.zeros(512),
                 "last_bn.running_var": torch.ones(512), "last_bn.num_batches_tracked": torch.tensor(0),
                 "logits.weight": torch.zeros(8631, 512), "logits.bias": torch.zeros(8631)})
    reference = os.path.join(FIXTURES, "reference", "inception_resnet_v1_vggface2_keys.txt")
    with open(reference) as handle:
        listed = [line.split("\t")[0] for line in handle if not line.startswith("#")]
    assert sorted(listed) == sorted(k for k in port if not k.startswith("logits."))
    path = str(tmp_path / "vggface2.pt")
    torch.save(port, path)
    with pytest.raises(UserError, match="incomplete"):
        load_weights(FacenetNet("inception_resnetv1"), path, purpose="predict", verbose=False)
    model = FacenetNet("inception_resnetv1", num_classes=5)
    report = load_weights(model, path, purpose="train", verbose=False)
    assert any("512-d head" in n for n in report.notes)
    assert all(not k.startswith("backbone.") for k in report.missing)
    backbone = FacenetNet("inception_resnetv1", num_classes=5)
    load_weights(backbone, path, purpose="backbone", verbose=False)
    assert torch.equal(backbone.backbone["model"].block8.conv2d.weight, source.backbone["model"].block8.conv2d.weight)


def write_bytes(path, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


def bad_files(tmp_path, trained):
    good = str(tmp_path / "good.pth")
    torch.save(trained.state_dict(), good)
    with open(good, "rb") as handle:
        data = handle.read()
    jpeg = os.path.join(os.path.dirname(__file__), "..", "img", "1_001.jpg")
    jpeg_bytes = open(jpeg, "rb").read() if os.path.exists(jpeg) else b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(500)
    return {
        "missing": str(tmp_path / "nope.pth"),
        "truncated": write_bytes(tmp_path / "trunc.pth", data[: len(data) // 2]),
        "jpeg": write_bytes(tmp_path / "photo.pth", jpeg_bytes),
        "empty": write_bytes(tmp_path / "empty.pth", b""),
        "not_tensors": (torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth"), str(tmp_path / "meta.pth"))[1],
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "jpeg", "empty", "not_tensors"])
def test_bad_files_get_one_line_naming_the_file(tmp_path, trained, case):
    path = bad_files(tmp_path, trained)[case]
    with pytest.raises(UserError) as info:
        load_weights(FacenetNet("mobilenet"), path, verbose=False)
    message = str(info.value)
    assert path in message and "\n" not in message


def test_weights_of_the_other_backbone_name_it(tmp_path, trained):
    path = str(tmp_path / "mobile.pth")
    torch.save(trained.state_dict(), path)
    with pytest.raises(UserError, match="'mobilenet'.*'inception_resnetv1'"):
        load_weights(FacenetNet("inception_resnetv1"), path, verbose=False)


def test_missing_backbone_entries_refused_for_inference(tmp_path, trained):
    sd = {k: v for k, v in trained.state_dict().items() if "stage3" not in k}
    path = str(tmp_path / "partial.pth")
    torch.save(sd, path)
    with pytest.raises(UserError, match="stage3"):
        load_weights(FacenetNet("mobilenet"), path, verbose=False)
    head_less = {k: v for k, v in trained.state_dict().items() if not k.startswith("last_bn")}
    torch.save(head_less, path)
    with pytest.raises(UserError, match="last_bn"):
        load_weights(FacenetNet("mobilenet"), path, verbose=False)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    save_atomic({"a": torch.ones(2)}, str(tmp_path / "sub" / "x.pth"))
    write_text_atomic(str(tmp_path / "sub" / "x.json"), "{}")
    assert sorted(os.listdir(tmp_path / "sub")) == ["x.json", "x.pth"]
    state_dict, notes = read_state_dict(str(tmp_path / "sub" / "x.pth"))
    assert torch.equal(state_dict["a"], torch.ones(2)) and notes == []


@pytest.fixture
def plain_weights(tmp_path, trained):
    path = str(tmp_path / "run" / "ep001.pth")
    save_atomic(trained.state_dict(), path)
    return path


def test_weights_info_round_trip_and_settings_from_it(plain_weights):
    path = write_weights_info(plain_weights, backbone="mobilenet", input_shape=(64, 64, 3), extra={"epoch": 1})
    assert path == weights_info_path(plain_weights) == plain_weights[:-4] + ".json"
    assert read_weights_info(plain_weights) == {"backbone": "mobilenet", "input_shape": [64, 64, 3], "epoch": 1}
    found = model_settings(plain_weights)
    assert (found.backbone, found.input_shape, found.threshold, found.messages) == ("mobilenet", [64, 64, 3],
                                                                                    None, [])
    write_weights_info(plain_weights, "mobilenet", [64, 64, 3], threshold=0.95)
    found = model_settings(plain_weights, input_shape=[160, 160, 3], threshold=1.0)
    assert found.input_shape == [160, 160, 3] and found.threshold == 1.0
    assert found.messages[0].startswith("warning: --input_shape 160,160,3 contradicts")
    assert "trained at 64,64,3" in found.messages[0] and "replaces 0.9500" in found.messages[1]
    assert model_settings(plain_weights).threshold == 0.95


def test_without_json_the_backbone_is_read_and_the_size_assumed(plain_weights):
    found = model_settings(plain_weights)
    assert found.backbone == "mobilenet" and found.input_shape == [160, 160, 3]
    assert found.messages == [f"note: {plain_weights[:-4]}.json gives no input_shape; assuming 160,160,3; "
                              "set --input_shape to the size the weights were trained at"]


@pytest.mark.parametrize("info, words", [
    ({"input_shape": [112, 112]}, "input_shape takes height,width,channels"),
    ({"input_shape": [0, 0, 3]}, "sides from 16"),
    ({"backbone": "resnet"}, "backbone must be one of"),
    ({"threshold": 7}, "threshold must be a number above 0"),
    ([1, 2], "not a readable JSON object"),
])
def test_bad_json_is_one_line_naming_it(plain_weights, info, words):
    with open(weights_info_path(plain_weights), "w") as handle:
        json.dump(info, handle)
    with pytest.raises(UserError, match=words) as error:
        model_settings(plain_weights)
    assert "ep001.json" in str(error.value) and "\n" not in str(error.value)


def test_nan_weights_are_refused(tmp_path, trained):
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    state["Bottleneck.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(UserError, match="NaN or infinite values .*Bottleneck.weight"):
        load_weights(FacenetNet("mobilenet"), str(tmp_path / "nan.pth"), verbose=False)


def test_a_whole_pickled_model_is_named_with_how_to_save_a_state_dict(tmp_path):
    path = str(tmp_path / "whole.pth")
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)
    with pytest.raises(UserError, match=r"holds a whole pickled model .*torch.save\(model.state_dict\(\)"):
        load_weights(FacenetNet("mobilenet"), path, verbose=False)


class FailingWrites:
    """A file handle whose writes fail with ``error`` after the first one, as Ctrl-C or a full disk would."""

    def __init__(self, handle, error):
        self.handle, self.error, self.writes = handle, error, 0

    def write(self, data):
        self.writes += 1
        if self.writes > 1:
            raise self.error
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_an_interrupted_or_full_write_keeps_the_previous_file_and_raises_its_cause(tmp_path, monkeypatch, error):
    import utils.checkpoint as checkpoint
    path = str(tmp_path / "last_checkpoint.pth")
    save_atomic({"a": torch.zeros(4)}, path)
    before = open(path, "rb").read()
    real = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: FailingWrites(real(fd, mode), error))
    with pytest.raises(type(error)) as raised:  # not torch's RuntimeError: Ctrl-C exits 130, a full disk one line
        save_atomic({"a": torch.ones(100_000)}, path)
    assert isinstance(error, KeyboardInterrupt) or raised.value.filename == path
    from utils.config import run_main
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: save_atomic({"a": torch.ones(100_000)}, path))
    assert stop.value.code == (130 if isinstance(error, KeyboardInterrupt) else 2)
    monkeypatch.undo()
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["last_checkpoint.pth"]
