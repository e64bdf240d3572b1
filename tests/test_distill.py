"""utils/distill.py: the losses on tiny synthetic cases and every error of the teacher file."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.distill import (TeacherError, bank_loss, chance_similarity, distill_loss, read_teacher, save_teacher,
                           similarity_loss, teacher_key, teacher_rows, teacher_targets)


def unit(rows: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_losses_are_zero_when_the_student_equals_the_teacher():
    t = unit(5)
    assert distill_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert similarity_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(t, -t).item() == pytest.approx(2.0, abs=1e-6)  # opposite: the largest value


def test_bank_loss_is_the_kl_of_the_softmaxes_over_the_bank():
    bank = unit(30, seed=3)
    teacher = bank[:4]
    assert bank_loss(teacher, teacher, bank, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    student = unit(4, seed=4)
    p = torch.softmax(teacher @ bank.T / 0.1, 1)
    q = torch.softmax(student @ bank.T / 0.1, 1)
    expected = (p * (p.log() - q.log())).sum(1).mean()
    assert bank_loss(student, teacher, bank, 0.1).item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 0.1
    # a student that moves towards its teacher is closer by this measure too
    halfway = F.normalize(student + teacher, dim=1)
    assert bank_loss(halfway, teacher, bank, 0.1) < bank_loss(student, teacher, bank, 0.1)


def test_distill_loss_is_one_minus_the_mean_cosine():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # cosines 0.6 and 1
    assert distill_loss(s, t).item() == pytest.approx(1 - (0.6 + 1.0) / 2)
    # the in-batch similarity of the student is 0, of the teacher 0.8: two off-diagonal entries
    assert similarity_loss(s, t).item() == pytest.approx(0.8 ** 2)


def test_raw_similarities_are_mapped_so_that_chance_is_zero(tmp_path):
    # a raw teacher with a large common component: random pairs have a high cosine
    annotation = str(tmp_path / "cls_train.txt")
    images = [str(tmp_path / "faces" / f"{i}" / "1.jpg") for i in range(40)]
    vectors = np.random.default_rng(1).normal(size=(40, 2, 16)) * 0.5 + 2.0
    path = write(tmp_path, [teacher_key(p, annotation) for p in images], vectors)
    rows = teacher_rows(path, images, annotation, 16)
    raw = teacher_targets(rows, centre=False)
    flat = raw.reshape(-1, 16).double()
    sims = flat @ flat.T
    chance = chance_similarity(raw)
    assert chance == pytest.approx(sims.mean().item(), abs=1e-6) and chance > 0.8
    assert abs(chance_similarity(teacher_targets(rows))) < 0.01  # centred: about 0
    # the target is (s - chance) / (1 - chance): a student with exactly those similarities has no loss,
    # and chance 0 is the plain term
    t = raw[:6, 0]
    target = (t @ t.T - chance) / (1 - chance)
    assert similarity_loss(t, t, chance).item() == pytest.approx(((t @ t.T - target)[~torch.eye(6, dtype=bool)])
                                                                 .pow(2).mean().item(), rel=1e-5)
    assert similarity_loss(t, t, chance).item() > 0.1
    assert similarity_loss(t, t, 0.0).item() == pytest.approx(0, abs=1e-6)


def test_a_gradient_step_moves_the_student_towards_the_teacher():
    teacher = unit(6, seed=1)
    raw = torch.randn(6, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    before = distill_loss(F.normalize(raw, dim=1), teacher)
    before.backward()
    with torch.no_grad():
        stepped = raw - 0.1 * raw.grad
    after = distill_loss(F.normalize(stepped, dim=1), teacher)
    assert after < before
    cos_before = (F.normalize(raw, dim=1) * teacher).sum(1)
    cos_after = (F.normalize(stepped, dim=1) * teacher).sum(1)
    assert (cos_after > cos_before).all()  # every row turns towards its teacher row


def write(tmp_path, keys, embeddings, missing=()):
    path = str(tmp_path / "teacher.npz")
    save_teacher(path, list(keys), np.asarray(embeddings, np.float32), list(missing))
    return path


def test_teacher_file_round_trip_in_annotation_order(tmp_path):
    annotation = str(tmp_path / "cls_train.txt")
    images = [str(tmp_path / "faces" / "b" / "1.jpg"), str(tmp_path / "faces" / "a" / "1.jpg")]
    keys = [teacher_key(p, annotation) for p in images]
    assert keys == ["faces/b/1.jpg", "faces/a/1.jpg"]
    vectors = np.random.default_rng(0).normal(size=(2, 2, 128)) * 3 + 10  # a large common component
    path = write(tmp_path, keys[::-1], vectors[::-1], missing=["faces/c/1.jpg"])
    table = teacher_targets(teacher_rows(path, images, annotation, 128))
    assert table.shape == (2, 2, 128) and table.dtype == torch.float32
    assert torch.allclose(table.norm(dim=2), torch.ones(2, 2))  # normalised
    centred = torch.from_numpy(vectors[0, 1] - vectors.reshape(-1, 128).mean(0)).float()
    assert torch.allclose(table[0, 1], F.normalize(centred, dim=0), atol=1e-6)  # centred on the mean, in order
    assert (table[0, 0] @ table[1, 0]).abs() < 0.5  # the common component is gone
    assert read_teacher(path)[2] == ["faces/c/1.jpg"]


def test_teacher_file_errors_are_one_line(tmp_path):
    annotation = str(tmp_path / "cls_train.txt")
    images = [str(tmp_path / "x" / f"{i}.jpg") for i in range(5)]
    keys = [teacher_key(p, annotation) for p in images]
    partial = write(tmp_path, keys[:2], np.ones((2, 2, 128)))
    with pytest.raises(TeacherError, match=r"3 of 5 training images have no teacher entry \(first: x/2.jpg"):
        teacher_rows(partial, images, annotation, 128)
    small = write(tmp_path, keys, np.ones((5, 2, 64)))
    with pytest.raises(TeacherError, match="64 dimensions but the student's embedding has 128"):
        teacher_rows(small, images, annotation, 128)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(TeacherError, match="not a readable teacher file"):
        teacher_rows(str(broken), images, annotation, 128)
    with pytest.raises(TeacherError, match="no such teacher file"):
        teacher_rows(str(tmp_path / "none.npz"), images, annotation, 128)
    renamed = tmp_path / "renamed.npz"  # a .npy array under an .npz name
    with open(renamed, "wb") as handle:
        np.save(handle, np.ones((5, 2, 128), np.float32))
    with pytest.raises(TeacherError, match="holds one array, not a teacher file"):
        teacher_rows(str(renamed), images, annotation, 128)
    flat = write(tmp_path, keys, np.ones((5, 128)))
    with pytest.raises(TeacherError, match=r"expected \(5, 2, D\)"):
        teacher_rows(flat, images, annotation, 128)
    bad = np.ones((5, 2, 128))
    bad[1, 0, 3] = np.nan
    with pytest.raises(TeacherError, match="NaN"):
        teacher_rows(write(tmp_path, keys, bad), images, annotation, 128)
