""".bin validation sets: Python 2 and 3 pickles, numpy-array packs, refused pickles, bad sets, folds."""
import os
import pickle
import struct

import numpy as np
import pytest

from conftest import FIXTURES
from utils.binset import kfold_ids, read_bin, write_bin
from utils.config import UserError

IMAGES = os.path.join(FIXTURES, "lfw", "images")


@pytest.fixture(scope="module")
def jpegs():
    """Six encoded images (three pairs) from the LFW fixture, and their issame flags."""
    names = ["Aaron_Sorkin/Aaron_Sorkin_0001.jpg", "Aaron_Sorkin/Aaron_Sorkin_0002.jpg",
             "Abdullah/Abdullah_0001.jpg", "Teresa_Heinz_Kerry/Teresa_Heinz_Kerry_0001.jpg",
             "Abdullah/Abdullah_0002.jpg", "Abdullah/Abdullah_0003.jpg"]
    return [open(os.path.join(IMAGES, n), "rb").read() for n in names], [True, False, True]


def python2_pickle(images: list[bytes], issame: list[bool]) -> bytes:
    """The opcodes Python 2's cPickle.dump((images, issame), f, protocol=2) writes: str as BINSTRING."""
    out = [b"\x80\x02", b"]q\x00(" if images else b"]q\x00"]
    for data in images:
        out.append((b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data)
    out.append(b"e]q\x01(" + b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86q\x02.")
    return b"".join(out)


def test_python2_and_python3_pickles_load_the_same_pairs(tmp_path, jpegs):
    images, issame = jpegs
    (tmp_path / "py2.bin").write_bytes(python2_pickle(images, issame))
    write_bin(str(tmp_path / "py3.bin"), images, issame)
    for protocol in (2, 5):
        (tmp_path / f"p{protocol}.bin").write_bytes(pickle.dumps((images, issame), protocol=protocol))
    # packs made with cv2.imencode hold uint8 arrays of the bytes
    arrays = [np.frombuffer(i, np.uint8) for i in images]
    for protocol in (2, 4, 5):
        (tmp_path / f"a{protocol}.bin").write_bytes(pickle.dumps((arrays, issame), protocol=protocol))
    assert pickle.loads(python2_pickle(images, issame), encoding="bytes") == (images, issame)  # a valid pickle
    for name in ("py2", "py3", "p2", "p5", "a2", "a4", "a5"):
        got, flags = read_bin(str(tmp_path / f"{name}.bin"))
        assert got == images and flags.tolist() == issame, name


@pytest.mark.parametrize("payload", [
    b"cos\nsystem\n(S'touch {marker}'\ntR.",
    b"cbuiltins\neval\n(S'open(\"{marker}\", \"w\")'\ntR.",
    b"\x80\x02(]q\x00cposix\nsystem\nq\x01(X\x0e\x00\x00\x00touch {marker}tRa]\x86.",
])
def test_a_pickle_naming_a_callable_is_refused_without_running_it(tmp_path, payload):
    marker = tmp_path / "ran"
    evil = payload.replace(b"{marker}", str(marker).encode())
    path = tmp_path / "evil.bin"
    path.write_bytes(evil)
    with pytest.raises(UserError, match="refused: it names (os|builtins|posix)"):
        read_bin(str(path))
    assert not marker.exists()


def test_other_classes_and_object_arrays_are_refused(tmp_path, jpegs):
    images, issame = jpegs
    for content in (([np.array([b"x"], dtype=object)] * 6, issame), (images, issame, {1: 2}.keys)):
        try:
            data = pickle.dumps(content, protocol=4)
        except (TypeError, pickle.PicklingError):
            continue
        (tmp_path / "x.bin").write_bytes(data)
        with pytest.raises(UserError, match="refused"):
            read_bin(str(tmp_path / "x.bin"))


def test_bad_sets_are_clear_errors(tmp_path, jpegs):
    images, issame = jpegs
    cases = {"count": pickle.dumps((images[:5], issame)), "noimage": pickle.dumps(([b"junk"] * 6, issame)),
             "shape": pickle.dumps({"a": 1}), "cut": pickle.dumps((images, issame))[:200]}
    messages = {"count": "5 images for 3 pairs", "noimage": "image 0 \\(of pair 0\\) does not decode",
                "shape": "not the pair \\(images, issame\\)", "cut": "not a readable .bin"}
    for name, data in cases.items():
        (tmp_path / f"{name}.bin").write_bytes(data)
        with pytest.raises(UserError, match=messages[name]):
            read_bin(str(tmp_path / f"{name}.bin"))
    with pytest.raises(UserError, match="no such .bin"):
        read_bin(str(tmp_path / "absent.bin"))


def test_folds_are_sklearns_unshuffled_kfold():
    from sklearn.model_selection import KFold
    for n in (20, 23, 6000):
        expected = np.zeros(n, dtype=int)
        for k, (_, test) in enumerate(KFold(n_splits=10, shuffle=False).split(np.zeros(n)), 1):
            expected[test] = k
        assert kfold_ids(n).tolist() == expected.tolist()
    with pytest.raises(UserError, match="bin_folds"):
        kfold_ids(5, 10)
