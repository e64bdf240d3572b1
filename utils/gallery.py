"""A gallery of known people for 1:N identification: build, incremental update, storage and exact search.

The gallery folder holds one folder per person (``<person>/<image>``, as for training) and/or flat
files named ``<name>_<n>.jpg``. An ``Embedder`` (``ModelEmbedder`` wraps ``facenet.Facenet``) gives
each photo's main face and embeds the faces in batches; the embeddings are stored in one ``.npz``
with the sha256 of each file's bytes, so that an update re-embeds only new or changed contents (a
photo replaced by another of the same size and date is changed). The file also stores the embedder's
fingerprint (weights, input size, alignment): embeddings of other weights live in another space, and
mixing them would silently give wrong names.

Search is exact: one matrix product of the L2-normalised queries with every gallery embedding.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from utils.alignment import Alignment
from utils.checkpoint import file_sha256, write_bytes_atomic
from utils.config import UserError
from utils.image import ImageError, list_images, open_rgb

FORMAT_VERSION = 2
# "best": a person's distance is that of their closest gallery image; "mean": the distance that
# corresponds to the mean cosine similarity over their images. On LFW sets 8-10 with 2, 3 or 5 gallery
# images per person "mean" identified more people, closed and open set (README), so it is the default.
RULES = ("best", "mean")
DEFAULT_RULE = "mean"
# Queries x gallery similarities computed at once; bounds the search's memory to about 128 MiB.
SEARCH_BLOCK = 1 << 25
# Stored embeddings are unit vectors; a norm farther from 1 than this means the file was damaged.
NORM_TOLERANCE = 1e-3
REBUILD = "delete it to build the gallery again"



def similarity_to_distance(similarity: np.ndarray) -> np.ndarray:
    """Euclidean distance of unit vectors from their cosine similarity: |a - b|^2 = 2 - 2 a.b."""
    return np.sqrt(np.clip(2.0 - 2.0 * similarity, 0.0, 4.0))


class PersonSearch:
    """Exact nearest person of each query among gallery embeddings grouped by person.

    ``embeddings`` (N, D) are L2-normalised; ``labels`` (N,) index ``people``. With ``best`` the
    nearest person owns the nearest embedding, so one (Q, N) product and an argmax give it; with
    ``mean`` the mean of a person's dot products is the dot product with their mean embedding, so
    the product is with the (P, D) mean embeddings.
    """

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray, people: list[str],
                 rule: str = DEFAULT_RULE) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
        if len(embeddings) == 0:
            raise UserError("empty gallery: no face to compare with")
        self.people = list(people)
        self.rule = rule
        self.labels = np.asarray(labels, dtype=np.int64)
        self.matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        if rule == "mean":
            if np.any(self.labels[1:] < self.labels[:-1]):  # a gallery comes sorted: no copy then
                order = np.argsort(self.labels, kind="stable")
                self.matrix, self.labels = self.matrix[order], self.labels[order]
            starts = np.flatnonzero(np.r_[True, self.labels[1:] != self.labels[:-1]])
            counts = np.diff(np.r_[starts, len(self.labels)])
            self.matrix = np.add.reduceat(self.matrix, starts, axis=0) / counts[:, None].astype(np.float32)
            self.labels = self.labels[starts]

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(person index (Q,), distance (Q,)) of the nearest person of each query, in blocks."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        people = np.empty(len(queries), dtype=np.int64)
        distances = np.empty(len(queries), dtype=np.float32)
        block = max(1, SEARCH_BLOCK // len(self.matrix))
        for start in range(0, len(queries), block):
            scores = queries[start:start + block] @ self.matrix.T
            best = scores.argmax(1)
            people[start:start + block] = self.labels[best]
            distances[start:start + block] = similarity_to_distance(scores[np.arange(len(best)), best])
        return people, distances


class Embedder(Protocol):
    """What a gallery needs of a model: the main face of a photo, embeddings of faces, and a fingerprint
    (a JSON-able dict) that changes whenever the embeddings would."""

    fingerprint: dict

    def face(self, path: str) -> tuple[Any, int]:
        """The main face of the photo at ``path`` ready for ``embed``, and how many faces the photo shows.
        Raises ImageError when the file cannot be read or shows no face."""

    def embed(self, faces: Sequence[Any]) -> np.ndarray:
        """L2-normalised embeddings (N, D) float32 of faces given by ``face``."""


def fingerprint(weights: str, backbone: str, input_shape: Sequence[int], letterbox_image: bool, flip: bool,
                alignment: Alignment, embedding_size: int) -> dict:
    """What gallery embeddings depend on: the weights' content, the network input, the alignment (every
    field of the weights' ``Alignment``) and the embedding size, as it reads back from JSON."""
    return json.loads(json.dumps({
        "weights_sha256": file_sha256(weights), "backbone": backbone, "input_shape": [int(v) for v in input_shape],
        "letterbox_image": bool(letterbox_image), "flip": bool(flip), "alignment": dataclasses.asdict(alignment),
        "embedding_size": int(embedding_size)}))


class ModelEmbedder:
    """A ``facenet.Facenet`` as a gallery Embedder: the face MTCNN finds as the main one, aligned as the
    weights' JSON says (with ``align=True``; see ``Facenet.choose``), embedded by ``Facenet.embed``."""

    def __init__(self, model: Any) -> None:
        if model.detector is None:
            raise ValueError("a gallery needs a Facenet that aligns photos: align=True")
        self.model = model
        self.fingerprint = fingerprint(model.weights, model.backbone, model.input_shape, model.letterbox_image,
                                       model.flip, model.alignment, model.embedding_size)

    def face(self, path: str) -> tuple[Any, int]:
        rgb = open_rgb(path)
        found = self.model.detector.detect(rgb)
        return self.model.choose(rgb, found, path), len(found.boxes)

    def embed(self, faces: Sequence[Any]) -> np.ndarray:
        return self.model.embed(faces)


@dataclass
class Source:
    """One gallery image file: path relative to the gallery folder, the person, the sha256 of its bytes."""

    path: str
    name: str
    sha256: str


@dataclass
class Gallery:
    """Embeddings of known faces, one row per gallery image, with what is needed to update them."""

    root: str
    fingerprint: dict
    paths: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)  # sha256 of each file's bytes
    faces: list[int] = field(default_factory=list)  # faces found in each photo; the main one is enrolled
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> sha256, reason

    @property
    def people(self) -> list[str]:
        """The distinct names, sorted: the index space of ``search``'s answers."""
        return sorted(set(self.names))

    def search(self, rule: str = DEFAULT_RULE) -> PersonSearch:
        """Exact search over these embeddings, one answer per person."""
        people = self.people
        index = {name: i for i, name in enumerate(people)}
        return PersonSearch(self.embeddings, np.array([index[n] for n in self.names], np.int64), people, rule)


def flat_name(filename: str) -> str:
    """The person of a flat gallery file: ``Ada_Lovelace_2.jpg`` -> ``Ada_Lovelace``; ``Ada.png`` -> ``Ada``."""
    stem = os.path.splitext(filename)[0]
    match = re.fullmatch(r"(.+?)_\d+", stem)
    return match.group(1) if match else stem


def name_key(name: str) -> str:
    """Names that print alike are one name: case and spaces versus underscores do not count."""
    return name.casefold().replace(" ", "_")


def content_hash(path: str) -> str:
    """Hex sha256 of a file's bytes: the key of its embedding. Hashing a photo costs a small share of
    detecting and embedding it, so every update reads every photo rather than trusting its size and date."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def scan(root: str) -> list[Source]:
    """The gallery's image files, sorted: a top-level folder is a person, a top-level file is named by
    ``flat_name``. Hidden names and other files are left out. Raises UserError for duplicate names."""
    if not os.path.isdir(root):
        raise UserError(f"{root}: no such gallery folder; put one folder per known person in it "
                           "(<person>/<image>) or images named <name>_<n>.jpg, or set --gallery_dir")
    found = []
    for path in list_images(root):
        top = path.split(os.sep)[0]
        try:
            digest = content_hash(os.path.join(root, path))
        except OSError as err:
            raise UserError(f"{os.path.join(root, path)}: cannot be read ({err.strerror})") from None
        found.append(Source(path, flat_name(path) if top == path else top, digest))
    spellings: dict[str, dict[str, str]] = {}
    for source in found:
        spellings.setdefault(name_key(source.name), {}).setdefault(source.name, source.path)
    for variants in spellings.values():
        if len(variants) > 1:
            (a, path_a), (b, path_b) = sorted(variants.items())[:2]
            raise UserError(f"{os.path.join(root, path_a)} and {os.path.join(root, path_b)}: two people named "
                               f"{a!r} and {b!r}, which differ only in case or spaces; rename or merge them")
    return found


def save(gallery: Gallery, path: str) -> None:
    """Write the gallery as one .npz (no pickled objects), atomically."""
    skipped = sorted(gallery.skipped.items())
    arrays = {
        "format_version": np.array(FORMAT_VERSION),
        "fingerprint": np.array(json.dumps(gallery.fingerprint, sort_keys=True)),
        "root": np.array(gallery.root),
        "embeddings": np.asarray(gallery.embeddings, np.float32),
        "names": np.array(gallery.names, dtype=str),
        "paths": np.array(gallery.paths, dtype=str),
        "hashes": np.array(gallery.hashes, dtype=str),
        "faces": np.array(gallery.faces, np.int64),
        "skipped_paths": np.array([p for p, _ in skipped], dtype=str),
        "skipped_hashes": np.array([s[0] for _, s in skipped], dtype=str),
        "skipped_reasons": np.array([s[1] for _, s in skipped], dtype=str),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of the gallery file at ``path``; UserError saying what the file is when it is none."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise UserError(f"{path}: not a readable gallery file; {REBUILD}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: a single numpy array (.npy), not a gallery file; {REBUILD}")
    with data:
        names = set(data.files)
        if {"keys", "embeddings"} <= names and "paths" not in names:
            raise UserError(f"{path}: a teacher embeddings file (recipes/teacher_embeddings.py), not a gallery; "
                               "set --gallery_path to another file, e.g. model_data/gallery.npz")
        try:
            arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            raise UserError(f"{path}: not a readable gallery file; {REBUILD}") from None
    try:
        version = int(arrays["format_version"]) if "format_version" in arrays else None
    except (TypeError, ValueError):
        version = None
    if version != FORMAT_VERSION:
        raise UserError(f"{path}: " + (f"a gallery of format {version}, this version reads {FORMAT_VERSION}"
                                          if version else "not a gallery file") + f"; {REBUILD}")
    return arrays


def from_arrays(arrays: dict[str, np.ndarray]) -> Gallery:
    """The Gallery the arrays of a gallery file hold, checked; ValueError saying what does not fit."""
    missing = [k for k in ("fingerprint", "root", "embeddings", "names", "paths", "hashes", "faces", "skipped_paths",
                           "skipped_hashes", "skipped_reasons") if k not in arrays]
    if missing:
        raise ValueError(f"no {missing[0]!r} array")
    found = json.loads(str(arrays["fingerprint"]))
    embeddings = arrays["embeddings"]
    if not isinstance(found, dict) or embeddings.ndim != 2 or embeddings.dtype.kind != "f":
        raise ValueError("damaged fingerprint or embeddings")
    rows = {k: len(arrays[k]) for k in ("embeddings", "names", "paths", "hashes", "faces")}
    skipped = {k: len(arrays[k]) for k in ("skipped_paths", "skipped_hashes", "skipped_reasons")}
    if len(set(rows.values())) > 1 or len(set(skipped.values())) > 1:
        raise ValueError("arrays of different lengths (" + ", ".join(f"{k} {n}" for k, n in {**rows, **skipped}.items())
                         + ")")
    if embeddings.shape[1] != found.get("embedding_size"):
        raise ValueError(f"embeddings of {embeddings.shape[1]} values where its weights give "
                         f"{found.get('embedding_size')}")
    if not np.isfinite(embeddings).all():
        raise ValueError("NaN or infinite embeddings")
    if len(embeddings) and np.abs(np.linalg.norm(embeddings, axis=1) - 1).max() > NORM_TOLERANCE:
        raise ValueError("embeddings that are not unit vectors")
    return Gallery(root=str(arrays["root"]), fingerprint=found, paths=arrays["paths"].tolist(),
                   names=arrays["names"].tolist(), hashes=arrays["hashes"].tolist(), faces=arrays["faces"].tolist(),
                   embeddings=embeddings.astype(np.float32),
                   skipped={p: (h, r) for p, h, r in zip(arrays["skipped_paths"].tolist(),
                                                         arrays["skipped_hashes"].tolist(),
                                                         arrays["skipped_reasons"].tolist())})


def load(path: str, expected: dict | None = None) -> Gallery:
    """Read a gallery written by ``save``; UserError for a file that is damaged or another kind of file,
    and, with ``expected``, for one of another fingerprint."""
    arrays = read_arrays(path)
    try:
        gallery = from_arrays(arrays)
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: not a usable gallery file ({err}); {REBUILD}") from None
    if expected is not None and gallery.fingerprint != expected:
        differ = [k for k in sorted(set(expected) | set(gallery.fingerprint))
                  if gallery.fingerprint.get(k) != expected.get(k)]
        if "weights_sha256" in differ:
            what = "other weights"
            details = (f"sha256 {str(gallery.fingerprint.get('weights_sha256'))[:12]}... vs "
                       f"{expected['weights_sha256'][:12]}...")
        else:
            what = "other settings"
            details = ", ".join(f"{k} {gallery.fingerprint.get(k)} vs {expected.get(k)}" for k in differ)
        raise UserError(f"{path}: built with {what} ({details}); delete it to rebuild the gallery, "
                           "or set --gallery_path to another file")
    return gallery


@dataclass
class UpdateReport:
    """What ``update`` did: counts of files, the photos skipped (path -> reason), and those that show
    several faces (path -> how many; their main face is enrolled)."""

    kept: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    crowded: dict[str, int] = field(default_factory=dict)
    saved: bool = False
    moved_from: str = ""  # the gallery file was built from this other folder, so it was rebuilt


def reason_of(error: ImageError, path: str) -> str:
    """An ImageError's message without the path it starts with."""
    text = str(error)
    return text[len(path) + 2:] if text.startswith(path + ": ") else text


def previous(gallery_path: str, root: str, expected: dict, report: UpdateReport) -> Gallery:
    """The stored gallery to update: the file's, or an empty one when there is none or it was built from
    another folder (noted in ``report``)."""
    if not os.path.exists(gallery_path):
        return Gallery(root, expected)
    old = load(gallery_path, expected)
    if old.root != root:
        report.moved_from, old = old.root, Gallery(root, expected)
    return old


def count_changes(old: Gallery, sources: list[Source], report: UpdateReport) -> None:
    """Fill the file counts of ``report``: kept (same path and content, enrolled), changed, added, removed."""
    enrolled = dict(zip(old.paths, old.hashes))
    before = {**enrolled, **{p: h for p, (h, _) in old.skipped.items()}}
    present = {s.path for s in sources}
    for source in sources:
        if source.path not in before:
            report.added += 1
        elif before[source.path] != source.sha256:
            report.changed += 1
        else:
            report.kept += source.path in enrolled
    report.removed = sum(p not in present for p in before)


def embed_new(embedder: Embedder, gallery_dir: str, todo: list[Source], batch_size: int,
              progress: bool) -> tuple[dict[str, tuple[np.ndarray, int]], dict[str, str]]:
    """Embed the contents in ``todo`` ``batch_size`` photos at a time: (sha256 -> (embedding, faces shown),
    sha256 -> why the photo was skipped)."""
    rows: dict[str, tuple[np.ndarray, int]] = {}
    skipped: dict[str, str] = {}
    # disable=None: a progress bar on a terminal only, none in pipes and logs.
    with tqdm(total=len(todo), unit="img", desc="gallery", leave=False,
              disable=None if progress and todo else True) as bar:
        for start in range(0, len(todo), batch_size):
            faces, done = [], []
            for source in todo[start:start + batch_size]:
                path = os.path.join(gallery_dir, source.path)
                try:
                    face, count = embedder.face(path)
                    faces.append(face)
                    done.append((source, count))
                except ImageError as err:  # the hint after ";" is for query photos, not gallery ones
                    skipped[source.sha256] = reason_of(err, path).split("; ")[0]
            for (source, count), embedding in zip(done, embedder.embed(faces)):
                rows[source.sha256] = (embedding, count)
            bar.update(len(todo[start:start + batch_size]))
    return rows, skipped


def assemble(root: str, expected: dict, gallery_dir: str, sources: list[Source],
             rows: dict[str, tuple[np.ndarray, int]], skipped: dict[str, str]) -> Gallery:
    """The gallery of ``sources`` from the embeddings and skip reasons by content; UserError when empty."""
    kept = sorted((s.name, s.path, s) for s in sources if s.sha256 in rows)
    if not kept:
        reasons = {s.path: skipped[s.sha256] for s in sources}
        raise UserError(f"{gallery_dir}: empty gallery: " + (
            f"no usable face in its {len(sources)} image(s) (first: {next(iter(reasons))}: "
            f"{next(iter(reasons.values()))})" if sources else
            "no images; put one folder per known person in it (<person>/<image>) or images named <name>_<n>.jpg"))
    return Gallery(root=root, fingerprint=expected, paths=[s.path for _, _, s in kept],
                   names=[s.name for _, _, s in kept], hashes=[s.sha256 for _, _, s in kept],
                   faces=[rows[s.sha256][1] for _, _, s in kept],
                   embeddings=np.stack([rows[s.sha256][0] for _, _, s in kept]).astype(np.float32),
                   skipped={s.path: (s.sha256, skipped[s.sha256]) for s in sources if s.sha256 not in rows})


def update(embedder: Embedder, gallery_dir: str, gallery_path: str, batch_size: int = 32,
           progress: bool = True) -> tuple[Gallery, UpdateReport]:
    """Bring the gallery file at ``gallery_path`` in line with ``gallery_dir`` and return it.

    A photo whose bytes are stored already (under any path) keeps its embedding or its skip reason; new
    contents are embedded by ``embedder`` ``batch_size`` at a time; files no longer there are dropped.
    Photos without a usable face are skipped and reported. Raises UserError for a folder, file or
    gallery that cannot be used.
    """
    report = UpdateReport()
    sources = scan(gallery_dir)
    root = os.path.realpath(gallery_dir)
    old = previous(gallery_path, root, embedder.fingerprint, report)
    count_changes(old, sources, report)
    rows = {h: (e, n) for h, e, n in zip(old.hashes, old.embeddings, old.faces)}
    skipped = {h: r for h, r in old.skipped.values()}
    todo = list({s.sha256: s for s in sources if s.sha256 not in rows and s.sha256 not in skipped}.values())
    new_rows, new_skipped = embed_new(embedder, gallery_dir, todo, batch_size, progress)
    gallery = assemble(root, embedder.fingerprint, gallery_dir, sources, {**rows, **new_rows},
                       {**skipped, **new_skipped})
    report.skipped = {p: r for p, (_, r) in sorted(gallery.skipped.items())}
    report.crowded = {p: n for p, n in zip(gallery.paths, gallery.faces) if n > 1}
    unchanged = (old.paths, old.names, old.hashes, old.skipped) == (gallery.paths, gallery.names, gallery.hashes,
                                                                   gallery.skipped)
    if not unchanged or report.moved_from or not os.path.exists(gallery_path):
        save(gallery, gallery_path)
        report.saved = True
    return gallery, report
