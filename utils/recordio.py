"""MXNet RecordIO files (insightface's ``train.rec`` + ``train.idx``) read and written without MXNet.

A record is the magic word 0xced7230a, a little-endian length word (low 29 bits: byte count; top 3
bits: 0 whole record, 1 first, 2 middle, 3 last part), the bytes, and zero padding to 4 bytes. A
writer splits a payload wherever the magic word sits at a 4-byte boundary inside it (the word itself
is dropped and restored on reading). ``train.idx`` holds ``key<TAB>byte offset`` lines.

Each payload of a face pack starts with the header ``<IfQQ`` (flag, label, id, id2); with flag > 0,
``flag`` float32 labels follow (the header's label is then unused), then the encoded image.
insightface's layout: record 0 has flag 2 and labels [first identity key, end key]; images are keys
1 .. first-1, each labelled with its class; identity keys first .. end-1 each hold the [start, end)
image keys of one person. Files without identity records are labelled from one scan of the headers.

Training from such a file: ``read_records`` gives an ``Annotation`` whose paths are ``<file>#<key>``
(stable names, so a distillation teacher keys them like image files) and ``dataset_for`` the dataset
that decodes the records; every loader process opens the file itself.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.alignment import alignment_record, folder_alignment
from utils.checkpoint import atomic_stream
from utils.config import UserError
from utils.dataloader import Annotation, AnnotationError, FaceDataset
from utils.image import ImageError, decode_rgb, open_rgb

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
HEADER = struct.Struct("<IfQQ")
RECORD_HEAD = struct.Struct("<II")
MAX_PART = (1 << 29) - 1
KEY_SEPARATOR = "#"
# How insightface's packs are aligned: five-point warps at the side of their images (112).
PACK_ALIGNMENT = "warp"


class RecordIOError(UserError, ValueError):
    """A file that is not a usable RecordIO face pack; the message is one line naming it and the fix."""


# ----------------------------------------------------------------------------- records

def encode_record(payload: bytes) -> bytes:
    """The bytes of one record holding ``payload``, split at aligned magic words as MXNet's writer does."""
    view = memoryview(payload)
    aligned = len(payload) // 4 * 4
    words = np.frombuffer(view[:aligned], dtype="<u4")
    cuts = (np.flatnonzero(words == MAGIC) * 4).tolist()
    out, start = [], 0
    for cut in cuts:
        out.append(part(1 if start == 0 else 2, view[start:cut]))
        start = cut + 4
    out.append(part(3 if cuts else 0, view[start:]))
    return b"".join(out)


def part(flag: int, data: memoryview) -> bytes:
    if len(data) > MAX_PART:
        raise RecordIOError(f"a record of {len(data)} bytes is over RecordIO's limit of {MAX_PART} bytes")
    return RECORD_HEAD.pack(MAGIC, flag << 29 | len(data)) + bytes(data) + b"\0" * (-len(data) % 4)


def pack_header(label: float | Iterable[float], key: int, id2: int = 0) -> bytes:
    """The ``IfQQ`` header of a payload: one float label (flag 0) or a list of them (flag = its length)."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return HEADER.pack(0, float(label), key, id2)
    labels = np.asarray(list(label), dtype="<f4")
    return HEADER.pack(len(labels), 0.0, key, id2) + labels.tobytes()


@dataclass
class Header:
    """A payload's header: ``labels`` (the float label, or the ``flag`` labels that follow) and ids."""

    flag: int
    labels: np.ndarray
    id: int
    id2: int
    size: int           # bytes of header and labels: the image starts there


def unpack_header(payload: bytes, where: str) -> Header:
    if len(payload) < HEADER.size:
        raise RecordIOError(f"{where}: a record of {len(payload)} bytes is too short for the IfQQ header; "
                            "is this a face pack written by insightface or txt_annotation.py --rec_path?")
    flag, label, key, id2 = HEADER.unpack_from(payload)
    if flag == 0:
        return Header(0, np.array([label], np.float32), key, id2, HEADER.size)
    size = HEADER.size + 4 * flag
    if len(payload) < size:
        raise RecordIOError(f"{where}: the header announces {flag} labels but the record is {len(payload)} bytes")
    return Header(flag, np.frombuffer(payload, "<f4", flag, HEADER.size).astype(np.float32), key, id2, size)


class RecordFile:
    """Random access to the records of a ``.rec`` file by byte offset (``pread``: no shared file position).

    The file is opened lazily in each process (a loader worker opens its own), never pickled open.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.path.getsize(path)
        self._fd, self._pid = None, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    @property
    def fd(self) -> int:
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0)), os.getpid()
        return self._fd

    def read_at(self, offset: int, limit: int | None = None) -> tuple[bytes, int]:
        """(payload of the record at ``offset``, offset of the next record); ``limit`` stops after that
        many payload bytes of the first part (enough for a header) when the record is longer."""
        parts, position = [], offset
        while True:
            head = os.pread(self.fd, RECORD_HEAD.size, position)
            if len(head) < RECORD_HEAD.size:
                raise RecordIOError(f"{self.path}: cut off at byte {position} (a record was expected); "
                                    "copy the file again")
            magic, word = RECORD_HEAD.unpack(head)
            if magic != MAGIC:
                raise RecordIOError(f"{self.path}: no RecordIO record at byte {position} (magic {magic:#010x}); "
                                    "not a .rec file, or its .idx belongs to another file")
            flag, length = word >> 29, word & MAX_PART
            wanted = length if limit is None else min(length, limit)
            data = os.pread(self.fd, wanted, position + RECORD_HEAD.size)
            if len(data) < wanted:
                raise RecordIOError(f"{self.path}: the record at byte {position} is cut off; copy the file again")
            parts.append(data)
            position += RECORD_HEAD.size + length + (-length % 4)
            if flag in (0, 3) or (limit is not None and sum(map(len, parts)) >= limit):
                return MAGIC_BYTES.join(parts), position

    def offsets(self) -> list[int]:
        """The offset of every record, from one pass over the record heads (for a file without ``.idx``)."""
        found, position = [], 0
        while position < self.size:
            head = os.pread(self.fd, RECORD_HEAD.size, position)
            magic, word = RECORD_HEAD.unpack(head) if len(head) == RECORD_HEAD.size else (None, 0)
            if magic != MAGIC:
                raise RecordIOError(f"{self.path}: no RecordIO record at byte {position}; not a .rec file "
                                    "or a damaged one")
            if word >> 29 in (0, 1):
                found.append(position)
            length = word & MAX_PART
            position += RECORD_HEAD.size + length + (-length % 4)
        return found


def index_path(rec_path: str) -> str:
    return os.path.splitext(rec_path)[0] + ".idx"


def read_index(rec: RecordFile) -> dict[int, int]:
    """key -> offset, from the ``.idx`` beside the file, else keys 0, 1, ... in file order (one scan)."""
    path = index_path(rec.path)
    if not os.path.isfile(path):
        return dict(enumerate(rec.offsets()))
    table = {}
    with open(path, encoding="ascii", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not all(f.isdigit() for f in fields) or int(fields[1]) >= rec.size:
                raise RecordIOError(f"{path}:{number}: expected 'key<TAB>offset' within {rec.path}, got "
                                    f"{line.strip()[:60]!r}; delete the .idx to scan the .rec instead")
            table[int(fields[0])] = int(fields[1])
    return table


# ----------------------------------------------------------------------------- reading a face pack

@dataclass
class RecordAnnotation(Annotation):
    """An ``Annotation`` of the images of a face pack: paths ``<rec>#<key>`` and the record offsets."""

    rec_path: str = ""
    offsets: np.ndarray | None = None


def is_record_file(path: str) -> bool:
    return path.lower().endswith(".rec")


def read_records(rec_path: str, progress: bool = True) -> RecordAnnotation:
    """The images and classes of a face pack, from its identity records or, without them, its headers."""
    if not os.path.isfile(rec_path):
        raise AnnotationError(f"{rec_path}: no such RecordIO file; give the train.rec of a face pack or pack "
                              "a folder with python txt_annotation.py --rec_path train.rec")
    rec = RecordFile(rec_path)
    table = read_index(rec)
    where = rec_path
    first = header_at(rec, table[0], where) if 0 in table else None
    if first is not None and first.flag >= 2 and first.labels[1] > first.labels[0] >= 1:
        keys, labels = identity_labels(rec, table, int(first.labels[0]), int(first.labels[1]), where)
    else:
        keys, labels = scanned_labels(rec, table, progress)
    if not len(keys):
        raise AnnotationError(f"{rec_path}: holds no image records")
    classes, labels = np.unique(labels, return_inverse=True)
    name = os.path.abspath(rec_path)
    return RecordAnnotation(paths=[f"{name}{KEY_SEPARATOR}{k}" for k in keys.tolist()],
                            labels=labels.astype(np.int64), rec_path=rec_path,
                            offsets=np.array([table[k] for k in keys.tolist()], dtype=np.int64))


def header_at(rec: RecordFile, offset: int, where: str) -> Header:
    payload, _ = rec.read_at(offset, limit=HEADER.size + 4 * 64)
    return unpack_header(payload, where)


def identity_labels(rec: RecordFile, table: dict[int, int], first: int, end: int,
                    where: str) -> tuple[np.ndarray, np.ndarray]:
    """Image keys and classes from identity records ``first .. end-1`` (class = identity position)."""
    keys, labels = [], []
    for identity in range(first, end):
        if identity not in table:
            raise RecordIOError(f"{where}: identity record {identity} (of {first}..{end - 1}) is not in "
                                f"{index_path(where)}; the file and its index do not match")
        header = header_at(rec, table[identity], where)
        start, stop = (int(v) for v in header.labels[:2]) if header.flag >= 2 else (0, -1)
        if not 1 <= start <= stop <= first:
            raise RecordIOError(f"{where}: identity record {identity} gives image range [{start}, {stop}) "
                                f"outside 1..{first - 1}; not an insightface-style pack")
        keys.append(np.arange(start, stop))
        labels.append(np.full(stop - start, identity - first))
    keys, labels = np.concatenate(keys), np.concatenate(labels)
    if len(np.unique(keys)) != len(keys):
        raise RecordIOError(f"{where}: identity records give overlapping image ranges")
    absent = [k for k in keys.tolist() if k not in table]
    if absent:
        raise RecordIOError(f"{where}: image record {absent[0]} is not in {index_path(where)}")
    return keys, labels


def scanned_labels(rec: RecordFile, table: dict[int, int], progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Image keys and classes read from every record's header (files without identity records)."""
    keys, labels = [], []
    for key in tqdm(sorted(table), desc="reading labels", unit="rec", disable=not progress or len(table) < 10000,
                    leave=False):
        payload, _ = rec.read_at(table[key], limit=HEADER.size + 4 * 64)
        header = unpack_header(payload, rec.path)
        if key == 0 and len(rec.read_at(table[key])[0]) == header.size:
            continue  # a header record (no image) without identity records
        keys.append(key)
        labels.append(int(header.labels[0]))
    return np.asarray(keys, np.int64), np.asarray(labels, np.int64)


def image_bytes(rec: RecordFile, offset: int) -> bytes:
    """The encoded image of the record at ``offset`` (its header and labels skipped)."""
    payload, _ = rec.read_at(offset)
    return payload[unpack_header(payload, rec.path).size:]


class RecordDataset(FaceDataset):
    """``FaceDataset`` over the records of a face pack (same items, flips, augmentation and seeds)."""

    def __init__(self, annotation: RecordAnnotation, input_shape, letterbox: bool, augment: float = 0.0) -> None:
        super().__init__(annotation, input_shape, letterbox, augment)
        self.rec, self.offsets = RecordFile(annotation.rec_path), annotation.offsets

    def open(self, index: int) -> Image.Image:
        try:
            data = image_bytes(self.rec, int(self.offsets[index]))
        except RecordIOError as err:
            raise ImageError(str(err)) from None
        return decode_rgb(data, self.paths[index])


def read_training_data(path: str) -> Annotation:
    """The training images of ``path``: a face pack ``.rec`` or an annotation file (``cls_train.txt``)."""
    from utils.dataloader import read_annotation
    return read_records(path) if is_record_file(path) else read_annotation(path)


def dataset_for(annotation: Annotation, input_shape, letterbox: bool, augment: float) -> FaceDataset:
    """The dataset that decodes ``annotation``'s images: from records or from image files."""
    kind = RecordDataset if isinstance(annotation, RecordAnnotation) else FaceDataset
    return kind(annotation, input_shape, letterbox, augment)


def training_alignment(annotation: Annotation, setting: str) -> dict | None:
    """The alignment of the training faces to record beside the weights. ``setting`` auto: five-point
    warps at the images' side for a face pack (insightface's kind), align_dataset.py's record for a
    folder it aligned, else nothing; crop | warp: that mode at the first image's side; none: nothing."""
    if setting == "none":
        return None
    if setting == "auto" and not isinstance(annotation, RecordAnnotation):
        found = folder_alignment(os.path.dirname(os.path.dirname(annotation.paths[0])))
        return alignment_record(found.mode, found.size, found.margin) if found else None
    if isinstance(annotation, RecordAnnotation):
        first = decode_rgb(image_bytes(RecordFile(annotation.rec_path), int(annotation.offsets[0])),
                           annotation.paths[0])
    else:
        first = open_rgb(annotation.paths[0])
    return alignment_record(PACK_ALIGNMENT if setting == "auto" else setting, first.size[0])


# ----------------------------------------------------------------------------- writing a face pack

def write_pack(rec_path: str, labels: np.ndarray, images: Iterable[bytes], progress: bool = True) -> dict:
    """Write ``rec_path`` and its ``.idx`` in insightface's layout: images (encoded bytes, grouped by
    class: ``labels`` sorted, 0..C-1) as keys 1..N, then one identity record per class.

    Returns the counts written. Both files appear only when complete.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if not n or np.any(np.diff(labels) < 0) or labels[0] != 0 or np.any(np.diff(labels) > 1):
        raise ValueError("labels must be sorted and number the classes 0..C-1 without gaps")
    classes = int(labels[-1]) + 1
    starts = np.searchsorted(labels, np.arange(classes + 1)) + 1
    first = n + 1
    lines = []
    with atomic_stream(rec_path) as out, atomic_stream(index_path(rec_path)) as idx:
        def put(key: int, payload: bytes) -> None:
            lines.append(f"{key}\t{out.tell()}\n")
            out.write(encode_record(payload))

        put(0, pack_header([first, first + classes], 0))
        count = 0
        for key, (label, data) in enumerate(tqdm(zip(labels.tolist(), images), total=n, desc="packing",
                                                 unit="img", disable=not progress, leave=False), 1):
            put(key, pack_header(label, key) + data)
            count += 1
        if count != n:
            raise ValueError(f"{count} images for {n} labels")
        for c in range(classes):
            put(first + c, pack_header([starts[c], starts[c + 1]], first + c))
        idx.write("".join(lines).encode("ascii"))
    return {"images": n, "classes": classes, "bytes": os.path.getsize(rec_path)}


def pack_annotation(annotation: Annotation, rec_path: str, progress: bool = True) -> dict:
    """Pack the image files of ``annotation`` (their bytes as they are, no re-encoding) into a face pack."""
    order = np.argsort(annotation.labels, kind="stable")
    classes, labels = np.unique(annotation.labels[order], return_inverse=True)

    def files() -> Iterator[bytes]:
        for i in order.tolist():
            with open(annotation.paths[i], "rb") as handle:
                yield handle.read()

    try:
        return write_pack(rec_path, labels, files(), progress)
    except FileNotFoundError as err:
        raise AnnotationError(f"{err.filename}: listed but missing; run txt_annotation.py again") from None
