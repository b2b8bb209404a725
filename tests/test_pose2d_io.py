"""The 2D result type and its pose2d.npz / pose2d.json files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inference.layouts import LAYOUTS
from inference.pose2d import Pose2D, read_pose2d
from opensim_bridge.errors import InputError


def _pose(n=12, persons=(3, 7), layout="coco17", seed=0) -> Pose2D:
    rng = np.random.default_rng(seed)
    K = LAYOUTS[layout].n
    kp = rng.uniform(0, 1000, (len(persons), n, K, 2))
    conf = rng.uniform(0, 1, (len(persons), n, K))
    kp[1, :4] = np.nan          # second person enters late
    kp[0, 5, 3] = np.nan        # one missing keypoint
    frames = np.arange(n) * 2 + 10
    time = np.cumsum(rng.uniform(0.01, 0.05, n))  # variable rate
    return Pose2D.from_arrays(frames, time, persons, kp, conf, layout, video_size=(1080, 1920),
                              rotation=270, source="clip.mp4", model="test-model", subject=3,
                              extra={"note": "é"})


def test_tracks_are_keypoint_series_on_the_timeline():
    pose = _pose()
    assert pose.person_ids == [3, 7] and len(pose) == 12
    s = pose.tracks[7]
    assert s.units == "px" and s.dim == 2 and s.names == LAYOUTS["coco17"].names
    np.testing.assert_array_equal(s.time, pose.time)
    assert np.isnan(s.data[:4]).all() and (s.confidence[:4] == 0).all()
    assert pose.tracks[3].confidence[5, 3] == 0
    np.testing.assert_array_equal(pose.present()[1], np.arange(12) >= 4)
    assert pose.subject_series() is pose.tracks[3]


def test_by_frame_lists_present_people():
    pose = _pose()
    per_frame = pose.by_frame()
    assert len(per_frame) == 12
    ids, arr = per_frame[0]
    assert ids.tolist() == [3] and arr.shape == (1, 17, 3)
    ids, arr = per_frame[6]
    assert ids.tolist() == [3, 7]
    np.testing.assert_array_equal(arr[1, :, :2], pose.tracks[7].data[6])
    np.testing.assert_array_equal(arr[1, :, 2], pose.tracks[7].confidence[6])


def test_from_detections_provisional_tracks():
    det = [np.array([[[1, 2, 0.5]] * 17, [[3, 4, 0.0]] * 17]), np.zeros((0, 17, 3)),
           np.array([[[5, 6, 0.9]] * 17])]
    pose = Pose2D.from_detections([0, 1, 2], [0, 0.1, 0.2], det, "coco17")
    assert pose.person_ids == [0, 1]
    assert pose.tracks[0].data[0, 0].tolist() == [1, 2] and pose.tracks[0].data[2, 0].tolist() == [5, 6]
    assert np.isnan(pose.tracks[1].data).all()  # confidence 0 = not detected
    assert not pose.present()[:, 1].any()


def test_write_read_round_trip(tmp_path):
    pose = _pose()
    npz, sidecar = pose.write(tmp_path / "out" / "pose2d.npz")
    back = read_pose2d(npz)
    assert back.person_ids == pose.person_ids and back.layout == "coco17"
    assert (back.video_size, back.rotation, back.source, back.model, back.subject) == \
        ((1080, 1920), 270, "clip.mp4", "test-model", 3)
    assert back.extra == {"note": "é"}
    np.testing.assert_array_equal(back.frames, pose.frames)
    np.testing.assert_array_equal(back.time, pose.time)  # times stay float64
    np.testing.assert_allclose(back.keypoints(), pose.keypoints(), rtol=1e-6, atol=1e-4)
    assert np.array_equal(np.isnan(back.keypoints()), np.isnan(pose.keypoints()))
    np.testing.assert_allclose(back.confidence(), pose.confidence(), atol=1e-6)
    doc = json.loads(sidecar.read_text())
    assert doc["format"] == "kinevid-pose2d" and doc["data_file"] == "pose2d.npz"
    assert doc["arrays"]["keypoints"]["shape"] == "(P, n, K, 2)" and doc["person_ids"] == [3, 7]
    # readable without our code and without pickle
    with np.load(npz, allow_pickle=False) as z:
        assert z["keypoints"].shape == (2, 12, 17, 2)
        assert json.loads(str(z["header"][()]))["keypoint_names"][0] == "nose"


def test_failed_write_keeps_previous_files(tmp_path):
    path = tmp_path / "pose2d.npz"
    _pose(seed=1).write(path)
    before = path.read_bytes(), (tmp_path / "pose2d.json").read_bytes()
    pose = _pose(seed=2)
    pose.extra["bad"] = object()  # not JSON: the write must fail without touching the old pair
    with pytest.raises(TypeError):
        pose.write(path)
    assert (path.read_bytes(), (tmp_path / "pose2d.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pose2d.json", "pose2d.npz"]


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", ["truncate", "text", "no_header", "bad_json", "bad_format",
                                    "bad_version", "shape", "time_order", "conf_range", "layout",
                                    "pickled"])
def test_bad_files_are_input_errors(tmp_path, damage):
    path = tmp_path / "pose2d.npz"
    _pose().write(path)
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"][()]))
        time = z["time"].copy()
        conf = z["confidence"].copy()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "text":
        path.write_text("hello")
    elif damage == "no_header":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "header"}
        np.savez(path, **arrays)
    elif damage == "bad_json":
        _rewrite(path, header=np.array("{not json"))
    elif damage == "bad_format":
        _rewrite(path, header=np.array(json.dumps({**header, "format": "other"})))
    elif damage == "bad_version":
        _rewrite(path, header=np.array(json.dumps({**header, "version": 99})))
    elif damage == "shape":
        _rewrite(path, confidence=conf[:, :5])
    elif damage == "time_order":
        time[3] = time[2]
        _rewrite(path, time=time)
    elif damage == "conf_range":
        conf[0, 0, 0] = 1.5
        _rewrite(path, confidence=conf)
    elif damage == "layout":
        _rewrite(path, header=np.array(json.dumps({**header, "layout": "body25"})))
    elif damage == "pickled":
        _rewrite(path, extra_obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError) as err:
        read_pose2d(path)
    assert str(path) in str(err.value)


def test_layout_conversion_keeps_tracks():
    pose = _pose(layout="body25b")
    h36m = pose.to_layout("h36m17")
    assert h36m.layout == "h36m17" and h36m.person_ids == pose.person_ids
    b = LAYOUTS["body25b"]
    np.testing.assert_array_equal(h36m.tracks[3]["left_knee"], pose.tracks[3].data[:, b.index("left_knee")])
    assert h36m.subject == 3 and h36m.video_size == (1080, 1920)


def test_invalid_construction_is_an_error():
    pose = _pose()
    with pytest.raises(InputError, match="subject"):
        pose.with_subject(99)
    with pytest.raises(InputError, match="expected"):
        Pose2D.from_arrays([0, 1], [0, 0.1], [0], np.zeros((1, 2, 16, 2)), None, "coco17")
    with pytest.raises(InputError, match="strictly increasing"):
        Pose2D.from_arrays([0, 0], [0, 0.1], [0], np.zeros((1, 2, 17, 2)), None, "coco17")
