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
from utils.config import UserError
from utils.image import ImageError
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


@pytest.fixture(scope="module")
def embedder(model):
    return gallery.ModelEmbedder(model)


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
    with pytest.raises(UserError, match="differ only in case or spaces") as info:
        gallery.scan(str(tmp_path))
    assert "\n" not in str(info.value)


def test_build_update_and_load(model, embedder, tmp_path, monkeypatch):
    root = make_known(tmp_path)
    shutil.copy(NO_FACE, os.path.join(root, "nobody_1.jpg"))
    with open(os.path.join(root, "broken_1.jpg"), "w") as handle:
        handle.write("not a picture")
    path = str(tmp_path / "gallery.npz")
    built, report = gallery.update(embedder, root, path, batch_size=4, progress=False)
    assert (report.added, report.kept, report.saved) == (8, 0, True)
    assert report.skipped == {"broken_1.jpg": "not an image file PIL can read", "nobody_1.jpg": "no face found"}
    assert built.people == list(PEOPLE) and len(built.paths) == 6
    np.testing.assert_allclose(np.linalg.norm(built.embeddings, axis=1), 1, atol=1e-5)
    loaded = gallery.load(path, embedder.fingerprint)
    assert loaded.paths == built.paths and loaded.names == built.names and loaded.skipped == built.skipped
    np.testing.assert_array_equal(loaded.embeddings, built.embeddings)

    calls = []
    face = embedder.face
    monkeypatch.setattr(embedder, "face", lambda p: calls.append(os.path.relpath(p, root)) or face(p))
    again, report = gallery.update(embedder, root, path, progress=False)
    assert calls == [] and not report.saved and report.kept == 6 and len(report.skipped) == 2
    np.testing.assert_array_equal(again.embeddings, built.embeddings)

    new = os.path.join("celeba_7201", os.path.basename(face_files("celeba_7201")[2]))
    shutil.copy(face_files("celeba_7201")[2], os.path.join(root, new))
    changed = os.path.join("celeba_7202", os.path.basename(face_files("celeba_7202")[0]))
    shutil.copy(face_files("celeba_7206")[0], os.path.join(root, changed))
    removed = os.path.join("celeba_7203", os.path.basename(face_files("celeba_7203")[1]))
    os.remove(os.path.join(root, removed))
    updated, report = gallery.update(embedder, root, path, progress=False)
    assert sorted(calls) == sorted([new, changed])
    assert (report.added, report.changed, report.removed, report.kept, report.saved) == (1, 1, 1, 4, True)
    assert removed not in updated.paths and new in updated.paths and len(updated.paths) == 6
    before = dict(zip(built.paths, built.embeddings))
    after = dict(zip(updated.paths, updated.embeddings))
    for p in set(before) & set(after) - {changed}:
        np.testing.assert_array_equal(after[p], before[p])
    np.testing.assert_allclose(after[changed], model.embed([model.face(face_files("celeba_7206")[0])])[0],
                               atol=1e-5)


def test_empty_gallery_is_an_error(embedder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty gallery: no images"):
        gallery.update(embedder, str(tmp_path / "empty"), str(tmp_path / "g.npz"), progress=False)
    (tmp_path / "faceless").mkdir()
    shutil.copy(NO_FACE, tmp_path / "faceless" / "x_1.jpg")
    with pytest.raises(UserError, match="empty gallery: no usable face in its 1 image"):
        gallery.update(embedder, str(tmp_path / "faceless"), str(tmp_path / "g.npz"), progress=False)
    assert not (tmp_path / "g.npz").exists()


def test_gallery_of_other_weights_or_settings_is_refused(embedder, tmp_path):
    root = make_known(tmp_path, per_person=1)
    path = str(tmp_path / "g.npz")
    gallery.update(embedder, root, path, progress=False)
    other = Facenet(model_path=make_weights(tmp_path), cuda=False, align=True)
    refused = r"built with other weights \(sha256 [0-9a-f]{12}\.\.\. vs "
    with pytest.raises(UserError, match=refused) as info:
        gallery.update(gallery.ModelEmbedder(other), root, path, progress=False)
    assert "\n" not in str(info.value) and path in str(info.value)
    smaller = Facenet(model_path=SHIPPED, cuda=False, align=True, input_shape=[96, 96, 3])
    with pytest.raises(UserError, match="built with other settings .*input_shape"):
        gallery.update(gallery.ModelEmbedder(smaller), root, path, progress=False)
    with open(path, "wb") as handle:
        handle.write(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a readable gallery file"):
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


def test_several_faces_in_one_photo_and_unknown_rejection(model, embedder, tmp_path):
    root = make_known(tmp_path, per_person=1)
    built, _ = gallery.update(embedder, root, str(tmp_path / "g.npz"), progress=False)
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


class BytesEmbedder:
    """A stand-in model: a photo's "face" is its bytes and its embedding a unit vector drawn from them, so
    the gallery's bookkeeping is tested without a network. Files starting with b"bad" have no face."""

    fingerprint = {"weights_sha256": "f" * 64, "embedding_size": 8}

    def __init__(self) -> None:
        self.embedded: list[bytes] = []

    def face(self, path: str) -> tuple[bytes, int]:
        with open(path, "rb") as handle:
            data = handle.read()
        if data.startswith(b"bad"):
            raise ImageError(f"{path}: no face found; use another photo")
        return data, 1

    def embed(self, faces) -> np.ndarray:
        self.embedded += faces
        vectors = np.array([np.random.default_rng(list(face)).standard_normal(8) for face in faces], np.float32)
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).reshape(-1, 8)


def test_a_photo_replaced_by_one_of_the_same_size_and_date_is_embedded_again(tmp_path):
    root = tmp_path / "known"
    for name, data in (("ada/1.jpg", b"photo one"), ("bob/1.jpg", b"photo two"), ("cy_1.jpg", b"bad photo")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    path = str(tmp_path / "g.npz")
    embedder = BytesEmbedder()
    built, _ = gallery.update(embedder, str(root), path, progress=False)
    stat = os.stat(root / "ada/1.jpg")
    (root / "ada/1.jpg").write_bytes(b"photo 111")  # same size, and the same modification time below
    os.utime(root / "ada/1.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    embedder.embedded.clear()
    updated, report = gallery.update(embedder, str(root), path, progress=False)
    assert embedder.embedded == [b"photo 111"] and (report.changed, report.kept, report.saved) == (1, 1, True)
    assert not np.allclose(updated.embeddings[0], built.embeddings[0])
    np.testing.assert_array_equal(updated.embeddings[1], built.embeddings[1])
    # A photo moved to another person keeps its embedding: its bytes are the key, not its path.
    os.rename(root / "bob", root / "cyd")
    embedder.embedded.clear()
    moved, report = gallery.update(embedder, str(root), path, progress=False)
    assert embedder.embedded == [] and moved.names == ["ada", "cyd"] and report.saved
    assert report.skipped == {"cy_1.jpg": "no face found"}
    np.testing.assert_array_equal(moved.embeddings[1], built.embeddings[1])


def damaged(arrays: dict, case: str, directory) -> str:
    """A gallery file of ``arrays`` damaged as ``case`` says, or a file of another kind."""
    path = str(directory / "damaged.npz")
    if case == "npy_renamed":
        np.save(directory / "a.npy", arrays["embeddings"])
        os.replace(directory / "a.npy", path)
        return path
    if case == "teacher_file":
        arrays = {"keys": np.array(["a/1.jpg"]), "embeddings": np.zeros((1, 2, 8), np.float32),
                  "missing": np.array([], dtype=str)}
    elif case == "lengths_differ":
        arrays = {**arrays, "names": arrays["names"][:1]}
    elif case == "other_dimension":
        arrays = {**arrays, "embeddings": np.full((len(arrays["paths"]), 4), 0.5, np.float32)}
    elif case == "nan_embeddings":
        arrays = {**arrays, "embeddings": np.where(np.arange(8) == 0, np.nan, arrays["embeddings"]).astype(np.float32)}
    elif case == "not_unit":
        arrays = {**arrays, "embeddings": 2 * arrays["embeddings"]}
    elif case == "older_format":
        arrays = {**arrays, "format_version": np.array(1)}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, words", [
    ("npy_renamed", "a single numpy array (.npy), not a gallery file; delete it"),
    ("teacher_file", "a teacher embeddings file (recipes/teacher_embeddings.py), not a gallery; set --gallery_path"),
    ("lengths_differ", "arrays of different lengths (embeddings 2, names 1"),
    ("other_dimension", "embeddings of 4 values where its weights give 8"),
    ("nan_embeddings", "NaN or infinite embeddings"),
    ("not_unit", "not unit vectors"),
    ("older_format", "a gallery of format 1, this version reads 2; delete it"),
])
def test_damaged_or_foreign_gallery_files_are_refused_with_one_line(tmp_path, case, words):
    root = tmp_path / "known"
    for name in ("ada/1.jpg", "bob/1.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    good = str(tmp_path / "g.npz")
    gallery.update(BytesEmbedder(), str(root), good, progress=False)
    with np.load(good) as data:
        path = damaged(dict(data), case, tmp_path)
    embedder = BytesEmbedder()
    with pytest.raises(UserError) as info:
        gallery.update(embedder, str(root), path, progress=False)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message
    assert embedder.embedded == [] and ("teacher" in case or message.endswith("delete it to build the gallery again"))


def test_a_photo_of_several_people_is_reported_and_its_main_face_enrolled(model, embedder, tmp_path):
    root = make_known(tmp_path, per_person=1)
    group = os.path.join(root, "celeba_7202", "group.jpg")
    group_photo(group, [STRANGER, face_files("celeba_7202")[1]])
    built, report = gallery.update(embedder, root, str(tmp_path / "g.npz"), progress=False)
    assert report.crowded == {os.path.join("celeba_7202", "group.jpg"): 2}
    enrolled = built.embeddings[built.paths.index(os.path.join("celeba_7202", "group.jpg"))]
    alone = embedder.embed([embedder.face(face_files("celeba_7202")[1])[0]])[0]
    assert np.linalg.norm(enrolled - alone) < 0.4  # the main face, not the stranger beside it
    again, report = gallery.update(embedder, root, str(tmp_path / "g.npz"), progress=False)
    assert report.crowded == {os.path.join("celeba_7202", "group.jpg"): 2} and not report.saved
