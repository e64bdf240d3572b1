"""A gallery of known people for 1:N identification: build, incremental update, storage and exact search.

The gallery folder holds one folder per person (``<person>/<image>``, as for training) and/or flat
files named ``<name>_<n>.jpg``. Each photo's main face is found and cropped by MTCNN exactly as
``predict.py --align True`` does (``Facenet.face``), embedded in batches, and stored in one ``.npz``
with the file's size and modification time, so that an update re-embeds only new or changed files.
The file also stores a fingerprint of the weights, input size and alignment: embeddings of other
weights live in another space, and mixing them would silently give wrong names.

Search is exact: one matrix product of the L2-normalised queries with every gallery embedding.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from utils.checkpoint import file_sha256, write_bytes_atomic
from utils.config import UserError
from utils.image import ImageError, list_images

FORMAT_VERSION = 1
# "best": a person's distance is that of their closest gallery image; "mean": the distance that
# corresponds to the mean cosine similarity over their images. On LFW sets 8-10 with 2, 3 or 5 gallery
# images per person "mean" identified more people, closed and open set (README), so it is the default.
RULES = ("best", "mean")
DEFAULT_RULE = "mean"
# Queries x gallery similarities computed at once; bounds the search's memory to about 128 MiB.
SEARCH_BLOCK = 1 << 25


class GalleryError(UserError, ValueError):
    """A gallery folder or file that cannot be used; the message is one line naming it and the fix."""


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
            raise GalleryError("empty gallery: no face to compare with")
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


@dataclass
class Source:
    """One gallery image file: path relative to the gallery folder, the person, and its stat."""

    path: str
    name: str
    size: int
    mtime: int


@dataclass
class Gallery:
    """Embeddings of known faces, one row per gallery image, with what is needed to update them."""

    root: str
    fingerprint: dict
    paths: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))
    skipped: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # path -> size, mtime, reason

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


def scan(root: str) -> list[Source]:
    """The gallery's image files, sorted: a top-level folder is a person, a top-level file is named by
    ``flat_name``. Hidden names and other files are left out. Raises GalleryError for duplicate names."""
    if not os.path.isdir(root):
        raise GalleryError(f"{root}: no such gallery folder; put one folder per known person in it "
                           "(<person>/<image>) or images named <name>_<n>.jpg, or set --gallery_dir")
    found = []
    for path in list_images(root):
        top = path.split(os.sep)[0]
        name = flat_name(path) if top == path else top
        try:
            stat = os.stat(os.path.join(root, path))
        except OSError as err:
            raise GalleryError(f"{os.path.join(root, path)}: cannot be read ({err.strerror})") from None
        found.append(Source(path, name, stat.st_size, stat.st_mtime_ns))
    spellings: dict[str, dict[str, str]] = {}
    for source in found:
        spellings.setdefault(name_key(source.name), {}).setdefault(source.name, source.path)
    for variants in spellings.values():
        if len(variants) > 1:
            (a, path_a), (b, path_b) = sorted(variants.items())[:2]
            raise GalleryError(f"{os.path.join(root, path_a)} and {os.path.join(root, path_b)}: two people named "
                               f"{a!r} and {b!r}, which differ only in case or spaces; rename or merge them")
    return found


def fingerprint(model) -> dict:
    """What gallery embeddings depend on: the weights' content, the network input and the alignment."""
    return {"weights_sha256": file_sha256(model.weights), "backbone": model.backbone,
            "input_shape": [int(v) for v in model.input_shape], "letterbox_image": bool(model.letterbox_image),
            "alignment": model.alignment.describe()}


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
        "sizes": np.array(gallery.sizes, np.int64),
        "mtimes": np.array(gallery.mtimes, np.int64),
        "skipped_paths": np.array([p for p, _ in skipped], dtype=str),
        "skipped_sizes": np.array([s[0] for _, s in skipped], np.int64),
        "skipped_mtimes": np.array([s[1] for _, s in skipped], np.int64),
        "skipped_reasons": np.array([s[2] for _, s in skipped], dtype=str),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load(path: str, expected: dict | None = None) -> Gallery:
    """Read a gallery written by ``save``; with ``expected``, refuse one of another fingerprint."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format_version"]) != FORMAT_VERSION:
                raise ValueError("format version")
            gallery = Gallery(
                root=str(data["root"]), fingerprint=json.loads(str(data["fingerprint"])),
                paths=data["paths"].tolist(), names=data["names"].tolist(), sizes=data["sizes"].tolist(),
                mtimes=data["mtimes"].tolist(), embeddings=data["embeddings"].astype(np.float32),
                skipped={p: (s, m, r) for p, s, m, r in zip(data["skipped_paths"].tolist(),
                                                            data["skipped_sizes"].tolist(),
                                                            data["skipped_mtimes"].tolist(),
                                                            data["skipped_reasons"].tolist())})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        raise GalleryError(f"{path}: not a readable gallery file; delete it to build the gallery again") from None
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
        raise GalleryError(f"{path}: built with {what} ({details}); delete it to rebuild the gallery, "
                           "or set --gallery_path to another file")
    return gallery


@dataclass
class UpdateReport:
    """What ``update`` did: counts of files, and the photos skipped (path -> reason)."""

    kept: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    saved: bool = False
    moved_from: str = ""  # the gallery file was built from this other folder, so it was rebuilt


def reason_of(error: ImageError, path: str) -> str:
    """An ImageError's message without the path it starts with."""
    text = str(error)
    return text[len(path) + 2:] if text.startswith(path + ": ") else text


def update(model, gallery_dir: str, gallery_path: str, batch_size: int = 32,
           progress: bool = True) -> tuple[Gallery, UpdateReport]:
    """Bring the gallery file at ``gallery_path`` in line with ``gallery_dir`` and return it.

    ``model`` is a ``facenet.Facenet`` with ``align=True``. Unchanged files (same size and
    modification time) keep their embedding or their skip reason; new and changed files are aligned
    and embedded ``batch_size`` at a time; files no longer there are dropped. Photos without a usable
    face are skipped and reported. Raises GalleryError for a folder, file or gallery that cannot be used.
    """
    expected = fingerprint(model)
    sources = scan(gallery_dir)
    root = os.path.realpath(gallery_dir)
    old = load(gallery_path, expected) if os.path.exists(gallery_path) else Gallery(root, expected)
    report = UpdateReport()
    if old.root != root:
        report.moved_from, old = old.root, Gallery(root, expected)
    stored = {p: (s, m, i) for i, (p, s, m) in enumerate(zip(old.paths, old.sizes, old.mtimes))}
    present = {s.path for s in sources}
    report.removed = sum(1 for p in [*stored, *old.skipped] if p not in present)
    rows: dict[str, np.ndarray] = {}
    skipped: dict[str, tuple[int, int, str]] = {}
    todo = []
    for source in sources:
        if stored.get(source.path, (None, None))[:2] == (source.size, source.mtime):
            rows[source.path] = old.embeddings[stored[source.path][2]]
            report.kept += 1
        elif old.skipped.get(source.path, (None, None))[:2] == (source.size, source.mtime):
            skipped[source.path] = old.skipped[source.path]
        else:
            todo.append(source)
            report.changed += source.path in stored or source.path in old.skipped
    report.added = len(todo) - report.changed
    # disable=None: a progress bar on a terminal only, none in pipes and logs.
    with tqdm(total=len(todo), unit="img", desc="gallery", leave=False,
              disable=None if progress and todo else True) as bar:
        for start in range(0, len(todo), batch_size):
            faces, done = [], []
            for source in todo[start:start + batch_size]:
                path = os.path.join(gallery_dir, source.path)
                try:
                    faces.append(model.face(path))
                    done.append(source)
                except ImageError as err:  # the hint after ";" is for query photos, not gallery ones
                    skipped[source.path] = (source.size, source.mtime, reason_of(err, path).split("; ")[0])
            for source, embedding in zip(done, model.embed(faces)):
                rows[source.path] = embedding
            bar.update(len(todo[start:start + batch_size]))
    report.skipped = {p: r for p, (_, _, r) in sorted(skipped.items())}
    if not rows:
        raise GalleryError(f"{gallery_dir}: empty gallery: " + (
            f"no usable face in its {len(sources)} image(s) (first: {next(iter(report.skipped))}: "
            f"{next(iter(report.skipped.values()))})" if sources else
            "no images; put one folder per known person in it (<person>/<image>) or images named <name>_<n>.jpg"))
    kept = sorted((s.name, s.path, s) for s in sources if s.path in rows)
    gallery = Gallery(root=root, fingerprint=expected, paths=[s.path for _, _, s in kept],
                      names=[s.name for _, _, s in kept], sizes=[s.size for _, _, s in kept],
                      mtimes=[s.mtime for _, _, s in kept],
                      embeddings=np.stack([rows[s.path] for _, _, s in kept]).astype(np.float32),
                      skipped=skipped)
    if todo or report.removed or report.moved_from or not os.path.exists(gallery_path):
        save(gallery, gallery_path)
        report.saved = True
    return gallery, report
