"""predict.py's video, fps and dir_predict modes (utils/video.py) on videos made here from committed faces."""
import csv
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, ROOT
from utils.config import UserError
from utils.video import check_video_output, draw, run_dir, run_fps, run_video

FACES = os.path.join(FIXTURES, "faces")
SIZE = (640, 480)
SIDE = 200  # pixels of a face crop in a frame
# Two known people (their other images make the gallery) and a stranger; each walks left to right.
SHOWN = [os.path.join(FACES, "celeba_7201", "018834.jpg"), os.path.join(ROOT, "img", "1_002.jpg"),
         os.path.join(FACES, "celeba_7205", "020711.jpg")]
NAMES = ["celeba_7201", "1", "unknown"]


@dataclass
class FakeMatch:
    box: tuple
    name: str
    distance: float


def face_position(frame: int, frames_each: int, width: int, side: int) -> tuple[int, int]:
    """Top-left corner of the face on ``frame`` of its stretch: left to right along a low arc."""
    t = frame / max(frames_each - 1, 1)
    return int(20 + t * (width - side - 60)), int(0.12 * width + 0.12 * width * np.sin(np.pi * t))


def make_video(path: str, faces: list[str], frames_each: int = 20, size: tuple[int, int] = SIZE,
               side: int = SIDE, fps: float = 20.0) -> None:
    """A video with each face of ``faces`` shown for ``frames_each`` frames, moving, on a gradient."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([60 + 80 * xs / width, 90 + 0 * xs, 60 + 80 * ys / height], -1).astype(np.uint8)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for face_path in faces:
        face = np.asarray(Image.open(face_path).convert("RGB").resize((side, side), Image.BICUBIC))[:, :, ::-1]
        for frame in range(frames_each):
            image = background.copy()
            x, y = face_position(frame, frames_each, width, side)
            image[y:y + side, x:x + side] = face
            writer.write(image)
    writer.release()


def frames_of(path: str) -> tuple[int, tuple[int, int]]:
    """How many frames ``path`` decodes to and their (width, height)."""
    capture = cv2.VideoCapture(path)
    assert capture.isOpened(), path
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, (frame.shape[1], frame.shape[0])
    capture.release()
    return count, size


def fake_recogniser(calls: list, faces_each: int = 20, side: int = 40, width: int = 160):
    """A recogniser that knows where make_video put the face and names it by stretch; counts its calls."""
    def recognise(image):
        calls.append(image.size)
        frame = len(calls) - 1
        return [FakeMatch((10, 10, 10 + side, 10 + side), NAMES[min(frame // faces_each, 2)], 0.5)]
    return recognise


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("video") / "small.avi")
    make_video(path, SHOWN, frames_each=4, size=(160, 120), side=48)
    return path


def test_output_has_every_frame_at_the_source_size_and_a_csv_row_per_face(small_video, tmp_path):
    calls = []
    out, table = str(tmp_path / "out.mp4"), str(tmp_path / "faces.csv")
    counts = run_video(small_video, fake_recogniser(calls, 4), out, csv_path=table, detect_interval=3, window=False)
    assert counts["frames"] == 12 and len(calls) == 4  # frames 0, 3, 6, 9
    assert frames_of(out) == (12, (160, 120))
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["frame", "time", "track", "left", "top", "right", "bottom", "name", "distance"]
    assert [int(r["frame"]) for r in rows] == list(range(12))
    assert rows[1]["time"] == "0.050"  # 20 frames per second
    assert [r["name"] for r in rows][:4] == ["celeba_7201"] * 4


def test_frames_are_drawn(small_video, tmp_path):
    frame = np.zeros((120, 160, 3), np.uint8)
    draw(frame, [(10, 10, 60, 60)], ["ann 0.40"], ["ann"], fps=12.5)
    assert frame[60, 35].tolist() != [0, 0, 0] and frame[35, 35].tolist() == [0, 0, 0]  # an outline
    assert frame[5:25, 5:60].any()  # the label above the box


def test_video_fps_sets_the_saved_rate(small_video, tmp_path):
    out = str(tmp_path / "out.avi")
    run_video(small_video, lambda image: [], out, video_fps=7.0, window=False)
    assert cv2.VideoCapture(out).get(cv2.CAP_PROP_FPS) == pytest.approx(7.0)


@pytest.mark.parametrize("save_path, message", [("out.mkv", "must end in one of .mp4, .avi"),
                                                ("missing_dir/../out.txt", "must end in")])
def test_unknown_extension_is_refused_before_any_frame_is_read(small_video, tmp_path, save_path, message):
    calls = []
    with pytest.raises(UserError, match=message):
        run_video(small_video, fake_recogniser(calls), str(tmp_path / save_path), window=False)
    assert calls == []


def test_codec_probe_leaves_nothing_behind(tmp_path):
    assert check_video_output("video_save_path", str(tmp_path / "a.mp4"))
    assert os.listdir(tmp_path) == []


def test_bad_sources_are_one_line_errors(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(4096))
    (tmp_path / "empty.avi").write_bytes(b"")
    header_only = str(tmp_path / "no_frames.avi")
    cv2.VideoWriter(header_only, cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48)).release()
    for source, message in [(str(tmp_path / "missing.mp4"), "no such video file"),
                            (str(broken), "not a video OpenCV can read|no frames"),
                            (str(tmp_path / "empty.avi"), "empty"), (header_only, "not a video|no frames"),
                            ("97", "camera 97 does not open")]:
        with pytest.raises(UserError, match=message) as info:
            run_video(source, lambda image: [], window=False)
        assert "\n" not in str(info.value)


def test_a_stream_that_stops_midway_leaves_a_playable_file(small_video, tmp_path):
    cut = tmp_path / "cut.avi"
    data = open(small_video, "rb").read()
    cut.write_bytes(data[:len(data) // 2])
    out = str(tmp_path / "out.mp4")
    counts = run_video(str(cut), lambda image: [], out, window=False)
    assert 0 < counts["frames"] < 12 and frames_of(out)[0] == counts["frames"]


def test_ctrl_c_closes_the_video_and_the_csv(small_video, tmp_path):
    def recognise(image, calls=[]):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return [FakeMatch((5, 5, 40, 40), "ann", 0.3)]
    out, table = str(tmp_path / "out.mp4"), str(tmp_path / "faces.csv")
    with pytest.raises(KeyboardInterrupt):
        run_video(small_video, recognise, out, csv_path=table, window=False)
    assert frames_of(out)[0] == 4
    assert len(open(table).read().splitlines()) == 5
    assert sorted(os.listdir(tmp_path)) == ["faces.csv", "out.mp4"]  # no temporary file left


def test_dir_predict_writes_one_image_per_input(tmp_path):
    origin = tmp_path / "in"
    shutil.copytree(os.path.join(FACES, "celeba_7201"), origin / "sub")
    shutil.copy(os.path.join(ROOT, "img", "1_001.jpg"), origin / "a.jpg")
    (origin / "broken.png").write_bytes(b"not an image")
    recognise = lambda image: [FakeMatch((20, 20, 140, 140), "ann", 0.4)]
    counts = run_dir(str(origin), str(tmp_path / "out"), recognise, progress=False)
    written = sorted(os.path.relpath(p, tmp_path / "out") for p in glob.glob(str(tmp_path / "out" / "**" / "*.*"),
                                                                              recursive=True))
    assert written == ["a.jpg"] + [os.path.join("sub", n) for n in sorted(os.listdir(origin / "sub"))]
    assert counts == {"images": 6, "saved": 5, "faces": 5, "skipped": 1}
    drawn = np.asarray(Image.open(tmp_path / "out" / "a.jpg"))
    assert drawn.shape == (160, 160, 3) and not np.array_equal(drawn, np.asarray(Image.open(origin / "a.jpg")))


def test_fps_prints_both_figures(capsys):
    seconds = run_fps(os.path.join(ROOT, "img", "1_001.jpg"), lambda image: image, lambda faces: np.zeros((1, 128)), 3)
    out = capsys.readouterr().out
    assert "detection + alignment + embedding:" in out and "embedding alone:" in out and out.count("FPS") == 2
    assert all(s > 0 for s in seconds)


def run_predict(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), "--cuda", "False", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A gallery folder of the two known people, without the images the video shows."""
    root = tmp_path_factory.mktemp("known")
    os.makedirs(root / "celeba_7201")
    for path in sorted(glob.glob(os.path.join(FACES, "celeba_7201", "*.jpg"))):
        if path not in SHOWN:
            shutil.copy(path, root / "celeba_7201")
    shutil.copy(os.path.join(ROOT, "img", "1_001.jpg"), root / "1_001.jpg")  # flat: person "1"
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("interval", [1, 3])
def test_video_names_the_known_people_and_not_the_stranger(known, tmp_path, interval):
    source, out, table = str(tmp_path / "in.avi"), str(tmp_path / "out.mp4"), str(tmp_path / "faces.csv")
    make_video(source, SHOWN)
    result = run_predict("--mode", "video", "--video_path", source, "--gallery_dir", known, "--gallery_path",
                         str(tmp_path / "g.npz"), "--video_save_path", out, "--csv_path", table,
                         "--detect_interval", str(interval))
    assert result.returncode == 0, result.stderr
    assert "video: 60 frames" in result.stdout
    assert frames_of(out) == (60, SIZE)
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = {}
    for row in rows:
        names.setdefault(int(row["frame"]), []).append(row["name"])
    for stretch, expected in enumerate(NAMES):
        right = sum(names.get(f) == [expected] for f in range(20 * stretch, 20 * stretch + 20))
        assert right >= 18, (expected, [names.get(f) for f in range(20 * stretch, 20 * stretch + 20)])


@pytest.mark.slow
def test_missing_camera_and_broken_file_exit_2(known, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(4096))
    for source, message in [("97", "camera 97 does not open"), (str(broken), "not a video OpenCV can read")]:
        result = run_predict("--mode", "video", "--video_path", source, "--gallery_dir", known, "--gallery_path",
                             str(tmp_path / "g.npz"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0 and message in result.stderr


@pytest.mark.slow
def test_fps_and_dir_predict_modes(known, tmp_path):
    result = run_predict("--mode", "fps", "--test_interval", "2")
    assert result.returncode == 0, result.stderr
    assert "detection + alignment + embedding:" in result.stdout and "embedding alone:" in result.stdout
    result = run_predict("--mode", "dir_predict", "--dir_origin_path", os.path.join(ROOT, "img"),
                         "--dir_save_path", str(tmp_path / "out"), "--gallery_dir", known,
                         "--gallery_path", str(tmp_path / "g.npz"))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(os.path.join(ROOT, "img")))
