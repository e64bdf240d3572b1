"""Face tracks between detections: IoU matching, motion, name votes."""
import numpy as np
import pytest

from utils.tracking import Tracker, iou


def test_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(iou(a, b), [[50 / 150, 0, 0], [0, 0, 0]])
    assert iou(a, np.zeros((0, 4))).shape == (2, 0)


def test_one_face_keeps_one_track_while_it_moves():
    tracker = Tracker()
    ids = set()
    for frame in range(0, 30, 3):
        box = [100 + 10 * frame, 50, 200 + 10 * frame, 150]
        ids |= {t.id for t in tracker.update(frame, [box], ["ann"], [0.4])}
    assert ids == {0}


def test_predict_moves_the_box_by_its_velocity():
    tracker = Tracker(max_missed=3)
    tracker.update(0, [[0, 0, 100, 100]], ["ann"], [0.4])
    tracker.update(3, [[30, 0, 130, 100]], ["ann"], [0.4])
    (track,) = tracker.predict(4)
    np.testing.assert_allclose(track.box, [40, 0, 140, 100])
    (track,) = tracker.update(6, [[62, 0, 162, 100]], ["ann"], [0.4])  # close to the predicted 60
    np.testing.assert_allclose(track.velocity, [32 / 3, 0, 32 / 3, 0])


def test_two_faces_keep_their_own_tracks_and_order():
    tracker = Tracker()
    first = tracker.update(0, [[0, 0, 50, 50], [200, 0, 250, 50]], ["ann", "bob"], [0.3, 0.5])
    second = tracker.update(1, [[205, 2, 255, 52], [3, 1, 53, 51]], ["bob", "ann"], [0.5, 0.3])
    assert [t.id for t in first] == [0, 1] and [t.id for t in second] == [1, 0]
    assert [t.name for t in second] == ["bob", "ann"]


def test_names_are_voted_so_one_doubtful_frame_does_not_rename():
    tracker = Tracker(votes=5)
    names = ["ann", "ann", "unknown", "ann", "unknown", "unknown", "unknown"]
    shown = [tracker.update(f, [[0, 0, 100, 100]], [n], [0.5])[0].name for f, n in enumerate(names)]
    assert shown == ["ann", "ann", "ann", "ann", "ann", "unknown", "unknown"]


def test_tie_goes_to_the_latest_and_distance_follows_the_name():
    tracker = Tracker(votes=4)
    for frame, (name, distance) in enumerate([("ann", 0.3), ("bob", 0.6), ("ann", 0.35), ("bob", 0.7)]):
        (track,) = tracker.update(frame, [[0, 0, 100, 100]], [name], [distance])
    assert track.name == "bob" and track.distance == pytest.approx(0.7)


def test_a_face_elsewhere_starts_a_new_track_and_lost_tracks_end():
    tracker = Tracker(max_missed=3)
    tracker.update(0, [[0, 0, 100, 100]], ["ann"], [0.3])
    (track,) = tracker.update(3, [[300, 300, 400, 400]], ["bob"], [0.3])
    assert track.id == 1 and track.name == "bob"
    assert [t.id for t in tracker.tracks] == [0, 1]  # ann missed one round: still there
    tracker.update(6, [[300, 300, 400, 400]], ["bob"], [0.3])
    assert [t.id for t in tracker.tracks] == [1]
    assert tracker.update(9, np.zeros((0, 4)), [], []) == []
