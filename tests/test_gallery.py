"""Gallery of known people: naming, build, incremental update, storage, fingerprint, exact search, identify."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, ROOT
from facenet import Facenet
from test_facenet import make_weights
from utils import gallery
from utils.identify import UNKNOWN, identify_faces

FACES = os.path.join(FIXTURES, "faces")
NO_FACE = os.path.join(FIXTURES, "mtcnn", "texture_no_face.jpg")
STRANGER = os.path.join(FIXTURES, "mtcnn", "Aaron_Peirsol_0001.jpg")
# Trained weights: the tests of who is who need embeddings that tell faces apart.
SHIPPED = os.path.join(ROOT, "model_data", "facenet_mobilenet.pth")
PEOPLE = ("celeba_7201", "celeba_7202", "celeba_7203")


def face_files(person: str) -> list[str]:
    return [os.path.join(FACES, person, name) for name in sorted(os.listdir(os.path.join(FACES, person)))]


def make_known(directory, per_person: int = 2) -> str:
    """A gallery folder of the first ``per_person`` fixture faces of each of PEOPLE."""
    root = os.path.join(directory, "known")
    for person in PEOPLE:
        os.makedirs(os.path.join(root, person))
        for path in face_files(person)[:per_person]:
            shutil.copy(path, os.path.join(root, person))
    return root


def group_photo(path: str, faces: list[str]) -> list[tuple[int, int, int, int]]:
    """Paste ``faces`` side by side on a grey canvas, save it as ``path``, return each tile's box."""
    canvas = Image.new("RGB", (40 + 200 * len(faces), 240), (128, 128, 128))
    tiles = []
    for i, face in enumerate(faces):
        x, y = 20 + 200 * i, 40
        canvas.paste(Image.open(face).convert("RGB").resize((160, 160)), (x, y))
        tiles.append((x, y, x + 160, y + 160))
    canvas.save(path, quality=95)
    return tiles


@pytest.fixture(scope="module")
def model():
    return Facenet(model_path=SHIPPED, cuda=False, align=True)


def test_names_from_folders_and_flat_files(tmp_path):
    for name in ("Ada/1.jpg", "Ada/old/2.png", "Bob_Smith_2.jpg", "Bob_Smith_10.jpg", "Cy.png", "7_001.jpg",
                 ".hidden.jpg", "notes.txt", ".cache/3.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [(s.path, s.name) for s in gallery.scan(str(tmp_path))]
    assert found == [("7_001.jpg", "7"), ("Ada/1.jpg", "Ada"), ("Ada/old/2.png", "Ada"),
                     ("Bob_Smith_10.jpg", "Bob_Smith"), ("Bob_Smith_2.jpg", "Bob_Smith"), ("Cy.png", "Cy")]


@pytest.mark.parametrize("names", [("Ada/1.jpg", "ada_1.jpg"), ("Ada Lovelace/1.jpg", "Ada_Lovelace/2.jpg")])
def test_names_that_differ_only_in_case_or_spaces_are_refused(tmp_path, names):
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(gallery.GalleryError, match="differ only in case or spaces") as info:
        gallery.scan(str(tmp_path))
    assert "\n" not in str(info.value)


def test_build_update_and_load(model, tmp_path, monkeypatch):
    root = make_known(tmp_path)
    shutil.copy(NO_FACE, os.path.join(root, "nobody_1.jpg"))
    with open(os.path.join(root, "broken_1.jpg"), "w") as handle:
        handle.write("not a picture")
    path = str(tmp_path / "gallery.npz")
    built, report = gallery.update(model, root, path, batch_size=4, progress=False)
    assert (report.added, report.kept, report.saved) == (8, 0, True)
    assert report.skipped == {"broken_1.jpg": "not an image file PIL can read", "nobody_1.jpg": "no face found"}
    assert built.people == list(PEOPLE) and len(built.paths) == 6
    np.testing.assert_allclose(np.linalg.norm(built.embeddings, axis=1), 1, atol=1e-5)
    loaded = gallery.load(path, gallery.fingerprint(model))
    assert loaded.paths == built.paths and loaded.names == built.names and loaded.skipped == built.skipped
    np.testing.assert_array_equal(loaded.embeddings, built.embeddings)

    calls = []
    face = model.face
    monkeypatch.setattr(model, "face", lambda p: isinstance(p, str) and calls.append(os.path.relpath(p, root))
                        or face(p))
    again, report = gallery.update(model, root, path, progress=False)
    assert calls == [] and not report.saved and report.kept == 6 and len(report.skipped) == 2
    np.testing.assert_array_equal(again.embeddings, built.embeddings)

    new = os.path.join("celeba_7201", os.path.basename(face_files("celeba_7201")[2]))
    shutil.copy(face_files("celeba_7201")[2], os.path.join(root, new))
    changed = os.path.join("celeba_7202", os.path.basename(face_files("celeba_7202")[0]))
    shutil.copy(face_files("celeba_7206")[0], os.path.join(root, changed))
    removed = os.path.join("celeba_7203", os.path.basename(face_files("celeba_7203")[1]))
    os.remove(os.path.join(root, removed))
    updated, report = gallery.update(model, root, path, progress=False)
    assert sorted(calls) == sorted([new, changed])
    assert (report.added, report.changed, report.removed, report.kept, report.saved) == (1, 1, 1, 4, True)
    assert removed not in updated.paths and new in updated.paths and len(updated.paths) == 6
    before = dict(zip(built.paths, built.embeddings))
    after = dict(zip(updated.paths, updated.embeddings))
    for p in set(before) & set(after) - {changed}:
        np.testing.assert_array_equal(after[p], before[p])
    np.testing.assert_allclose(after[changed], model.embed([model.face(face_files("celeba_7206")[0])])[0],
                               atol=1e-5)


def test_empty_gallery_is_an_error(model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(gallery.GalleryError, match="empty gallery: no images"):
        gallery.update(model, str(tmp_path / "empty"), str(tmp_path / "g.npz"), progress=False)
    (tmp_path / "faceless").mkdir()
    shutil.copy(NO_FACE, tmp_path / "faceless" / "x_1.jpg")
    with pytest.raises(gallery.GalleryError, match="empty gallery: no usable face in its 1 image"):
        gallery.update(model, str(tmp_path / "faceless"), str(tmp_path / "g.npz"), progress=False)
    assert not (tmp_path / "g.npz").exists()


def test_gallery_of_other_weights_or_settings_is_refused(model, tmp_path):
    root = make_known(tmp_path, per_person=1)
    path = str(tmp_path / "g.npz")
    gallery.update(model, root, path, progress=False)
    other = Facenet(model_path=make_weights(tmp_path), cuda=False, align=True)
    refused = r"built with other weights \(sha256 [0-9a-f]{12}\.\.\. vs "
    with pytest.raises(gallery.GalleryError, match=refused) as info:
        gallery.update(other, root, path, progress=False)
    assert "\n" not in str(info.value) and path in str(info.value)
    smaller = Facenet(model_path=SHIPPED, cuda=False, align=True, input_shape=[96, 96, 3])
    with pytest.raises(gallery.GalleryError, match="built with other settings .*input_shape"):
        gallery.update(smaller, root, path, progress=False)
    with open(path, "wb") as handle:
        handle.write(b"PK\x03\x04 truncated")
    with pytest.raises(gallery.GalleryError, match="not a readable gallery file"):
        gallery.load(path)


@pytest.mark.parametrize("rule", gallery.RULES)
def test_search_matches_brute_force(rule, monkeypatch):
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((300, 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = rng.integers(0, 40, 300)  # unsorted, and some of the 40 people have no image
    queries = rng.standard_normal((70, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    monkeypatch.setattr(gallery, "SEARCH_BLOCK", 300 * 8)  # blocks of 8 queries
    search = gallery.PersonSearch(embeddings, labels, [f"p{i}" for i in range(40)], rule)
    people, distances = search.nearest(queries)
    present = sorted(set(labels.tolist()))
    for query, person, distance in zip(queries.astype(np.float64), people, distances):
        scores = {}
        for p in present:
            own = embeddings[labels == p].astype(np.float64)
            if rule == "best":
                scores[p] = np.linalg.norm(own - query, axis=1).min()
            else:
                scores[p] = np.sqrt(2 - 2 * (own @ query).mean())
        expected = min(scores, key=scores.get)
        assert person == expected
        assert distance == pytest.approx(scores[expected], abs=1e-5)


def test_several_faces_in_one_photo_and_unknown_rejection(model, tmp_path):
    root = make_known(tmp_path, per_person=1)
    built, _ = gallery.update(model, root, str(tmp_path / "g.npz"), progress=False)
    tiles = group_photo(str(tmp_path / "group.jpg"),
                        [face_files("celeba_7201")[0], STRANGER, face_files("celeba_7203")[0]])
    image = Image.open(tmp_path / "group.jpg").convert("RGB")
    model.threshold = 0.6
    matches = identify_faces(model, built.search(), image)
    assert [m.name for m in matches] == ["celeba_7201", UNKNOWN, "celeba_7203"], matches
    for match, (x1, y1, x2, y2) in zip(matches, tiles):
        left, top, right, bottom = match.box
        assert x1 <= left < right <= x2 and y1 <= top < bottom <= y2
    assert matches[0].distance < 0.4 and matches[2].distance < 0.4 and matches[1].distance > 0.6
    assert matches[1].nearest in PEOPLE
    model.threshold = 0.01
    assert [m.name for m in identify_faces(model, built.search(), image)] == [UNKNOWN] * 3
    assert identify_faces(model, built.search(), Image.open(NO_FACE).convert("RGB")) == []
