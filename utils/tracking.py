"""Faces followed from frame to frame, so that video recognition can skip frames and names do not flicker.

Detection (and naming) runs only on some frames. ``Tracker.update`` matches the faces found on such a
frame to the existing tracks by the overlap of their boxes (intersection over union, greedily, best
pair first); ``Tracker.predict`` moves every track's box on the frames in between by its last
velocity. Each track keeps the names of its last detections and shows the most frequent one, so one
doubtful frame does not rename a person.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np


def iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``boxes_a`` (N, 4) with every box of ``boxes_b`` (M, 4)."""
    a, b = np.asarray(boxes_a, np.float64).reshape(-1, 4), np.asarray(boxes_b, np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class Track:
    """One face followed over frames: its box now, its velocity per frame, its recent names and distances."""

    id: int
    box: np.ndarray
    votes: deque = field(default_factory=deque)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    last_seen: int = 0
    last_frame: int = 0

    @property
    def name(self) -> str:
        """The most frequent recent name; a tie goes to the one given most recently."""
        counts = Counter(name for name, _ in self.votes)
        best = max(counts.values())
        return next(name for name, _ in reversed(self.votes) if counts[name] == best)

    @property
    def distance(self) -> float:
        """The distance of the latest detection that gave the shown name."""
        return next(distance for name, distance in reversed(self.votes) if name == self.name)


class Tracker:
    """IoU tracks of faces. ``votes``: how many recent detections decide a track's name; ``min_iou``: the
    overlap a detection needs with a track's predicted box to continue it; ``max_missed``: frames a track
    lives on without a detection (at least the detection interval, so it survives to the next one)."""

    def __init__(self, votes: int = 5, min_iou: float = 0.3, max_missed: int = 1) -> None:
        self.votes, self.min_iou, self.max_missed = votes, min_iou, max_missed
        self.tracks: list[Track] = []
        self.next_id = 0

    def predict(self, frame: int) -> list[Track]:
        """Move every track's box to ``frame`` by its velocity; returns the tracks."""
        for track in self.tracks:
            track.box = track.box + track.velocity * (frame - track.last_frame)
            track.last_frame = frame
        return self.tracks

    def update(self, frame: int, boxes: np.ndarray, names: list[str], distances: list[float]) -> list[Track]:
        """Match the faces detected on ``frame`` to the tracks; unmatched faces start tracks, tracks unseen
        for more than ``max_missed`` frames end. Returns the tracks of this frame's faces, in their order."""
        self.predict(frame)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        overlap = iou(np.array([t.box for t in self.tracks]).reshape(-1, 4), boxes)
        matched: dict[int, Track] = {}
        for flat in np.argsort(-overlap, axis=None, kind="stable"):
            t, d = divmod(int(flat), len(boxes))
            if overlap[t, d] < self.min_iou:
                break
            if d not in matched and all(track is not self.tracks[t] for track in matched.values()):
                matched[d] = self.tracks[t]
        seen = []
        for d, box in enumerate(boxes):
            track = matched.get(d)
            if track is None:
                track = Track(self.next_id, box, deque(maxlen=self.votes), last_seen=frame, last_frame=frame)
                self.next_id += 1
                self.tracks.append(track)
            else:
                # The predicted box is the last detected one moved by velocity * steps: undo that move.
                steps = frame - track.last_seen
                track.velocity = (box - track.box) / steps + track.velocity
                track.box, track.last_seen = box, frame
            track.votes.append((names[d], float(distances[d])))
            seen.append(track)
        self.tracks = [t for t in self.tracks if frame - t.last_seen <= self.max_missed]
        return seen
