"""utils/config.py: --name value overrides of a settings block."""
import pytest

from utils.config import (UserError, check_choice, check_input_shape, check_int, check_number, check_output_file,
                          configure, run_main, settings_of)


def block() -> dict:
    return {"Cuda": True, "batch_size": 96, "Init_lr": 1e-3, "backbone": "mobilenet",
            "input_shape": [160, 160, 3], "folds": None, "_private": 1, "os": __import__("os"),
            "RESUME_OVERRIDABLE": ("Epoch",)}


def test_values_take_the_type_of_the_default():
    ns = block()
    rest = configure(ns, ["--Cuda", "False", "--batch_size=48", "--Init_lr", "3e-4",
                          "--backbone", "inception_resnetv1", "--input_shape", "112,112,3", "--folds", "8"])
    assert rest == []
    assert ns["Cuda"] is False and ns["batch_size"] == 48 and ns["Init_lr"] == 3e-4
    assert ns["backbone"] == "inception_resnetv1" and ns["input_shape"] == [112, 112, 3] and ns["folds"] == 8
    assert set(settings_of(ns)) == {"Cuda", "batch_size", "Init_lr", "backbone", "input_shape", "folds"}


def test_upper_case_constants_are_not_settings():
    with pytest.raises(SystemExit) as info:
        configure(block(), ["--RESUME_OVERRIDABLE", "x"])
    assert info.value.code == 2


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


def test_help_prints_the_settings_block_and_exits_0(tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text('"""Does a thing."""\n#------- settings (edit here) -------\n'
                      'batch_size = 96   # images per step\n#--------------------\nimport os\n')
    ns = {"__file__": str(script), "__doc__": "Does a thing.", "batch_size": 96}
    for flag in ("-h", "--help"):
        with pytest.raises(SystemExit) as info:
            configure(ns, ["--batch_size", "3", flag])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("Does a thing.") and "batch_size = 96   # images per step" in out
        assert "import os" not in out


def test_run_main_turns_user_errors_into_one_line_and_ctrl_c_into_130(capsys):
    def bad():
        raise UserError("--x must be positive")

    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as info:
        run_main(bad)
    assert info.value.code == 2 and capsys.readouterr().err == "error: --x must be positive\n"
    def disk_full():
        raise OSError(28, "No space left on device", "out/weights.pth")
    with pytest.raises(SystemExit) as info:
        run_main(disk_full)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: out/weights.pth: No space left on device; free space")
    with pytest.raises(SystemExit) as info:
        run_main(interrupted, interrupted="stopped; run again")
    assert info.value.code == 130 and "stopped; run again" in capsys.readouterr().err


@pytest.mark.parametrize("call, words", [
    (lambda: check_int("batch_size", 0, 1), "--batch_size must be at least 1, not 0"),
    (lambda: check_int("num_workers", -1, 0, 64), "--num_workers must be from 0 to 64, not -1"),
    (lambda: check_int("batch_size", 2.5, 1), "--batch_size takes a whole number"),
    (lambda: check_number("lr", float("nan"), 0, low_open=True), "--lr takes a finite number"),
    (lambda: check_number("lr", -1.0, 0, low_open=True), "--lr must be above 0, not -1.0"),
    (lambda: check_choice("mode", "affine", ("crop", "warp")), "--mode must be one of crop, warp"),
    (lambda: check_choice("align", 1, ("auto", True, False)), "--align must be one of auto, True, False"),
    (lambda: check_input_shape("input_shape", [160, 160, 1]), "height,width,3"),
    (lambda: check_output_file("out", ""), "--out takes a file path"),
    (lambda: check_output_file("out", "a.xyz", (".png",)), "must end in one of .png"),
])
def test_checks_name_the_setting(call, words):
    with pytest.raises(UserError, match=words.replace(".", r"\.").replace("(", r"\(")):
        call()


def test_output_file_under_a_file_or_a_folder_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_output_file("out", str(tmp_path / "file" / "a.png"))
    with pytest.raises(UserError, match="is a folder"):
        check_output_file("out", str(tmp_path))
    assert check_output_file("out", str(tmp_path / "new" / "a.png"), (".png",)).endswith("a.png")
