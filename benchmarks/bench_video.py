"""Frames per second of ``predict.py --mode video`` at 640x480, with one face and with four.

    python benchmarks/bench_video.py
    python benchmarks/bench_video.py --threads 1 --frames 150

Makes two clips here from the committed faces (tests/fixtures/faces): one person, and four people side by
side, each face about 150 px and drifting a few pixels a frame so that tracking has work to do. The gallery
is the other photos of the same people. Each clip runs headless through predict.py as a user would, with
detection on every frame and with ``--detect_interval 3``; the FPS printed is predict.py's own (frames read,
detected or followed, named and drawn, divided by the loop's seconds; loading the model is not counted).
"""
#------- settings (edit here or override as --name value) -------
frames = 120                      # frames per clip
intervals = [1, 3]                # --detect_interval values measured
threads = 0                       # OMP_NUM_THREADS of the runs (0: torch's default)
#------------------------------------------------------------------
import os
import re
import shutil
import subprocess
import sys
import tempfile

import cv2
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.config import configure

FACES = os.path.join(REPO, "tests", "fixtures", "faces")
PEOPLE = ["celeba_7201", "celeba_7202", "celeba_7203", "celeba_7204"]
SIZE, SIDE = (640, 480), 150


def make_clip(path: str, shown: list[str], count: int) -> None:
    """``count`` frames of the faces in ``shown`` in a row, each drifting on a sine, on a grey background."""
    width, height = SIZE
    faces = [np.asarray(Image.open(p).convert("RGB").resize((SIDE, SIDE)))[:, :, ::-1] for p in shown]
    step = width // len(faces)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, SIZE)
    for frame in range(count):
        image = np.full((height, width, 3), 110, np.uint8)
        for i, face in enumerate(faces):
            x = min(max(i * step + (step - SIDE) // 2 + int(10 * np.sin(frame / 8 + i)), 0), width - SIDE)
            y = (height - SIDE) // 2 + int(20 * np.cos(frame / 10 + i))
            image[y:y + SIDE, x:x + SIDE] = face
        writer.write(image)
    writer.release()


def make_gallery(folder: str, people: list[str]) -> None:
    """Every photo but the first of each person (the first is the one the clip shows)."""
    for person in people:
        os.makedirs(os.path.join(folder, person))
        for name in sorted(os.listdir(os.path.join(FACES, person)))[1:]:
            shutil.copy(os.path.join(FACES, person, name), os.path.join(folder, person, name))


def measure(clip: str, work: str, interval: int) -> str:
    """predict.py's FPS line for ``clip`` at ``interval``."""
    env = dict(os.environ, MPLBACKEND="Agg", **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    done = subprocess.run([sys.executable, os.path.join(REPO, "predict.py"), "--mode", "video", "--video_path",
                           clip, "--gallery_dir", os.path.join(work, "known"), "--gallery_path",
                           os.path.join(work, "gallery.npz"), "--detect_interval", str(interval)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    found = re.search(r"\(([\d.]+) FPS\)", done.stdout)
    if done.returncode or not found:
        sys.exit(f"predict.py failed on {clip}: {done.stderr.strip()[-300:]}")
    return found.group(1)


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        make_gallery(os.path.join(work, "known"), PEOPLE)
        print(f"640x480, {frames} frames a clip, threads {threads or 'default'}")
        print(f"{'faces':>5}  " + "  ".join(f"{'interval ' + str(i):>11}" for i in intervals) + "  (FPS)")
        for people in (PEOPLE[:1], PEOPLE):
            clip = os.path.join(work, f"clip_{len(people)}.avi")
            make_clip(clip, [os.path.join(FACES, p, sorted(os.listdir(os.path.join(FACES, p)))[0])
                             for p in people], frames)
            print(f"{len(people):>5}  " + "  ".join(f"{measure(clip, work, i):>11}" for i in intervals))


if __name__ == "__main__":
    configure(globals())
    main()
