"""utils/config.py: the settings schema (rules, --name value overrides, --help)."""
import os
import subprocess
import sys

import pytest

from utils.config import (UserError, check_choice, check_input_shape, check_int, check_number, check_output_file,
                          configure, run_main, settings_of)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# --- the schema: RULES beside a settings block ----------------------------------------------------

from utils.config import (INPUT_SIDES, Bool, Choice, Int, List, Number, Opt, OutputFile, OutputFolder, Shape,  # noqa: E402
                          Text, check_values, given_names, settings_block)


def schema() -> dict:
    """A settings block with its RULES, as a script has them."""
    ns = {"cuda": True, "batch_size": 96, "lr": 1e-3, "mode": "crop", "input_shape": None, "workers": "auto",
          "thresholds": [0.6, 0.7, 0.7], "figure": False, "out": "unused.png", "name": ""}
    ns["RULES"] = {"cuda": Bool(alias="Cuda"), "batch_size": Int(1), "lr": Number(0, above=True),
                   "mode": Choice("crop", "warp"), "input_shape": Opt(Shape()), "workers": Choice("auto") | Int(0),
                   "thresholds": List(Number(0, 1), 3), "figure": Bool(), "out": OutputFile(".png", when="figure"),
                   "name": Text()}
    return ns


def error_of(argv, capsys, ns=None) -> str:
    with pytest.raises(SystemExit) as info:
        configure(schema() if ns is None else ns, argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --")
    return err.strip()


@pytest.mark.parametrize("argv, line", [
    (["--mode", "affine"], "error: --mode must be one of crop, warp, not 'affine'"),
    (["--batch_size", "0"], "error: --batch_size must be at least 1, not 0"),
    (["--lr", "0"], "error: --lr must be above 0, not 0.0"),
    (["--thresholds", "0.6,0.7,1.5"], "error: --thresholds must be from 0 to 1, not 1.5"),
    (["--input_shape", "8,8,3"], f"error: --input_shape must be height,width,3 with sides from {INPUT_SIDES[0]} "
                                 f"to {INPUT_SIDES[1]} pixels, not 8,8,3"),
    (["--batch_size", "many"], "error: --batch_size takes a whole number at least 1, not 'many'"),
    (["--cuda", "maybe"], "error: --cuda takes True or False, not 'maybe'"),
    (["--input_shape", "160"], "error: --input_shape takes height,width,channels such as 160,160,3, not 160"),
    (["--workers", "-1"], "error: --workers must be auto or a whole number at least 0, not -1"),
    (["--thresholds", "0.6,0.7"], "error: --thresholds takes 3 values, each a number from 0 to 1, not 0.6,0.7"),
])
def test_a_bad_value_is_one_line_naming_the_setting_the_value_and_what_is_allowed(argv, line, capsys):
    assert error_of(argv, capsys) == line


def test_good_values_are_parsed_by_their_rule():
    ns = schema()
    configure(ns, ["--input_shape", "112,112,3", "--workers", "2", "--thresholds", "0.5,0.6,0.7", "--mode", "warp"])
    assert ns["input_shape"] == [112, 112, 3] and ns["workers"] == 2 and ns["thresholds"] == [0.5, 0.6, 0.7]
    configure(ns, ["--input_shape", "None", "--workers", "auto"])
    assert ns["input_shape"] is None and ns["workers"] == "auto"


def test_a_value_edited_into_the_block_is_checked_too(capsys):
    ns = schema()
    ns["batch_size"] = 2.5  # a hand edit: no command line at all
    assert error_of([], capsys, ns) == "error: --batch_size takes a whole number at least 1, not 2.5"


def test_the_original_spelling_is_an_alias(capsys):
    ns = schema()
    configure(ns, ["--Cuda", "False"])
    assert ns["cuda"] is False and "Cuda" not in ns
    assert given_names(ns, ["--Cuda=False", "--batch_size", "3"]) == {"cuda", "batch_size"}
    assert error_of(["--Cuda", "perhaps"], capsys) == "error: --cuda takes True or False, not 'perhaps'"


def test_help_lists_every_rule_and_the_alias(capsys):
    with pytest.raises(SystemExit) as info:
        configure(schema(), ["-h"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "--batch_size   a whole number at least 1" in out
    assert "--mode         one of crop, warp" in out
    assert "--workers      auto or a whole number at least 0" in out
    assert "--cuda         True or False (also --Cuda, an older spelling)" in out
    assert "only when figure is true" in out


def test_rules_and_settings_must_agree():
    ns = schema()
    ns["extra"] = 1
    with pytest.raises(RuntimeError, match="no rule for \\['extra'\\]"):
        settings_block(ns)
    del ns["extra"], ns["name"]
    with pytest.raises(RuntimeError, match="no setting for \\['name'\\]"):
        configure(ns, [])


def test_an_output_is_checked_only_when_it_is_written(tmp_path, capsys):
    ns = schema()
    ns["out"] = str(tmp_path / "figure.txt")
    configure(ns, [])  # figure is False: out is not written, not checked
    assert error_of(["--figure", "True"], capsys, ns).endswith("figure.txt: must end in one of .png")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_an_output_under_a_folder_that_cannot_hold_files_is_refused():
    with pytest.raises(UserError, match="--out /proc/x.png: /proc cannot hold files"):
        check_values({"out": "/proc/x.png"}, {"out": OutputFile(".png")})
    with pytest.raises(UserError, match="--save_dir /proc/run/logs: /proc cannot hold files"):
        check_values({"save_dir": "/proc/run/logs"}, {"save_dir": OutputFolder()})


def test_an_output_folder_may_be_made_but_not_be_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    check_values({"d": str(tmp_path / "new" / "deeper")}, {"d": OutputFolder()})
    assert not (tmp_path / "new").exists()  # checking makes nothing
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_values({"d": str(tmp_path / "file")}, {"d": OutputFolder()})


SCRIPTS = ["train.py", "eval_LFW.py", "align_dataset.py", "predict.py", "facenet.py", "export.py",
           "txt_annotation.py", "-m recipes.lfw_bin", "-m recipes.make_trainset", "-m recipes.teacher_lfw",
           "-m recipes.teacher_embeddings", "-m recipes.teacher_views", "-m recipes.eval_identification"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_h_with_its_rules(script):
    done = subprocess.run([sys.executable, *script.split(), "-h"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "Allowed values (checked before any work):\n  --" in done.stdout
