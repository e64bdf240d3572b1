"""utils/dataloader.py: the per-person index, triplet and PK sampling properties, the split, the dataset."""
import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import FIXTURES
from utils.annotation import annotate
from utils.dataloader import (AnnotationError, FaceDataset, PersonIndex, PKBatchSampler, TripletBatchSampler,
                              ValidationBatchSampler, check_trainable, collate, contiguous_ids, light_augment,
                              read_annotation, repeated_lines, split_train_val, validation_triplets)
from utils.image import open_rgb, preprocess, resize_image
from utils.training import to_input

FACES = os.path.join(FIXTURES, "faces")
# 7 people: 4, 4, 1, 3, 6, 1, 2 images
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5, 6, 6])


@pytest.fixture(scope="module")
def annotation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ann")
    annotate(FACES, str(root / "cls_train.txt"), str(root / "names.txt"), check=False)
    return read_annotation(str(root / "cls_train.txt"))


def test_person_index_groups_every_image_once():
    subset = np.array([0, 2, 3, 5, 8, 9, 12, 13, 20])
    index = PersonIndex(LABELS, subset)
    assert index.people.tolist() == [0, 1, 2, 3, 4, 6]
    for slot, person in enumerate(index.people):
        assert sorted(index.images(slot).tolist()) == [i for i in subset if LABELS[i] == person]
    assert [int(index.people[s]) for s in index.anchor_slots] == [0, 4]  # person 1, 2, 3, 6 have one image here


def epoch_triplets(sampler, epoch):
    sampler.set_epoch(epoch)
    rows = []
    for batch in sampler:
        n = len(batch) // 3
        rows += [tuple(item[0] for item in (batch[i], batch[n + i], batch[2 * n + i])) for i in range(n)]
    return rows


def test_triplets_are_valid_and_one_image_people_are_only_negatives():
    index = PersonIndex(LABELS)
    rows = epoch_triplets(TripletBatchSampler(index, 12, 50, seed=5), 0)
    assert len(rows) == 200
    anchors_people, negative_people = set(), set()
    for a, p, n in rows:
        assert a != p and LABELS[a] == LABELS[p] and LABELS[n] != LABELS[a]
        anchors_people.add(int(LABELS[a]))
        negative_people.add(int(LABELS[n]))
    assert anchors_people == {0, 1, 3, 4, 6}
    assert {2, 5} <= negative_people


def test_triplets_reproducible_differ_per_epoch_and_shard_without_repeats():
    index = PersonIndex(LABELS)
    single = TripletBatchSampler(index, 12, 6, seed=5)
    assert epoch_triplets(single, 1) == epoch_triplets(TripletBatchSampler(index, 12, 6, seed=5), 1)
    assert epoch_triplets(single, 1) != epoch_triplets(single, 2)
    assert epoch_triplets(single, 1) != epoch_triplets(TripletBatchSampler(index, 12, 6, seed=6), 1)
    # two ranks of 6 images each see, step by step, exactly the triplets of one process with 12
    ranks = [TripletBatchSampler(index, 6, 6, seed=5, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(1)
    single.set_epoch(1)
    for whole, part0, part1 in zip(single, *ranks):
        assert sorted(whole) == sorted(part0 + part1)
        assert not set(part0) & set(part1)  # (image, seed) items: no item is drawn twice
    with pytest.raises(AnnotationError, match="multiple of 3"):
        TripletBatchSampler(index, 8, 1, seed=0)


def test_workers_decode_the_batches_the_sampler_drew(annotation):
    index = PersonIndex(annotation.labels)
    dataset = FaceDataset(annotation, [32, 32, 3], letterbox=True)
    sampler = TripletBatchSampler(index, 6, 4, seed=1)
    batches = list(sampler)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=2, collate_fn=collate)
    labels = [labels for _, labels, _ in loader]
    assert len(labels) == 4  # each batch once: workers never repeat one another
    for got, items in zip(labels, batches):
        assert got.tolist() == [int(annotation.labels[i]) for i, _ in items]


def test_pk_batches():
    index = PersonIndex(LABELS)
    sampler = PKBatchSampler(index, 8, 4, 20, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    for batch in first:
        people = [int(LABELS[i]) for i, _ in batch]
        assert len(set(people)) == 2 and all(people.count(p) == 4 for p in set(people))
        assert not {2, 5} & set(people)  # one-image people are never anchors
        for person in set(people):  # distinct images while the person has enough
            images = [i for i, _ in batch if LABELS[i] == person]
            assert len(set(images)) == min(4, int((LABELS == person).sum()))
    assert first == list(PKBatchSampler(index, 8, 4, 20, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != first
    ranks = [PKBatchSampler(index, 4, 4, 20, seed=3, rank=r, world=2) for r in range(2)]
    assert list(ranks[0]) != list(ranks[1])
    with pytest.raises(AnnotationError, match="images_per_person"):
        PKBatchSampler(index, 10, 4, 1, seed=0)


def test_pk_free_images_bring_in_single_image_people():
    index = PersonIndex(LABELS)
    sampler = PKBatchSampler(index, 10, 4, 200, seed=3, free_images=2)
    batches = list(sampler)
    assert all(len(b) == 10 for b in batches)
    free = [int(LABELS[i]) for b in batches for i, _ in b[8:]]
    assert {2, 5} & set(free)  # the one-image people now appear
    assert all(len({int(LABELS[i]) for i, _ in b[:8]}) == 2 for b in batches)
    with pytest.raises(AnnotationError, match="free_images"):
        PKBatchSampler(index, 8, 4, 1, seed=0, free_images=8)
    with pytest.raises(AnnotationError, match="images_per_person"):
        PKBatchSampler(index, 8, 4, 1, seed=0, free_images=1)


def test_split_and_size_checks_work_for_tiny_datasets():
    train, val = split_train_val(24, 0.01, seed=11)
    assert len(val) == 0 and train.tolist() == list(range(24))
    train, val = split_train_val(1000, 0.01, seed=11)
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 1000
    assert split_train_val(1000, 0.01, seed=11)[1].tolist() == val.tolist()
    with pytest.raises(AnnotationError, match="it needs at least 96 images"):
        check_trainable(PersonIndex(LABELS), len(LABELS), 96)
    with pytest.raises(AnnotationError, match="2 people"):
        check_trainable(PersonIndex(np.array([0, 0, 0])), 3, 3)


def test_validation_triplets_are_fixed_and_valid():
    index = PersonIndex(LABELS)
    held = np.array([1, 8, 9, 13, 19])  # person 2 (index 8) has no other image: no row
    rows = validation_triplets(index, held, LABELS, seed=2)
    assert rows[:, 0].tolist() == [1, 9, 13, 19]
    assert all(a != p and LABELS[a] == LABELS[p] and LABELS[n] != LABELS[a] for a, p, n in rows)
    assert (rows == validation_triplets(index, held, LABELS, seed=2)).all()
    batches = list(ValidationBatchSampler(rows, 6))
    assert [len(b) for b in batches] == [6, 6] and batches[0][0] == (1, -1) and batches[0][2] == (rows[0, 1], -1)


def test_dataset_pixels_match_preprocess_and_augmentation_is_seeded(annotation):
    dataset = FaceDataset(annotation, [112, 96, 3], letterbox=True, augment=True)
    images, labels, views = collate([dataset[(0, -1)], dataset[(5, -1)]])
    assert views.tolist() == [0, 10]  # 2 * index + flipped, never flipped without a seed
    assert images.shape == (2, 3, 112, 96) and images.dtype == torch.uint8
    assert images.is_contiguous(memory_format=torch.channels_last)
    x = to_input(images, torch.device("cpu"), channels_last=True)
    assert torch.equal(x[1], preprocess(open_rgb(annotation.paths[5]), [112, 96, 3], True))
    assert labels.tolist() == [int(annotation.labels[0]), int(annotation.labels[5])]
    a, b, c = dataset[(3, 42)][0], dataset[(3, 42)][0], dataset[(3, 43)][0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    plain = FaceDataset(annotation, [64, 64, 3], True)
    items = [plain[(3, s)] for s in range(20)]
    flips = [np.array_equal(image[:, ::-1], plain[(3, -1)][0]) for image, _, _ in items]
    assert 3 < sum(flips) < 17  # about half the items are mirrored
    assert [view for _, _, view in items] == [6 + f for f in flips]  # the view says which


def test_augment_strength_widens_the_change_and_one_is_the_light_default(annotation):
    image = resize_image(open_rgb(annotation.paths[3]), (64, 64), True)
    base = np.asarray(image, dtype=np.float32)

    def change(strength: float) -> float:
        rng = np.random.default_rng(7)
        views = [np.asarray(light_augment(image, rng, strength), dtype=np.float32) for _ in range(12)]
        return float(np.mean([np.abs(view - base).mean() for view in views]))

    default = np.asarray(light_augment(image, np.random.default_rng(5)))
    assert np.array_equal(default, np.asarray(light_augment(image, np.random.default_rng(5), 1.0)))
    assert change(0.5) < change(1.0) < change(2.0) < change(3.0)


def test_unreadable_image_is_replaced_and_reported_once(tmp_path, capsys):
    root = tmp_path / "faces"
    shutil.copytree(FACES, root)
    person = sorted(os.listdir(root))[0]
    broken = root / person / sorted(os.listdir(root / person))[0]
    broken.write_bytes(b"\xff\xd8 truncated")
    annotate(str(root), str(tmp_path / "a.txt"), str(tmp_path / "n.txt"), check=False)
    annotation = read_annotation(str(tmp_path / "a.txt"))
    dataset = FaceDataset(annotation, [32, 32, 3], letterbox=True)
    bad = annotation.paths.index(str(broken))
    for seed in range(3):
        image, label, _ = dataset[(bad, seed)]
        assert image.shape == (32, 32, 3) and label == annotation.labels[bad]
    assert capsys.readouterr().out.count("warning:") == 1



def test_an_annotation_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "cls_train.txt"
    path.write_bytes("0;caf\u00e9.jpg\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match=f"{path}: not UTF-8 text"):
        read_annotation(str(path))


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "cls_train.txt"
    path.write_bytes(b"\xef\xbb\xbf0;a.jpg\n1;b.jpg\n")
    assert read_annotation(str(path)).labels.tolist() == [0, 1]


def test_repeated_lines_and_an_image_under_two_ids_are_warned_with_count_and_example(tmp_path):
    path = tmp_path / "cls_train.txt"
    path.write_text("0;a.jpg\n0;b.jpg\n0;a.jpg\n0;b.jpg\n1;c.jpg\n2;c.jpg\n")
    warnings = repeated_lines(read_annotation(str(path)), str(path))
    assert len(warnings) == 2
    assert "2 lines repeat an earlier line (e.g. " in warnings[0] and "a.jpg" in warnings[0]
    assert "1 images are listed under two or more ids" in warnings[1] and "under 1, 2" in warnings[1]
    path.write_text("0;a.jpg\n1;b.jpg\n")
    assert repeated_lines(read_annotation(str(path)), str(path)) == []


def test_ids_with_gaps_are_numbered_contiguously_with_a_note(tmp_path):
    path = tmp_path / "cls_train.txt"
    path.write_text("".join(f"{i * 200_000};{i}.jpg\n" for i in range(11)))
    annotation, note = contiguous_ids(read_annotation(str(path)), str(path))
    assert annotation.num_classes == 11 and annotation.labels.tolist() == list(range(11))
    assert "largest 2000000" in note
    assert contiguous_ids(annotation, str(path))[1] is None
