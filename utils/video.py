"""The video, fps and dir_predict modes of predict.py: faces named in a video, a camera or a folder.

Video I/O is OpenCV's (``cv2.VideoCapture`` / ``cv2.VideoWriter``, its headless build: FFmpeg inside,
so mp4v in .mp4 and MJPG in .avi work on a plain Linux install). Faces are detected and named only every
``detect_interval`` frames and followed in between by utils/tracking.py, whose per-track vote keeps
names steady. This module gets the recogniser as a callable (image -> matches with box, name, distance)
by its caller (predict.py), so it works with any model and gallery.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
import tempfile
import time
from collections import deque
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.checkpoint import atomic_stream, write_bytes_atomic
from utils.config import UserError, check_int, check_number, check_output_file
from utils.image import ImageError, list_images, open_rgb
from utils.tracking import Tracker

# Containers and the codec written into each; both come with OpenCV's own FFmpeg.
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
CSV_COLUMNS = ("frame", "time", "track", "left", "top", "right", "bottom", "name", "distance")
UNKNOWN = "unknown"
# Frame rate of a saved video when neither --video_fps nor the source (a camera, a stream) gives one.
FALLBACK_FPS = 25.0
# The running FPS is the mean over this many recent frames.
FPS_WINDOW = 30
GREEN, RED, WHITE, BLACK = (0, 200, 0), (0, 0, 230), (255, 255, 255), (0, 0, 0)  # BGR

# Our one line says what went wrong: OpenCV's and FFmpeg's own messages would add more.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg is first used



class Match(Protocol):
    """What the recogniser returns per face (utils.identify.FaceMatch is one)."""

    box: tuple[int, int, int, int]
    name: str
    distance: float


Recognise = Callable[[Image.Image], Sequence[Match]]


def check_video_output(name: str, path: str) -> str:
    """A video file this machine can write: a known extension, a writable folder, and a codec that really
    opens (tried on a tiny file beside it), so the problem shows before any frame is read."""
    check_output_file(name, path, tuple(CODECS))
    extension = os.path.splitext(path)[1].lower()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-", suffix=extension)
    os.close(fd)
    try:
        writer = cv2.VideoWriter(probe, cv2.VideoWriter_fourcc(*CODECS[extension]), FALLBACK_FPS, (64, 48))
        opened = writer.isOpened()
        writer.release()
    finally:
        os.remove(probe)
    if not opened:
        raise UserError(f"--{name} {path}: this OpenCV cannot write {CODECS[extension]} video into "
                         f"{extension}; use one of {', '.join(CODECS)} with opencv-python-headless installed")
    return path


def check_video_settings(source: str, save_path: str, video_fps: float, csv_path: str,
                         detect_interval: int) -> None:
    """The video mode's settings, checked before the model loads or any frame is read."""
    text = str(source).strip()
    if not text.isdigit() and "://" not in text and not os.path.isfile(text):
        raise UserError(f"--video_path {text}: no such video file; give a file, a camera index (0) or a stream URL")
    if save_path:
        check_video_output("video_save_path", save_path)
    if csv_path:
        check_output_file("csv_path", csv_path, (".csv",))
    check_number("video_fps", video_fps, 0, 1000)
    check_int("detect_interval", detect_interval, 1)


def open_source(source: str) -> tuple[cv2.VideoCapture, bool]:
    """Open a video file, a camera index ("0") or a stream URL; returns the capture and whether it is a
    file (which has a frame count). A source that does not open is a UserError."""
    text = str(source).strip()
    if text.isdigit():
        capture = cv2.VideoCapture(int(text))
        if not capture.isOpened():
            raise UserError(f"--video_path {text}: camera {text} does not open (none with that index, or in use); "
                             "give another index, a video file or a stream URL")
        return capture, False
    if "://" in text:
        capture = cv2.VideoCapture(text)
        if not capture.isOpened():
            raise UserError(f"--video_path {text}: the stream does not open; check the URL and the network")
        return capture, False
    if not os.path.isfile(text):
        raise UserError(f"--video_path {text}: no such video file; give a file, a camera index (0) or a stream URL")
    if os.path.getsize(text) == 0:
        raise UserError(f"--video_path {text}: the file is empty (0 bytes)")
    capture = cv2.VideoCapture(text)
    if not capture.isOpened():
        raise UserError(f"--video_path {text}: not a video OpenCV can read (damaged, or an unknown format)")
    return capture, True


def label(name: str, distance: float) -> str:
    """The text drawn over a face."""
    return f"{name} {distance:.2f}"


def draw(frame: np.ndarray, boxes: Sequence[Sequence[float]], texts: Sequence[str], names: Sequence[str],
         fps: float | None = None) -> np.ndarray:
    """Draw each box with its text (green for a known person, red for ``unknown``) and the running FPS
    onto the BGR ``frame`` in place; returns it."""
    scale = max(frame.shape[0], 480) / 960
    thickness = max(1, round(2 * scale * 2))
    for box, text, name in zip(boxes, texts, names):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = RED if name == UNKNOWN else GREEN
        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, thickness)
        (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(y1 - height - base - 2, 0)
        cv2.rectangle(frame, (x1, top), (x1 + width + 4, top + height + base + 2), colour, -1)
        cv2.putText(frame, text, (x1 + 2, top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, thickness,
                    cv2.LINE_AA)
    if fps is not None:
        cv2.putText(frame, f"FPS {fps:.1f}", (10, int(40 * scale) + 5), cv2.FONT_HERSHEY_SIMPLEX, scale * 1.2,
                    BLACK, thickness + 2, cv2.LINE_AA)
        cv2.putText(frame, f"FPS {fps:.1f}", (10, int(40 * scale) + 5), cv2.FONT_HERSHEY_SIMPLEX, scale * 1.2,
                    WHITE, thickness, cv2.LINE_AA)
    return frame


def has_display() -> bool:
    """True when a window can be shown: always on Windows and macOS, with an X or Wayland display on Linux."""
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Window:
    """A matplotlib window showing the frames (OpenCV's headless build has none); q or ESC, or closing
    the window, asks to stop."""

    def __init__(self, title: str) -> None:
        import matplotlib.pyplot as plt
        self.plt = plt
        self.figure = plt.figure(title)
        self.axis = self.figure.add_axes((0, 0, 1, 1))
        self.axis.axis("off")
        self.image = None
        self.stopped = False
        self.figure.canvas.mpl_connect("key_press_event", self.key)
        self.figure.canvas.mpl_connect("close_event", lambda _: setattr(self, "stopped", True))
        plt.ion()
        plt.show()

    def key(self, event) -> None:
        if event.key in ("q", "escape"):
            self.stopped = True

    def show(self, frame: np.ndarray) -> None:
        rgb = frame[:, :, ::-1]
        if self.image is None:
            self.image = self.axis.imshow(rgb)
        else:
            self.image.set_data(rgb)
        self.plt.pause(0.001)

    def close(self) -> None:
        self.plt.close(self.figure)


class VideoOutput:
    """The annotated video written under a temporary name beside ``path`` and renamed onto it when closed,
    so ``path`` is always a whole, playable file; opened at the first frame, whose size it takes."""

    def __init__(self, path: str, fps: float) -> None:
        self.path, self.fps = path, fps
        root, extension = os.path.splitext(os.path.abspath(path))
        self.tmp = f"{os.path.dirname(root)}/.tmp-{os.path.basename(root)}{extension}"
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            fourcc = cv2.VideoWriter_fourcc(*CODECS[os.path.splitext(self.path)[1].lower()])
            self.writer = cv2.VideoWriter(self.tmp, fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise UserError(f"--video_save_path {self.path}: cannot write a "
                                f"{frame.shape[1]}x{frame.shape[0]} video")
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)


def source_fps(capture: cv2.VideoCapture) -> float:
    """The source's frame rate, or 0 when it does not say (many cameras and streams)."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if np.isfinite(fps) and 0 < fps <= 1000 else 0.0


def run_video(source: str, recognise: Recognise, save_path: str = "", video_fps: float = 0.0, csv_path: str = "",
              detect_interval: int = 1, window: bool | None = None, progress: bool = True) -> dict:
    """Name the faces of every frame of ``source`` and draw them; write the annotated video to ``save_path``
    and one CSV row per face and frame to ``csv_path`` when given. ``window``: show the frames (None: when
    there is a display). Ctrl-C, q or ESC stop early with both files closed whole; Ctrl-C is then raised
    again. Returns counts: frames, seconds, fps (processing), faces."""
    check_video_settings(source, save_path, video_fps, csv_path, detect_interval)
    capture, is_file = open_source(source)
    try:
        ok, frame = capture.read()
        if not ok:
            raise UserError(f"--video_path {source}: no frames could be read (an empty or damaged video)")
        rate = source_fps(capture)
        out_fps = video_fps or rate or FALLBACK_FPS
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if is_file else 0
        output = VideoOutput(save_path, out_fps) if save_path else None
        shown = Window(str(source)) if (has_display() if window is None else window) else None
        with (atomic_stream(csv_path) if csv_path else contextlib.nullcontext()) as handle:
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="") if handle else None
            rows = csv.writer(text) if text else None
            if rows:
                rows.writerow(CSV_COLUMNS)
            counts = loop(capture, frame, recognise, detect_interval, rate, output, rows, shown,
                          tqdm(total=total or None, unit="frame", desc="video", disable=None if progress else True))
            if text:
                text.flush()
                text.detach()
    finally:
        capture.release()
    if counts["interrupted"]:
        raise KeyboardInterrupt
    return counts


def loop(capture: cv2.VideoCapture, frame: np.ndarray, recognise: Recognise, detect_interval: int, rate: float,
         output: VideoOutput | None, rows, window: Window | None, bar: tqdm) -> dict:
    """The frame loop of ``run_video``, from the first ``frame`` on; closes the output and the window."""
    tracker = Tracker(max_missed=detect_interval)
    recent: deque = deque(maxlen=FPS_WINDOW)
    start = last = time.perf_counter()
    index = faces = 0
    detected_at = 0
    interrupted = False
    try:
        while True:
            height, width = frame.shape[:2]
            if index % detect_interval == 0:
                image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                matches = recognise(image)
                tracker.update(index, np.array([m.box for m in matches], np.float64).reshape(-1, 4),
                               [m.name for m in matches], [m.distance for m in matches])
                detected_at = index
            else:
                tracker.predict(index)
            tracks = [t for t in tracker.tracks if t.last_seen == detected_at]
            boxes = [np.clip(t.box, 0, [width, height, width, height]) for t in tracks]
            faces += len(tracks)
            now = time.perf_counter()
            recent.append(now - last)
            last = now
            fps = len(recent) / sum(recent)
            draw(frame, boxes, [label(t.name, t.distance) for t in tracks], [t.name for t in tracks], fps)
            if rows is not None:
                seconds = index / rate if rate else now - start
                for track, box in zip(tracks, boxes):
                    rows.writerow([index, f"{seconds:.3f}", track.id, *(int(round(v)) for v in box), track.name,
                                   f"{track.distance:.4f}"])
            if output is not None:
                output.write(frame)
            if window is not None:
                window.show(frame)
            bar.update(1)
            index += 1
            if window is not None and window.stopped:
                break
            ok, frame = capture.read()
            if not ok:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if output is not None:
            output.close()
        if window is not None:
            window.close()
    seconds = time.perf_counter() - start
    return {"frames": index, "seconds": seconds, "fps": index / seconds if seconds else 0.0,
            "faces": faces, "interrupted": interrupted}


def time_calls(call: Callable[[], object], repeats: int) -> float:
    """Seconds per call of ``call`` over ``repeats`` calls, after one call to warm up."""
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def run_fps(image_path: str, face_of: Callable[[Image.Image], Image.Image],
            embed: Callable[[list], np.ndarray], test_interval: int) -> tuple[float, float]:
    """The fps mode: seconds per call of detection + alignment + embedding of the main face of
    ``image_path`` (``face_of`` then ``embed``) and of the embedding alone, over ``test_interval`` calls
    each; prints both with their FPS and returns the two times."""
    check_int("test_interval", test_interval, 1)
    image = open_rgb(image_path)
    face = face_of(image)
    full = time_calls(lambda: embed([face_of(image)]), test_interval)
    alone = time_calls(lambda: embed([face]), test_interval)
    print(f"detection + alignment + embedding: {full:.4f} s per call, {1 / full:.2f} FPS ({image_path}, "
          f"{image.width}x{image.height}, {test_interval} calls)")
    print(f"embedding alone: {alone:.4f} s per call, {1 / alone:.2f} FPS")
    return full, alone


def run_dir(origin: str, save_dir: str, recognise: Recognise, progress: bool = True) -> dict[str, int]:
    """The dir_predict mode: every image under ``origin`` with its faces' boxes and names drawn, saved under
    the same relative name in ``save_dir``; unreadable images are reported and skipped. Returns counts."""
    if not os.path.isdir(origin):
        raise ImageError(f"--dir_origin_path {origin}: no such folder of images")
    images = list_images(origin)
    if not images:
        raise ImageError(f"--dir_origin_path {origin}: no image files in it")
    if os.path.realpath(save_dir) == os.path.realpath(origin):
        raise UserError(f"--dir_save_path {save_dir}: is --dir_origin_path; give another folder")
    counts = {"images": len(images), "saved": 0, "faces": 0, "skipped": 0}
    for name in tqdm(images, unit="img", desc="dir_predict", disable=None if progress else True):
        try:
            image = open_rgb(os.path.join(origin, name))
        except ImageError as err:
            print(f"  skipped {err}")
            counts["skipped"] += 1
            continue
        matches = recognise(image)
        frame = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
        draw(frame, [m.box for m in matches], [label(m.name, m.distance) for m in matches],
             [m.name for m in matches])
        buffer = io.BytesIO()
        kind = Image.registered_extensions().get(os.path.splitext(name)[1].lower(), "PNG")
        Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).save(buffer, kind)
        write_bytes_atomic(os.path.join(save_dir, name), buffer.getvalue())
        counts["saved"] += 1
        counts["faces"] += len(matches)
    return counts
