"""train.py end to end on the tiny real fixture: outputs, recipes, resume, DDP and the user errors."""
import csv
import hashlib
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import FIXTURES, ROOT
from utils.annotation import annotate
from utils.checkpoint import load_file

FACES = os.path.join(FIXTURES, "faces")
SMALL = ["--input_shape", "64,64,3", "--batch_size", "6", "--num_workers", "0", "--val_split", "0.2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """cls_train.txt over the fixture faces and a tiny LFW (2 sets x 2 matched + 2 mismatched pairs)."""
    root = tmp_path_factory.mktemp("data")
    annotate(FACES, str(root / "cls_train.txt"), str(root / "cls_names.txt"))
    people = sorted(os.listdir(FACES))
    for person in people:
        os.makedirs(root / "lfw" / person)
        for i, name in enumerate(sorted(os.listdir(os.path.join(FACES, person))), 1):
            shutil.copy(os.path.join(FACES, person, name), root / "lfw" / person / f"{person}_{i:04d}.jpg")
    lines = ["2 2"]
    for s in range(2):
        a, b, c = people[3 * s:3 * s + 3]
        lines += [f"{a} 1 2", f"{b} 3 4", f"{a} 1 {c} 2", f"{b} 2 {c} 3"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def run(data, *args, check=True, env=None):
    """Run train.py in ``data`` with small settings; return the completed process."""
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *SMALL, *args]
    result = subprocess.run(cmd, cwd=data, capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def lfw_args(data):
    return ["--lfw_dir_path", str(data / "lfw"), "--lfw_pairs_path", str(data / "pairs.txt")]


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.slow
def test_one_epoch_writes_every_output(data, tmp_path):
    logs = tmp_path / "logs"
    result = run(data, "--Epoch", "1", "--save_dir", str(logs), *lfw_args(data))
    files = sorted(os.listdir(logs))
    assert "best_epoch_weights.pth" in files and "last_epoch_weights.pth" in files
    assert "last_checkpoint.pth" in files
    assert any(f.startswith("ep001-loss") and "-val_loss" in f for f in files)
    run_dir = logs / next(f for f in files if f.startswith("loss_"))
    with open(run_dir / "history.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["val_loss"]) > 0 and float(row["loss"]) > 0
    # three steps leave BatchNorm's running statistics untrained: LFW may say so instead of scoring
    assert 0.0 <= float(row["lfw_accuracy"]) <= 1.0 or "LFW: all 8 distances are equal" in result.stdout
    assert (run_dir / "history.png").stat().st_size > 1000
    assert "Settings:" in result.stdout and "LFW accuracy" in result.stdout
    weights = load_file(str(logs / "best_epoch_weights.pth"), "")
    assert "classifier.weight" in weights and "backbone.model.stage1.0.0.weight" in weights
    from nets.facenet import FacenetNet
    from utils.checkpoint import load_weights
    load_weights(FacenetNet("mobilenet"), str(logs / "last_epoch_weights.pth"), verbose=False)
    from utils.checkpoint import read_weights_info
    for name in ("last_epoch_weights.pth", "best_epoch_weights.pth",
                 next(f for f in files if f.startswith("ep001") and f.endswith(".pth"))):
        info = read_weights_info(str(logs / name))  # each weights file carries its facts
        assert info["backbone"] == "mobilenet" and info["input_shape"] == [64, 64, 3] and info["epoch"] == 1


@pytest.mark.slow
def test_pk_sampler_with_mining_and_augmentation_trains(data, tmp_path):
    result = run(data, "--Epoch", "2", "--save_dir", str(tmp_path), "--sampler", "pk", "--images_per_person",
                 "3", "--mining", "semihard", "--augment", "True", "--lfw_eval_flag", "False",
                 "--lr_decay_type", "cos", "--optimizer_type", "sgd", "--Init_lr", "1e-2")
    assert "Epoch 2/2: loss" in result.stdout
    weights = [f[:10] for f in sorted(os.listdir(tmp_path)) if f.startswith("ep") and f.endswith(".pth")]
    assert weights == ["ep001-loss", "ep002-loss"]


def fake_teacher(data, path, skip: int = 0) -> str:
    """A teacher file of random 128-d descriptors for the annotated images, without the first ``skip``."""
    import numpy as np
    from utils.dataloader import read_annotation
    from utils.distill import save_teacher, teacher_key
    annotation = str(data / "cls_train.txt")
    keys = [teacher_key(p, annotation) for p in read_annotation(annotation).paths][skip:]
    save_teacher(str(path), keys, np.random.default_rng(0).normal(size=(len(keys), 2, 128)), [])
    return str(path)


@pytest.mark.slow
def test_distillation_with_margin_softmax_and_free_images_trains(data, tmp_path):
    teacher = fake_teacher(data, tmp_path / "teacher.npz")
    result = run(data, "--Epoch", "2", "--save_dir", str(tmp_path / "logs"), "--sampler", "pk",
                 "--images_per_person", "2", "--batch_size", "8", "--free_images", "2", "--mining", "semihard",
                 "--lfw_eval_flag", "False", "--optimizer_type", "sgd", "--Init_lr", "1e-2",
                 "--classifier_loss", "arcface", "--teacher_path", teacher, "--distill_weight", "5",
                 "--distill_pair_weight", "1")
    assert "Epoch 2/2: loss" in result.stdout
    run_dir = next((tmp_path / "logs").glob("loss_*"))
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert all(0 < float(r["distill_loss"]) <= 2 for r in rows)  # random teacher: far from the student
    weights = load_file(str(tmp_path / "logs" / "last_epoch_weights.pth"), "")
    assert "classifier.weight" in weights and "classifier.bias" in weights  # the original key layout


def test_teacher_without_every_image_stops_before_training(data, tmp_path):
    teacher = fake_teacher(data, tmp_path / "partial.npz", skip=2)
    result = run(data, "--Epoch", "1", "--save_dir", str(tmp_path / "logs"), "--lfw_eval_flag", "False",
                 "--teacher_path", teacher, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "2 of 24 training images have no teacher entry (first: " in result.stderr
    assert not (tmp_path / "logs").exists()


def config(**overrides):
    """train.py's settings as a dict, with small defaults for in-process runs."""
    import train
    from utils.config import settings_of
    cfg = settings_of(vars(train))
    cfg.update(input_shape=[64, 64, 3], batch_size=6, num_workers=0, val_split=0.2, lfw_eval_flag=False)
    cfg.update(overrides)
    return cfg


def train_run(cfg, given=None):
    """A run of utils.trainer as train.py starts it (without train.py's settings check)."""
    from utils.trainer import prepare, run
    run(*prepare(cfg, given))


def test_resume_ends_with_the_same_weights(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data)
    whole, part = tmp_path / "whole", tmp_path / "part"
    train_run(config(Epoch=3, save_dir=str(whole)))
    train_run(config(Epoch=3, run_epochs=1, save_dir=str(part)))
    assert [f[:5] for f in os.listdir(part) if f.startswith("ep") and f.endswith(".pth")] == ["ep001"]
    assert load_file(str(part / "last_checkpoint.pth"), "")["schedule"]["epochs"] == 3
    train_run(config(Epoch=3, save_dir=str(part), resume=str(part / "last_checkpoint.pth")))
    a = load_file(str(whole / "last_epoch_weights.pth"), "")
    b = load_file(str(part / "last_epoch_weights.pth"), "")
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise: same steps, same dropout masks
    assert sorted(f for f in os.listdir(whole) if f.startswith("ep")) == \
        sorted(f for f in os.listdir(part) if f.startswith("ep"))
    history = load_file(str(part / "last_checkpoint.pth"), "")["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]


@pytest.mark.slow
def test_resume_from_the_command_line_restores_the_runs_settings(data, tmp_path):
    logs = tmp_path / "logs"
    run(data, "--Epoch", "3", "--run_epochs", "1", "--save_dir", str(logs), "--lfw_eval_flag", "False",
        "--optimizer_type", "sgd", "--Init_lr", "0.01", "--seed", "5")
    checkpoint = str(logs / "last_checkpoint.pth")
    # only --resume (and the SMALL settings, equal to the run's): everything else comes from the checkpoint
    result = run(data, "--resume", checkpoint, "--run_epochs", "1")
    assert "Resuming" in result.stdout and "Epoch 2/3: loss" in result.stdout
    settings = load_file(checkpoint, "")["settings"]
    assert settings["optimizer_type"] == "sgd" and settings["seed"] == 5 and settings["save_dir"] == str(logs)
    refused = run(data, "--resume", checkpoint, "--optimizer_type", "adam", check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "--optimizer_type cannot change when resuming (the run used 'sgd')" in refused.stderr
    longer = run(data, "--resume", checkpoint, "--Epoch", "5", check=False)
    assert longer.returncode == 2 and "--Epoch cannot change when resuming: the run's learning-rate schedule was " \
        "laid out for Epoch 3" in longer.stderr and longer.stderr.count("\n") == 1


@pytest.mark.parametrize("overrides, message", [
    ({"Init_lr": -1.0}, "--Init_lr must be above 0"),
    ({"run_epochs": -1}, "--run_epochs must be at least 0"),
    ({"batch_size": 0}, "--batch_size must be at least 1"),
    ({"num_workers": -1}, "--num_workers must be auto or a whole number"),
    ({"sampler": "pk", "mining": "hard", "images_per_person": 0}, "--images_per_person must be at least 2"),
    ({"input_shape": [0, 0, 3]}, "input_shape must be height,width,3"),
    ({"batch_size": 30}, "it needs at least 30 images"),
    ({"lfw_eval_flag": True, "lfw_dir_path": "nowhere"}, "--lfw_eval_flag False"),
    ({"pretrained": True, "backbone_path": "model_data/none.pth"}, "nothing is downloaded"),
    ({"model_path": "model_data/missing.pth"}, "no such weights file"),
    ({"sampler": "pk", "mining": "none"}, "--mining semihard"),
    ({"batch_size": 8}, "multiple of 3"),
    ({"resume": "nothing.pth"}, "no such checkpoint"),
    ({"classifier_loss": "sphereface"}, "classifier_loss must be one of"),
    ({"free_images": 3}, "free_images needs --sampler pk"),
    ({"unlabelled_images": 2}, "unlabelled_images needs --sampler pk"),
    ({"sampler": "pk", "mining": "hard", "images_per_person": 2, "unlabelled_images": 2},
     "need all of --unlabelled_path, --unlabelled_teacher_path"),
    ({"sampler": "pk", "mining": "hard", "images_per_person": 2, "free_images": 3}, "a multiple of images_per_person"),
    ({"distill_weight": -1.0}, "distill_weight must be at least 0"),
    ({"teacher_path": "none.npz"}, "no such teacher file"),
    ({"precision": "fp64"}, "--precision must be one of auto, fp32, bf16, fp16"),
    pytest.param({"precision": "fp16"}, "--precision fp16 needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is CUDA")),
])
def test_bad_inputs_stop_with_one_clear_line(data, monkeypatch, overrides, message):
    import train
    from utils.config import UserError
    monkeypatch.chdir(data)
    with pytest.raises(UserError, match=message.replace("-", r"\-")) as err:
        train.train(config(Epoch=1, save_dir="unused", lfw_pairs_path=str(data / "pairs.txt"), **overrides))
    assert "\n" not in str(err.value)
    assert not os.path.exists(data / "unused")


@pytest.mark.parametrize("world, free, per_person, fits", [
    (1, 32, 8, True),    # 64 images of 8 people a batch
    (2, 56, 4, True),    # per process 48: 28 free + 5 people x 4
    (2, 40, 8, False),   # per process 48: 20 free + 28, not a multiple of 8
    (2, 31, 4, False),   # 31 free images cannot be split over 2 processes
])
def test_the_pk_batch_is_checked_as_each_process_draws_it(world, free, per_person, fits):
    """build_loaders gives each of ``world`` processes batch_size / world images, free_images / world of
    them free: the check must split them the same way."""
    import train
    from utils.config import UserError
    cfg = config(sampler="pk", mining="hard", batch_size=96, free_images=free, images_per_person=per_person,
                 Min_lr=0.001)
    if fits:
        train.check_settings(cfg, world)
    else:
        with pytest.raises(UserError, match="a multiple of images_per_person"):
            train.check_settings(cfg, world)


def test_missing_lfw_is_reported_before_training_by_the_script(data, tmp_path):
    result = run(data, "--save_dir", str(tmp_path / "logs"), "--lfw_dir_path", str(tmp_path / "no_lfw"),
                 "--lfw_pairs_path", str(data / "pairs.txt"), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--lfw_eval_flag False" in result.stderr
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    monkeypatch.chdir(data)
    train_run(config(Epoch=3, run_epochs=1, save_dir=str(logs)))
    good = {f: digest(logs / f) for f in ("last_checkpoint.pth", "last_epoch_weights.pth")}
    poisoned = load_file(str(logs / "last_checkpoint.pth"), "")
    for state in poisoned["optimizer"]["state"].values():
        state["exp_avg"].fill_(float("nan"))
    torch.save(poisoned, tmp_path / "poisoned.pth")
    result = run(data, "--Epoch", "3", "--lfw_eval_flag", "False", "--save_dir", str(logs),
                 "--resume", str(tmp_path / "poisoned.pth"), check=False)
    assert result.returncode == 2
    assert "loss became nan" in result.stderr and "last saved checkpoint is intact" in result.stderr
    assert good == {f: digest(logs / f) for f in good}


@pytest.mark.slow
def test_two_process_gloo_ddp_run(data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "train.py"), "--distributed", "True", *SMALL, "--batch_size", "12",
           "--Epoch", "1", "--save_dir", str(tmp_path), *lfw_args(data)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=data, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("Settings:") == 1  # only rank 0 prints
    assert "on 2 process(es)" in result.stdout and "LFW accuracy" in result.stdout
    assert os.path.isfile(tmp_path / "last_checkpoint.pth")
    assert len(load_file(str(tmp_path / "last_checkpoint.pth"), "")["rng"]) == 2


def test_ctrl_c_in_the_first_epoch_says_nothing_was_saved(data, tmp_path, monkeypatch, capsys):
    import utils.trainer as trainer
    monkeypatch.chdir(data)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "last_checkpoint.pth").write_bytes(b"an older run's")  # never offered as this run's
    monkeypatch.setattr(trainer, "train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_run(config(Epoch=2, save_dir=str(logs)))
    err = capsys.readouterr().err
    assert "nothing was saved yet" in err and "--resume" not in err


def test_ctrl_c_while_the_checkpoint_is_written_exits_130_and_keeps_the_previous(data, tmp_path, monkeypatch, capsys):
    import utils.checkpoint as checkpoint
    from utils.config import run_main
    monkeypatch.chdir(data)
    logs = tmp_path / "logs"
    cfg = config(Epoch=3, run_epochs=1, save_dir=str(logs))
    train_run(cfg)
    previous = logs / "last_checkpoint.pth"
    before = digest(previous)
    real = checkpoint.torch.save

    def interrupted(obj, handle):
        if "optimizer" in obj:  # the resume checkpoint: Ctrl-C half-way through its bytes
            real(obj, handle)
            handle.truncate(handle.tell() // 2)
            raise KeyboardInterrupt
        real(obj, handle)

    monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: train_run(dict(cfg, resume=str(previous), run_epochs=0)))
    assert stop.value.code == 130 and digest(previous) == before
    assert f"continue with --resume {previous}" in capsys.readouterr().err
    assert not [f for f in os.listdir(logs) if f.startswith(".tmp-")]


def test_a_resume_that_would_change_the_schedule_is_refused(data, tmp_path, monkeypatch):
    from utils.config import UserError
    from utils.trainer import prepare
    monkeypatch.chdir(data)
    logs = tmp_path / "logs"
    train_run(config(Epoch=3, run_epochs=1, save_dir=str(logs)))
    resume = str(logs / "last_checkpoint.pth")
    for name, value in (("Epoch", 5), ("warmup_ratio", 0.5), ("Init_lr", 0.01)):
        with pytest.raises(UserError, match=f"--{name} cannot change when resuming: the run's learning-rate"):
            prepare(config(**{"Epoch": 3, "save_dir": str(logs), "resume": resume, name: value}), {"resume", name})
    assert prepare(config(Epoch=3, resume=resume, run_epochs=1), {"resume", "run_epochs"})[0]["Epoch"] == 3


def test_a_collapsed_model_is_named_and_writes_no_threshold(data, tmp_path, monkeypatch, capsys):
    import utils.trainer as trainer
    monkeypatch.chdir(data)
    build = trainer.build_model

    def collapsed(*args, **kwargs):  # every face at nearly one point: a tiny spread around a fixed embedding
        model = build(*args, **kwargs)
        with torch.no_grad():
            model.last_bn.weight.fill_(1e-3)
            model.last_bn.bias.fill_(1.0)
        model.last_bn.requires_grad_(False)
        return model

    monkeypatch.setattr(trainer, "build_model", collapsed)
    logs = tmp_path / "logs"
    train_run(config(Epoch=1, save_dir=str(logs), lfw_eval_flag=True, lfw_dir_path=str(data / "lfw"),
                     lfw_pairs_path=str(data / "pairs.txt")))
    out = capsys.readouterr().out
    assert "warning: the model collapsed in training" in out and "--sampler pk" in out
    from utils.checkpoint import read_weights_info
    info = read_weights_info(str(logs / "last_epoch_weights.pth"))
    assert "threshold" not in info and "lfw_accuracy" not in info
    import numpy as np
    from utils.verification import collapse_warning  # nearly one point, not exactly: named as collapsed too
    spread = 1e-5 + np.arange(8) * 1e-6
    assert collapse_warning(spread, np.arange(8) % 2 == 0).startswith("the embeddings have collapsed")
    assert collapse_warning(spread * 1e5, np.arange(8) % 2 == 0) is None


def test_annotation_ids_with_gaps_train_as_contiguous_classes(data, tmp_path, monkeypatch):
    from utils.trainer import build_data
    lines = (data / "cls_train.txt").read_text().splitlines()
    sparse = tmp_path / "sparse.txt"
    sparse.write_text("".join(f"{int(l.split(';')[0]) * 200_000};{l.split(';', 1)[1]}\n" for l in lines))
    built = build_data(config(annotation_path=str(sparse)))
    assert built.annotation.num_classes == len({l.split(";")[0] for l in lines})
    assert any("largest" in n for n in built.notes)


@pytest.mark.parametrize("keep", [0.5, 1.0])
def test_dropout_keep_prob_reaches_the_head(keep):
    from utils.trainer import build_model
    cfg = {"backbone": "mobilenet", "dropout_keep_prob": keep, "classifier_loss": "softmax", "model_path": "",
           "pretrained": False}
    assert build_model(cfg, 3, None, verbose=False).Dropout.p == pytest.approx(1 - keep)


def test_raw_pair_target_gives_the_criterion_the_raw_teacher(data, tmp_path):
    import numpy as np
    from utils.dataloader import read_annotation
    from utils.distill import save_teacher, teacher_key
    from utils.trainer import build_criterion, build_data
    annotation = str(data / "cls_train.txt")
    keys = [teacher_key(p, annotation) for p in read_annotation(annotation).paths]
    vectors = np.random.default_rng(0).normal(size=(len(keys), 2, 128)) + 3.0  # a common component
    save_teacher(str(tmp_path / "t.npz"), keys, vectors, [])
    plain = build_criterion(cfg := config(annotation_path=annotation, teacher_path=str(tmp_path / "t.npz")),
                            build_data(cfg))
    assert plain.pair_teacher is None and plain.pair_chance == 0.0
    raw = build_criterion(cfg := config(annotation_path=annotation, teacher_path=str(tmp_path / "t.npz"),
                                        distill_pair_target="raw"), build_data(cfg))
    assert raw.pair_teacher.shape == raw.teacher.shape and 0.8 < raw.pair_chance < 1.0
    assert not torch.allclose(raw.pair_teacher, raw.teacher)  # raw, not centred


def unlabelled_faces(data, tmp_path) -> tuple[str, str]:
    """An annotation of 4 fixture faces as faces without identities, and a random teacher file for them."""
    import numpy as np
    from utils.dataloader import read_annotation
    from utils.distill import save_teacher, teacher_key
    paths = read_annotation(str(data / "cls_train.txt")).paths[:4]
    annotation = tmp_path / "unlabelled.txt"
    annotation.write_text("".join(f"0;{p}\n" for p in paths))
    keys = [teacher_key(p, str(annotation)) for p in paths]
    save_teacher(str(tmp_path / "u.npz"), keys, np.random.default_rng(1).normal(size=(4, 2, 128)) + 3.0, [])
    return str(annotation), str(tmp_path / "u.npz")


def test_unlabelled_faces_join_the_teacher_table_and_the_batches_only(data, tmp_path):
    from utils.trainer import build_criterion, build_data, build_loaders
    teacher = fake_teacher(data, tmp_path / "teacher.npz")
    annotation, unlabelled_teacher = unlabelled_faces(data, tmp_path)
    base = dict(annotation_path=str(data / "cls_train.txt"), teacher_path=teacher, sampler="pk", mining="hard",
                images_per_person=2, batch_size=8, free_images=2, distill_pair_target="raw")
    plain_cfg = config(**base)
    with_cfg = config(**base, unlabelled_path=annotation, unlabelled_teacher_path=unlabelled_teacher,
                      unlabelled_images=2)
    plain, extended = build_data(plain_cfg), build_data(with_cfg)
    n = len(plain.annotation.paths)
    assert extended.teacher.shape == (n + 4, 2, 128)
    assert torch.equal(extended.teacher[:n], plain.teacher)     # centred on the annotation's own mean
    assert build_criterion(with_cfg, extended).pair_chance == build_criterion(plain_cfg, plain).pair_chance
    assert (extended.train_idx == plain.train_idx).all()
    batches, loader, _ = build_loaders(with_cfg, extended, 0, 1, torch.device("cpu"), 0)
    for batch, (images, labels, views) in zip(batches, loader):
        indices = [i for i, _ in batch]
        assert [i >= n for i in indices] == [False] * 6 + [True] * 2   # the last two are unlabelled faces
        assert labels[:6].min() >= 0 and labels[6:].tolist() == [-1, -1]
        assert (views[6:] // 2 >= n).all()
        break


def test_criterion_leaves_unlabelled_faces_to_the_teachers_terms():
    from utils.training import Criterion
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(8, 2, 16), dim=2)
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    logits, views = torch.randn(8, 3), torch.arange(8) * 2
    labels = torch.tensor([0, 0, 1, 1, 2, 2, -1, -1])
    criterion = Criterion(mining="hard", teacher=teacher, distill_weight=1.0, pair_weight=1.0)
    out, known = criterion(emb, logits, labels, views), criterion(emb[:6], logits[:6], labels[:6], views[:6])
    assert out["triplet"].item() == pytest.approx(known["triplet"].item())
    assert out["ce"].item() == pytest.approx(known["ce"].item())
    assert out["distill"].item() != pytest.approx(known["distill"].item())   # the teacher's terms see all 8
