"""utils/config.py: --name value overrides of a settings block."""
import pytest

from utils.config import configure, settings_of


def block() -> dict:
    return {"Cuda": True, "batch_size": 96, "Init_lr": 1e-3, "backbone": "mobilenet",
            "input_shape": [160, 160, 3], "folds": None, "_private": 1, "os": __import__("os")}


def test_values_take_the_type_of_the_default():
    ns = block()
    rest = configure(ns, ["--Cuda", "False", "--batch_size=48", "--Init_lr", "3e-4",
                          "--backbone", "inception_resnetv1", "--input_shape", "112,112,3", "--folds", "8"])
    assert rest == []
    assert ns["Cuda"] is False and ns["batch_size"] == 48 and ns["Init_lr"] == 3e-4
    assert ns["backbone"] == "inception_resnetv1" and ns["input_shape"] == [112, 112, 3] and ns["folds"] == 8
    assert set(settings_of(ns)) == {"Cuda", "batch_size", "Init_lr", "backbone", "input_shape", "folds"}


def test_list_accepts_brackets_and_spaces():
    ns = block()
    configure(ns, ["--input_shape", "[112, 112, 3]"])
    assert ns["input_shape"] == [112, 112, 3]


def test_positional_arguments_are_returned():
    assert configure(block(), ["a.jpg", "--batch_size", "3", "b.jpg"], positional=2) == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize("argv, words", [
    (["--batchsize", "3"], "unknown setting --batchsize"),
    (["--batch_size", "three"], "whole number"),
    (["--Cuda", "maybe"], "True or False"),
    (["--input_shape", "112,112"], "3 values"),
    (["--Init_lr"], "needs a value"),
    (["stray"], "unexpected argument"),
    (["--_private", "2"], "unknown setting"),
])
def test_errors_exit_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        configure(block(), argv)
    message = capsys.readouterr().err
    assert info.value.code == 2
    assert words in message and message.count("\n") == 1
