"""The 1:N threshold for a gallery: impostor tables, their reading, leave-one-out, and the choice between them."""
import json
import os

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from utils import open_set
from utils.gallery import PersonSearch, similarity_to_distance


def synthetic_people(people: int, images: int, seed: int, dim: int = 24, noise: float = 0.6):
    """Unit embeddings of ``people`` independent people (a random centre each, plus noise), and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.repeat(centres, images, axis=0) + noise / np.sqrt(dim) * rng.standard_normal((people * images, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.repeat([f"p{seed}_{i:04d}" for i in range(people)], images)
    return vectors.astype(np.float32), labels


@pytest.fixture(scope="module")
def table():
    embeddings, labels = synthetic_people(600, 4, seed=1)
    return open_set.impostor_table(embeddings, labels, "synthetic")


def test_templates_are_the_means_of_disjoint_groups_of_one_person():
    embeddings = np.arange(14, dtype=np.float32).reshape(7, 2)
    labels = np.array(["b", "a", "b", "a", "b", "c", "a"])
    means, owners = open_set.templates(embeddings, labels, 2)
    # a: rows 1, 3, 6 -> one group (1, 3); b: rows 0, 2, 4 -> (0, 2); c: one row, no group
    assert owners.tolist() == ["a", "b"]
    np.testing.assert_allclose(means, [(embeddings[1] + embeddings[3]) / 2, (embeddings[0] + embeddings[2]) / 2])


def test_table_rows_are_the_quantiles_of_impostor_distances():
    embeddings, labels = synthetic_people(300, 1, seed=2)  # one image each: every weight is equal
    table = open_set.impostor_table(embeddings, labels)
    distances = similarity_to_distance(embeddings @ embeddings.T)[~np.eye(len(labels), dtype=bool)]
    row = table["distances"]["1"]
    assert table["scores"]["1"] == 300 * 299 and set(table["distances"]) == {"1"}  # no person has 2 images
    assert len(row) == sum(t * distances.size >= open_set.MIN_TAIL_COUNT for t in open_set.TAILS)
    np.testing.assert_allclose(row, np.quantile(distances, open_set.TAILS[:len(row)]), atol=2e-3)


def test_each_person_weighs_the_same_however_many_images():
    embeddings, labels = synthetic_people(200, 1, seed=3)
    # one person with 400 near-copies would otherwise be half of all probes
    crowd = embeddings[:1] + 0.01 * np.random.default_rng(0).standard_normal((400, embeddings.shape[1]))
    crowd /= np.linalg.norm(crowd, axis=1, keepdims=True)
    heavy = open_set.impostor_table(np.r_[embeddings, crowd.astype(np.float32)],
                                    np.r_[labels, np.repeat("crowd", 400)])
    plain = open_set.impostor_table(embeddings, labels)
    np.testing.assert_allclose(heavy["distances"]["1"][:6], plain["distances"]["1"][:6], atol=0.02)


def test_the_table_survives_json_and_its_check(table):
    again = open_set.check_table(json.loads(json.dumps(table)))
    assert set(again["distances"]) == {"1", "2", "3"}
    assert all(np.all(np.diff(row) < 0) for row in again["distances"].values())
    assert open_set.check_table({**table, "distances": {}}) is None  # too few images: nothing measured
    bad = {**table, "distances": {"1": [0.5, 0.9]}}
    no_first_row = {**table, "distances": {"2": [1, 0.5]}}
    for broken in (None, {"tails": [0.1]}, bad, {**table, "tails": [0.1, 0.2, 0.3]}, no_first_row):
        with pytest.raises(ValueError):
            open_set.check_table(broken)


def test_one_person_threshold_inverts_the_row(table):
    row = table["distances"]["1"]
    for i in (2, 5, 8):
        share = open_set.stranger_share(row, table["tails"], np.array(row[i]))
        assert share == pytest.approx(table["tails"][i], rel=1e-6)
    # beyond the rarest measured share the tail goes on falling, and the share stays within [0, 1]
    assert 0 < open_set.stranger_share(row, table["tails"], np.array(row[-1] - 0.05)) < table["tails"][len(row) - 1]
    assert open_set.stranger_share(row, table["tails"], np.array(2.0)) == 1.0


def test_n_people_need_the_share_for_one_of_1_minus_rate_to_the_1_over_n(table):
    for people in (1, 8, 100):
        threshold = open_set.table_threshold(table, [1] * people, "mean", 0.01)
        one = open_set.stranger_share(table["distances"]["1"], table["tails"], np.array(threshold))
        assert one == pytest.approx(1 - 0.99 ** (1 / people), rel=1e-3)
    # more people or more images per person ("best") need a stricter threshold; "mean" over 3 images a looser
    one = open_set.table_threshold(table, [1] * 8, "mean", 0.01)
    assert open_set.table_threshold(table, [1] * 16, "mean", 0.01) < one
    assert open_set.table_threshold(table, [2] * 8, "best", 0.01) == pytest.approx(
        open_set.table_threshold(table, [1] * 16, "mean", 0.01))
    assert open_set.table_threshold(table, [3] * 8, "mean", 0.01) > one
    # a person with more images than the table has rows uses its last row
    assert open_set.table_threshold(table, [7] * 8, "mean", 0.01) == open_set.table_threshold(table, [3] * 8, "mean",
                                                                                               0.01)


@pytest.mark.parametrize("images", [1, 3])
def test_the_share_of_strangers_named_is_the_one_asked_for(table, images):
    """Independent synthetic people: a table from some people keeps the rate on galleries of others."""
    strangers, _ = synthetic_people(3000, 1, seed=4)
    reached = []
    for seed in range(10, 30):
        embeddings, labels = synthetic_people(10, images, seed=seed)
        threshold = open_set.table_threshold(table, [images] * 10, "mean", 0.05)
        search = PersonSearch(embeddings, np.repeat(np.arange(10), images), list(range(10)), "mean")
        reached.append(np.mean(search.nearest(strangers)[1] < threshold))
    assert 0.03 < np.mean(reached) < 0.07


def test_leave_one_out_is_the_nearest_other_person():
    embeddings, labels = synthetic_people(5, 3, seed=5)
    for rule in ("mean", "best"):
        found = open_set.leave_one_out(embeddings, labels, rule)
        for i, person in enumerate(labels):
            others = labels != person
            people = sorted(set(labels[others]))
            search = PersonSearch(embeddings[others], np.array([people.index(p) for p in labels[others]]), people,
                                  rule)
            assert found[i] == pytest.approx(float(search.nearest(embeddings[i])[1][0]), abs=1e-5)
    assert np.all(np.isinf(open_set.leave_one_out(embeddings[:3], labels[:3], "mean")))


def test_large_gallery_uses_itself_and_keeps_the_rate():
    embeddings, labels = synthetic_people(400, 2, seed=6)
    strangers, _ = synthetic_people(3000, 1, seed=7)
    choice = open_set.choose_threshold(embeddings, labels, "mean", 0.05)
    assert choice.source == "gallery" and "400 people x 2 images" in choice.reason
    people = sorted(set(labels))
    search = PersonSearch(embeddings, np.array([people.index(p) for p in labels]), people, "mean")
    assert 0.025 < np.mean(search.nearest(strangers)[1] < choice.threshold) < 0.08


def test_the_choice_says_where_the_threshold_came_from(table):
    embeddings, labels = synthetic_people(8, 2, seed=8)
    choice = open_set.choose_threshold(embeddings, labels, "mean", 0.01, table, verification=1.05)
    assert choice.source == "weights" and choice.reason.startswith(f"threshold {choice.threshold:.3f} for a gallery "
                                                                   "of 8 people x 2 images at <=0.01 strangers")
    assert "synthetic" in choice.reason
    coarse = open_set.choose_threshold(embeddings, labels, "mean", 0.01, None, verification=1.05)
    assert coarse.source == "gallery (coarse)" and "eval_LFW.py" in coarse.reason
    assert coarse.threshold <= open_set.leave_one_out(embeddings, labels, "mean").min()
    lone = open_set.choose_threshold(embeddings[:2], labels[:2], "mean", 0.01, None, verification=1.05)
    assert (lone.source, lone.threshold) == ("verification", 1.05)
    assert open_set.choose_threshold(embeddings[:2], labels[:2], "mean", 0.01, table).source == "weights"
    for rate in (0, 1, -0.1):
        with pytest.raises(ValueError):
            open_set.choose_threshold(embeddings, labels, "mean", rate, table)


def test_real_embeddings_strangers_stay_unnamed():
    """The shipped weights on the fixture faces (aligned as predict.py aligns them, by the weights' JSON): a
    table from the LFW fixture people names none of them against a gallery of the CelebA fixture people, and
    the gallery's people are still found."""
    import torch
    from facenet import Facenet
    torch.set_num_threads(1)
    model = Facenet(model_path=os.path.join(ROOT, "model_data", "facenet_mobilenet.pth"), cuda=False)
    lfw = os.path.join(FIXTURES, "lfw", "images")
    lfw_paths = [os.path.join(lfw, p, f) for p in sorted(os.listdir(lfw))
                 for f in sorted(os.listdir(os.path.join(lfw, p)))]
    faces = os.path.join(FIXTURES, "faces")
    face_paths = [os.path.join(faces, p, f) for p in sorted(os.listdir(faces))
                  for f in sorted(os.listdir(os.path.join(faces, p)))]
    lfw_labels = np.array([os.path.basename(os.path.dirname(p)) for p in lfw_paths])
    face_labels = np.array([os.path.basename(os.path.dirname(p)) for p in face_paths])
    lfw_embeddings, face_embeddings = model.embed(lfw_paths), model.embed(face_paths)
    table = open_set.check_table(open_set.impostor_table(lfw_embeddings, lfw_labels, "fixture"))
    gallery = np.arange(len(face_paths)) % 4 < 2  # two images of each person in the gallery, two as probes
    choice = open_set.choose_threshold(face_embeddings[gallery], face_labels[gallery], "mean", 0.05, table,
                                       model.threshold)
    assert choice.source == "weights" and choice.threshold < model.threshold
    people = sorted(set(face_labels))
    search = PersonSearch(face_embeddings[gallery], np.array([people.index(p) for p in face_labels[gallery]]), people)
    found, distance = search.nearest(face_embeddings[~gallery])
    assert np.mean((distance < choice.threshold) & (np.array(people)[found] == face_labels[~gallery])) >= 0.5
    assert np.mean(search.nearest(lfw_embeddings)[1] < choice.threshold) <= 0.1
