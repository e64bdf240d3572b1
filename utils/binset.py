"""insightface's ``.bin`` validation sets (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin ...).

A ``.bin`` is a pickle of ``(images, issame)``: 2N encoded images (the JPEG/PNG file bytes, or numpy
uint8 arrays of them for packs made with ``cv2.imencode``) where images 2i and 2i+1 form pair i, and
N booleans. insightface wrote them with Python 2 (strings then load as bytes) or Python 3.

A pickle can run any code while it loads, so these files are read by ``SafeUnpickler``: it builds
bytes, str, lists, tuples, booleans and numbers, and numpy arrays of uint8 or bool through checked
stand-ins for numpy's rebuilding functions. Anything else a file names (os.system, builtins.eval, any
class) is refused before it is called, and the load stops with one line.

Folds: insightface scores a ``.bin`` with 10 folds of consecutive pairs (scikit-learn's unshuffled
KFold: with N pairs the first N % 10 folds hold one pair more). LFW's pairs.txt order gives exactly its
10 official sets.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.checkpoint import write_bytes_atomic
from utils.config import UserError

DEFAULT_FOLDS = 10
ARRAY_DTYPES = ("u1", "|u1", "uint8", "b1", "|b1", "bool")



class Refused(pickle.UnpicklingError):
    """The pickle asks for something a .bin never holds (a callable, a class, an object array)."""


def checked_dtype(spec, align=False, copy=False):
    """numpy.dtype for the byte and boolean arrays of a .bin only."""
    spec = spec.decode("latin1") if isinstance(spec, bytes) else spec
    if not isinstance(spec, str) or spec not in ARRAY_DTYPES:
        raise Refused(f"an array of dtype {spec!r} (only uint8 and bool arrays are read)")
    return np.dtype(spec)


def checked_reconstruct(subtype, shape, typecode):
    """numpy's ``_reconstruct`` (pickle protocols 0-4), for plain arrays only: an empty array whose dtype
    and data the pickle then sets (``typecode`` is a placeholder)."""
    if subtype is not np.ndarray:
        raise Refused("an array subclass")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def checked_frombuffer(buffer, dtype, shape, order):
    """numpy's ``_frombuffer`` (pickle protocol 5)."""
    array = np.frombuffer(bytes(buffer), dtype=checked_dtype(dtype.str))
    return array.reshape(shape, order=order if order in ("C", "F") else "C")


def latin1_encode(text, encoding="latin1"):
    """``_codecs.encode``: how Python 3 pickles bytes at protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused("_codecs.encode with anything but latin1 text")
    return text.encode("latin1")


ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): checked_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): checked_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): checked_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): checked_dtype,
    ("_codecs", "encode"): latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that calls nothing but the stand-ins of ``ALLOWED``."""

    def find_class(self, module: str, name: str):
        found = ALLOWED.get((module, name))
        if found is None:
            raise Refused(f"it names {module}.{name}")
        return found


def safe_loads(data: bytes) -> object:
    """Unpickle ``data`` with ``SafeUnpickler``; Python 2 strings come back as latin-1 text."""
    return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


def as_bytes(item: object) -> bytes | None:
    """An encoded image entry as bytes: bytes, a Python 2 string, or a 1-d uint8 array; else None."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("latin1")
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    return None


def read_bin(path: str, check_images: bool = True) -> tuple[list[bytes], np.ndarray]:
    """(2N encoded images, N issame flags) of a ``.bin``; UserError when it is not a usable set.

    ``check_images`` opens every image's header (cheap) so that bytes that are no image are reported
    here, not halfway through scoring.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such .bin file; give a validation set such as lfw.bin or a folder of them")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        content = safe_loads(data)
    except Refused as err:
        raise UserError(f"{path}: refused: {err}; a .bin holds only images and flags, so this file is not "
                       "a validation set (or not a safe one) and nothing in it was run") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError):
        raise UserError(f"{path}: not a readable .bin pickle (truncated or another format); copy it again") from None
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise UserError(f"{path}: holds {type(content).__name__}, not the pair (images, issame) of a .bin")
    raw_images, raw_flags = content
    images = [as_bytes(item) for item in (raw_images if isinstance(raw_images, (list, tuple)) else [None])]
    if None in images:
        raise UserError(f"{path}: image entry {images.index(None)} is not encoded image bytes")
    flags = np.asarray(list(raw_flags) if isinstance(raw_flags, (list, tuple)) else raw_flags)
    if flags.ndim != 1 or not all(isinstance(f, (bool, np.bool_)) or f in (0, 1) for f in flags.tolist()):
        raise UserError(f"{path}: issame must be a list of booleans")
    if len(images) != 2 * len(flags) or not len(flags):
        raise UserError(f"{path}: {len(images)} images for {len(flags)} pairs; a .bin holds two images per pair")
    if check_images:
        for i, image in enumerate(images):
            try:
                Image.open(io.BytesIO(image)).size
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
                raise UserError(f"{path}: image {i} (of pair {i // 2}) does not decode as an image") from None
    return images, flags.astype(bool)


def write_bin(path: str, images: list[bytes], issame, protocol: int = 4) -> None:
    """Write a ``.bin`` as insightface does (a pickle of (images, issame)), atomically."""
    issame = [bool(v) for v in issame]
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs")
    write_bytes_atomic(path, pickle.dumps(([bytes(i) for i in images], issame), protocol=protocol))


def write_pairs_bin(path: str, pairs) -> int:
    """Write the pairs of a ``utils.lfw.LFWPairs`` of image files as a ``.bin`` (their bytes as they are,
    in the pairs' order: LFW's pairs.txt order gives its official sets as the 10 folds); returns the pairs."""
    files = []
    for name in pairs.paths:
        with open(name, "rb") as handle:
            files.append(handle.read())
    write_bin(path, [files[i] for pair in zip(pairs.left.tolist(), pairs.right.tolist()) for i in pair], pairs.issame)
    return len(pairs.issame)


def kfold_ids(num_pairs: int, folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """Fold 1..folds of each pair: consecutive blocks, the first num_pairs % folds one pair longer."""
    if not 2 <= folds <= num_pairs:
        raise UserError(f"--bin_folds must be from 2 to the number of pairs ({num_pairs}), not {folds}")
    sizes = np.full(folds, num_pairs // folds)
    sizes[: num_pairs % folds] += 1
    return np.repeat(np.arange(1, folds + 1), sizes)
