"""Tracker and subject selection on synthetic people (no video, fast)."""
from __future__ import annotations

import numpy as np
import pytest

from inference.layouts import get_layout
from inference.pose2d import Pose2D
from inference.tracking import (
    Tracker,
    box_iou,
    fix_left_right_swaps,
    keypoint_boxes,
    oks,
    select_subject,
    subject_scores,
    track_detections,
)

COCO = get_layout("coco17")

# A standing person facing the camera, COCO-17, in units of body height, origin at the mid-hip;
# the person's left is on the image right (x grows to the right, y down).
_TEMPLATE = {
    "nose": (0.0, -0.42), "left_eye": (0.02, -0.44), "right_eye": (-0.02, -0.44),
    "left_ear": (0.04, -0.43), "right_ear": (-0.04, -0.43),
    "left_shoulder": (0.11, -0.32), "right_shoulder": (-0.11, -0.32),
    "left_elbow": (0.14, -0.17), "right_elbow": (-0.14, -0.17),
    "left_wrist": (0.15, -0.03), "right_wrist": (-0.15, -0.03),
    "left_hip": (0.07, 0.0), "right_hip": (-0.07, 0.0),
    "left_knee": (0.07, 0.25), "right_knee": (-0.07, 0.25),
    "left_ankle": (0.07, 0.48), "right_ankle": (-0.07, 0.48),
}
TEMPLATE = np.array([_TEMPLATE[n] for n in COCO.names])


def person(x: float, y: float, height: float, conf: float = 0.9, rng=None, noise: float = 0.0) -> np.ndarray:
    kp = TEMPLATE * height + [x, y]
    if rng is not None and noise:
        kp = kp + rng.normal(0, noise, kp.shape)
    return np.concatenate([kp, np.full((len(kp), 1), conf)], axis=1)


def test_geometry_helpers():
    a = person(100, 100, 200)
    box = keypoint_boxes(a)
    assert box[0] == pytest.approx(100 - 0.15 * 200) and box[3] == pytest.approx(100 + 0.48 * 200)
    assert box_iou(box[None], box[None])[0, 0] == pytest.approx(1.0)
    far = keypoint_boxes(person(1000, 100, 200))
    assert box_iou(box[None], far[None])[0, 0] == 0.0
    assert oks(a, a) == pytest.approx(1.0)
    assert oks(a, person(110, 100, 200)) < 1.0
    # Missing points: NaN box, zero IoU, no crash.
    empty = np.full((17, 3), np.nan)
    assert np.isnan(keypoint_boxes(empty)).all()
    assert box_iou(keypoint_boxes(empty)[None], box[None])[0, 0] == 0.0


def test_two_people_crossing_keep_their_ids():
    rng = np.random.default_rng(0)
    frames = []
    truth = []
    for t in range(60):
        # A walks right, B walks left, same size and height in the image; they
        # overlap completely around frame 30, where only their motion tells them apart.
        # Detector order is shuffled every frame.
        a = person(100 + 25 * t, 500, 300, rng=rng, noise=2)
        b = person(1610 - 25 * t, 500, 300, rng=rng, noise=2)
        order = rng.permutation(2)
        dets = [(a, b)[i] for i in order]
        frames.append(dets)
        truth.append(["A" if i == 0 else "B" for i in order])
    ids = track_detections(frames)
    mapping = {}
    for frame_ids, frame_truth in zip(ids, truth):
        for pid, who in zip(frame_ids, frame_truth):
            assert mapping.setdefault(who, pid) == pid, "identity switched at the crossing"
    assert mapping["A"] != mapping["B"]


def test_five_frame_occlusion_keeps_identity_and_new_person_gets_new_id():
    rng = np.random.default_rng(1)
    frames, truth = [], []
    for t in range(50):
        dets, who = [], []
        if not 20 <= t < 25:  # A is hidden for 5 frames (behind a tree) while still walking:
            # it reappears 120 px from where it was last seen (boxes no longer overlap).
            dets.append(person(100 + 20 * t, 500, 300, rng=rng, noise=2))
            who.append("A")
        dets.append(person(1300, 480, 280, rng=rng, noise=2))  # B stands still
        who.append("B")
        if t >= 35:  # C enters from the right
            dets.append(person(1900 - 6 * (t - 35), 520, 320, rng=rng, noise=2))
            who.append("C")
        frames.append(dets)
        truth.append(who)
    ids = track_detections(frames, max_missed=8)
    seen: dict[str, set[int]] = {}
    for frame_ids, frame_truth in zip(ids, truth):
        for pid, who in zip(frame_ids, frame_truth):
            seen.setdefault(who, set()).add(pid)
    assert all(len(v) == 1 for v in seen.values()), seen
    assert len(set.union(*seen.values())) == 3


def test_track_ends_after_max_missed_frames():
    # Gone for longer than max_missed: the person comes back as a new track (ids never reused).
    frames = [[person(300, 300, 200)] for _ in range(5)] + [[] for _ in range(10)] + \
             [[person(300, 300, 200)] for _ in range(3)]
    ids = track_detections(frames, max_missed=5)
    assert ids[0] == [0] and ids[-1] == [1]
    ids = track_detections(frames, max_missed=12)
    assert ids[-1] == [0]


def test_unusable_detection_gets_no_id_and_frames_must_increase():
    tr = Tracker(min_keypoints=3)
    junk = person(0, 0, 100, conf=0.0)
    assert tr.update([junk, person(300, 300, 200)]) == [-1, 0]
    with pytest.raises(ValueError):
        tr.update([], frame=0)


def test_subject_selection_prefers_long_large_visible_track():
    n = 40
    time = np.arange(n) / 30.0
    kp = np.full((3, n, 17, 2), np.nan)
    conf = np.zeros((3, n, 17))
    # 0: big, the whole clip; 1: small background person, whole clip; 2: big but brief.
    for t in range(n):
        kp[0, t] = person(300, 400, 400)[:, :2]
        conf[0, t] = 0.9
        kp[1, t] = person(900, 300, 120)[:, :2]
        conf[1, t] = 0.9
        if t < 8:
            kp[2, t] = person(600, 400, 420)[:, :2]
            conf[2, t] = 0.9
    scores = subject_scores(kp, conf)
    assert np.argmax(scores) == 0 and scores[0] > 3 * scores[1] and scores[0] > 3 * scores[2]
    pose = Pose2D.from_arrays(np.arange(n), time, [4, 7, 9], kp, conf, "coco17")
    assert select_subject(pose) == 4
    # Poorly seen (low confidence) loses to clearly seen of the same size and length.
    conf[0] = 0.1
    kp[1] = kp[0] + [500, 0]
    conf[1] = 0.9
    assert select_subject(Pose2D.from_arrays(np.arange(n), time, [4, 7, 9], kp, conf, "coco17")) == 7


def test_left_right_swap_runs_are_undone():
    n = 30
    kp = np.stack([person(400 + 3 * t, 500, 300)[:, :2] for t in range(n)])
    conf = np.full((n, 17), 0.9)
    bad = np.zeros(n, bool)
    bad[12:19] = True  # the model labelled the person's sides the wrong way for 7 frames
    observed = kp.copy()
    observed[bad] = observed[bad][:, COCO.flip_index]
    fixed, _, swapped = fix_left_right_swaps(observed, conf, "coco17")
    np.testing.assert_array_equal(swapped, bad)
    np.testing.assert_allclose(fixed, kp)
    # A real turn goes through a profile view (shoulders overlap): nothing is changed.
    turn = kp.copy()
    for t in range(n):
        c = np.cos(np.pi * t / (n - 1))  # facing the camera -> facing away
        turn[t, :, 0] = 400 + (kp[t, :, 0] - kp[t, :, 0].mean()) * c
    fixed, _, swapped = fix_left_right_swaps(turn, conf, "coco17")
    assert not swapped.any()
    np.testing.assert_allclose(fixed, turn)


def test_swap_runs_are_linked_across_a_brief_unclear_gap():
    n = 40
    kp = np.stack([person(400, 500, 300)[:, :2] for _ in range(n)])
    conf = np.full((n, 17), 0.9)
    # Frames 20-21 are unclear (a hip is not seen); the labels are swapped from frame 22 to 37.
    # After the gap, swapped frames are the majority (16 vs 2); over the clip they are not
    # (16 vs 22): only a rule that links runs across the brief gap gets every frame right.
    conf[20:22, COCO.index("left_hip")] = 0.0
    bad = np.zeros(n, bool)
    bad[22:38] = True
    observed = kp.copy()
    observed[bad] = observed[bad][:, COCO.flip_index]
    fixed, _, swapped = fix_left_right_swaps(observed, conf, "coco17", max_gap=3)
    np.testing.assert_array_equal(swapped, bad)
    np.testing.assert_allclose(fixed, kp)
    _, _, unlinked = fix_left_right_swaps(observed, conf, "coco17", max_gap=0)
    assert unlinked[38:].all() and not unlinked[22:38].any()  # the wrong side won after the gap


def test_assignment_matches_the_hungarian_method():
    from scipy.optimize import linear_sum_assignment

    from inference.tracking import assignment
    rng = np.random.default_rng(3)
    for shape in ((1, 1), (1, 5), (4, 1), (3, 3), (2, 6), (5, 2)):
        for _ in range(20):
            cost = rng.random(shape)
            r, c = assignment(cost)
            R, C = linear_sum_assignment(cost)
            assert cost[r, c].sum() == pytest.approx(cost[R, C].sum())
            assert len(r) == len(R) == min(shape)
            assert len(set(r.tolist())) == len(r) and len(set(c.tolist())) == len(c)


def test_the_2d_stage_does_not_import_scipy_optimize():
    # scipy.optimize costs ~0.5 s of every run's start-up; a one-person detector never needs it
    import subprocess
    import sys
    code = ("import sys, inference.pose2d_run, inference.tracking as t, numpy as np; "
            "t.assignment(np.ones((1, 3))); t.assignment(np.ones((2, 1))); "
            "print('scipy.optimize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
