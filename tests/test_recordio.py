"""RecordIO face packs: the record format, insightface's layout, the round trip from a folder, and training."""
import os
import struct

import numpy as np
import pytest

from conftest import FIXTURES
from utils.annotation import annotate
from utils.dataloader import read_annotation
from utils.image import open_rgb
from utils.recordio import (MAGIC, MAGIC_BYTES, RecordDataset, RecordFile, RecordIOError, encode_record,
                            image_bytes, index_path, pack_annotation, pack_header, read_records, read_training_data,
                            training_alignment)

FACES = os.path.join(FIXTURES, "faces")


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """cls_train.txt over the fixture faces and the face pack written from it by the project's writer."""
    root = tmp_path_factory.mktemp("pack")
    annotate(FACES, str(root / "cls_train.txt"), str(root / "cls_names.txt"))
    pack_annotation(read_annotation(str(root / "cls_train.txt")), str(root / "train.rec"), progress=False)
    return root


def test_a_record_has_mxnets_bytes():
    # magic, length word, payload, zero padding to 4 bytes (dmlc-core's RecordIOWriter)
    assert encode_record(b"abcde") == struct.pack("<II", MAGIC, 5) + b"abcde\0\0\0"
    # a magic word at a 4-byte boundary splits the record: first part flag 1, last part flag 3
    split = encode_record(b"abcd" + MAGIC_BYTES + b"xy")
    assert split == struct.pack("<II", MAGIC, 1 << 29 | 4) + b"abcd" + struct.pack("<II", MAGIC, 3 << 29 | 2) + \
        b"xy\0\0"


def test_split_records_read_back_whole(tmp_path):
    payloads = [b"ab\0\0" + MAGIC_BYTES + b"xyz" + MAGIC_BYTES + MAGIC_BYTES + b"q", MAGIC_BYTES, b"", b"plain"]
    path = tmp_path / "m.rec"
    path.write_bytes(b"".join(encode_record(p) for p in payloads))
    rec = RecordFile(str(path))
    offsets = rec.offsets()
    assert len(offsets) == len(payloads)
    assert [rec.read_at(o)[0] for o in offsets] == payloads


def test_folder_to_rec_gives_every_image_and_label_back(packed):
    annotation = read_annotation(str(packed / "cls_train.txt"))
    pack = read_records(str(packed / "train.rec"), progress=False)
    assert len(pack.paths) == len(annotation.paths) == 24
    rec = RecordFile(pack.rec_path)
    for i, path in enumerate(annotation.paths):  # the annotation is grouped by person already
        assert image_bytes(rec, int(pack.offsets[i])) == open(path, "rb").read()
    assert pack.labels.tolist() == annotation.labels.tolist()
    assert pack.paths[0].endswith("train.rec#1") and pack.num_classes == 6


def test_insightface_layout_record_zero_and_identity_records(packed):
    rec = RecordFile(str(packed / "train.rec"))
    lines = [line.split("\t") for line in open(index_path(rec.path)).read().splitlines()]
    table = {int(k): int(v) for k, v in lines}
    assert sorted(table) == list(range(0, 1 + 24 + 6))
    first = rec.read_at(table[0])[0]
    flag, _, _, _ = struct.unpack_from("<IfQQ", first)
    assert flag == 2 and np.frombuffer(first, "<f4", 2, 24).tolist() == [25.0, 31.0]
    person = rec.read_at(table[25])[0]
    assert np.frombuffer(person, "<f4", 2, 24).tolist() == [1.0, 5.0]  # images 1..4 of class 0


def test_a_pack_without_idx_or_identity_records_is_labelled_from_its_headers(packed, tmp_path):
    annotation = read_annotation(str(packed / "cls_train.txt"))
    # keys 0.. in file order, no header record; label arrays (flag 2: class, extra) as some packs have
    records = [pack_header([float(label), 7.0], key) + open(path, "rb").read()
               for key, (path, label) in enumerate(zip(annotation.paths, annotation.labels.tolist()))]
    path = tmp_path / "plain.rec"
    path.write_bytes(b"".join(encode_record(r) for r in records))
    pack = read_records(str(path), progress=False)
    assert pack.labels.tolist() == annotation.labels.tolist()
    assert image_bytes(RecordFile(str(path)), int(pack.offsets[5])) == open(annotation.paths[5], "rb").read()


def test_dataset_decodes_records_like_files(packed):
    pack = read_training_data(str(packed / "train.rec"))
    dataset = RecordDataset(pack, (64, 64, 3), letterbox=True)
    files = read_annotation(str(packed / "cls_train.txt"))
    assert np.array_equal(np.asarray(dataset.open(3)), np.asarray(open_rgb(files.paths[3])))
    image, label, view = dataset[(3, 5)]
    assert image.shape == (64, 64, 3) and label == files.labels[3] and view // 2 == 3


def test_damaged_files_are_one_line_errors(packed, tmp_path):
    bad = tmp_path / "bad.rec"
    bad.write_bytes(b"not a record file at all")
    with pytest.raises(RecordIOError, match="no RecordIO record at byte 0"):
        read_records(str(bad), progress=False)
    cut = tmp_path / "cut.rec"
    cut.write_bytes((packed / "train.rec").read_bytes()[:5000])
    (tmp_path / "cut.idx").write_bytes((packed / "train.idx").read_bytes())
    with pytest.raises(RecordIOError, match="cut.idx:.*within"):
        read_records(str(cut), progress=False)


def test_a_pack_records_five_point_warps_at_its_image_side(packed):
    pack = read_training_data(str(packed / "train.rec"))
    assert training_alignment(pack, "auto") == {"mode": "warp", "size": 160}
    assert training_alignment(pack, "none") is None
    folder = read_training_data(str(packed / "cls_train.txt"))
    assert training_alignment(folder, "auto") is None  # the fixture folder has no align_settings.json
    assert training_alignment(folder, "crop") == {"mode": "crop", "size": 160, "margin": 32}


def config(tmp_path, **overrides):
    import train
    from utils.config import settings_of
    cfg = settings_of(vars(train))
    cfg.update(input_shape=[64, 64, 3], batch_size=6, num_workers=0, val_split=0.3, lfw_eval_flag=False,
               Epoch=1, save_dir=str(tmp_path / "logs"), precision="fp32")
    cfg.update(overrides)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["triplet", "pk", "distill"])
def test_two_steps_from_a_rec_with_each_sampler(packed, tmp_path, sampler, capsys):
    import train
    from utils.checkpoint import read_weights_info
    from utils.distill import save_teacher, teacher_key
    rec = str(packed / "train.rec")
    extra = {}
    if sampler in ("pk", "distill"):
        extra = dict(sampler="pk", images_per_person=2, mining="semihard")
    if sampler == "distill":
        keys = [teacher_key(p, rec) for p in read_training_data(rec).paths]
        assert keys[:2] == ["train.rec#1", "train.rec#2"]  # stable names of the records
        save_teacher(str(tmp_path / "t.npz"), keys, np.random.default_rng(0).normal(size=(24, 2, 128)), [])
        extra.update(teacher_path=str(tmp_path / "t.npz"), distill_weight=2.0)
    train.train(config(tmp_path, annotation_path=rec, **extra))
    out = capsys.readouterr().out
    assert "17 training images" in out and "2 steps of 6 images" in out
    info = read_weights_info(str(tmp_path / "logs" / "last_epoch_weights.pth"))
    assert info["alignment"] == {"mode": "warp", "size": 160}
    if sampler == "distill":
        import csv
        run_dir = next((tmp_path / "logs").glob("loss_*"))
        assert 0 < float(next(csv.DictReader(open(run_dir / "history.csv")))["distill_loss"]) <= 2
