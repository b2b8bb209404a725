"""Importers of other tools' 2D keypoints, on files written by hand in each tool's format and on
Pose2Sim's real OpenPose BODY_25B detections."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import data_path

from inference.importers import (
    guess_openpose_layout,
    read_coco_results,
    read_deeplabcut,
    read_mmpose,
    read_openpose,
)
from inference.layouts import LAYOUTS
from opensim_bridge.errors import InputError

# A standing person (image coordinates, y down), by canonical name.
BODY = {
    "nose": (100, 50), "left_eye": (105, 45), "right_eye": (95, 45), "left_ear": (110, 48),
    "right_ear": (90, 48), "head_top": (100, 25), "upper_neck": (100, 65), "neck": (100, 80),
    "left_shoulder": (120, 80), "right_shoulder": (80, 80), "left_elbow": (125, 120),
    "right_elbow": (75, 120), "left_wrist": (128, 155), "right_wrist": (72, 155),
    "mid_hip": (100, 160), "left_hip": (112, 160), "right_hip": (88, 160), "left_knee": (113, 220),
    "right_knee": (87, 220), "left_ankle": (114, 280), "right_ankle": (86, 280),
    "left_heel": (112, 288), "right_heel": (88, 288), "left_big_toe": (122, 292),
    "right_big_toe": (78, 292), "left_small_toe": (126, 290), "right_small_toe": (74, 290),
}


def person(layout: str, shift=(0.0, 0.0), conf=0.8, drop=()) -> np.ndarray:
    """(K, 3) keypoints of BODY in a layout, moved by shift; dropped points are 0, 0, 0."""
    out = []
    for name in LAYOUTS[layout].names:
        if name in drop:
            out.append((0.0, 0.0, 0.0))
        else:
            x, y = BODY[name]
            out.append((x + shift[0], y + shift[1], conf))
    return np.array(out)


def write_openpose(folder, frames: dict[int, list[tuple[int, np.ndarray]]]):
    folder.mkdir()
    for f, people in frames.items():
        doc = {"version": 1.3, "people": [
            {"person_id": [pid], "pose_keypoints_2d": kp.reshape(-1).tolist(),
             "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": []}
            for pid, kp in people]}
        (folder / f"clip_{f:012d}_keypoints.json").write_text(json.dumps(doc))
    return folder


@pytest.mark.parametrize("layout", ["body25", "body25b"])
def test_openpose_untracked_and_layout_detection(tmp_path, layout):
    frames = {0: [(-1, person(layout))],
              1: [(-1, person(layout, (5, 0))), (-1, person(layout, (300, 0), drop=("left_knee",)))],
              3: [(-1, person(layout, (10, 0)))]}   # frame 2 has no file: a gap in numbering
    pose = read_openpose(write_openpose(tmp_path / "json", frames), fps=10)
    assert pose.layout == layout and pose.extra["tracked"] is False
    assert pose.frames.tolist() == [0, 1, 3]
    np.testing.assert_allclose(pose.time, [0, 0.1, 0.3])
    assert pose.person_ids == [0, 1]  # provisional tracks in detection order
    lay = LAYOUTS[layout]
    np.testing.assert_allclose(pose.tracks[0].data[2, lay.index("nose")], (110, 50))
    np.testing.assert_allclose(pose.tracks[0].confidence[0], 0.8)
    second = pose.tracks[1]
    assert np.isnan(second.data[0]).all() and np.isnan(second.data[2]).all()
    assert np.isnan(second.data[1, lay.index("left_knee")]).all()
    assert second.confidence[1, lay.index("left_knee")] == 0
    np.testing.assert_allclose(second.data[1, lay.index("right_hip")], (388, 160))
    ids, arr = pose.by_frame()[1]
    assert ids.tolist() == [0, 1] and arr.shape == (2, 25, 3)


def test_openpose_person_ids_make_tracks(tmp_path):
    frames = {0: [(4, person("body25")), (9, person("body25", (200, 0)))],
              1: [(9, person("body25", (205, 0)))]}
    pose = read_openpose(write_openpose(tmp_path / "json", frames))
    assert pose.extra["tracked"] is True and pose.person_ids == [4, 9]
    assert np.isnan(pose.tracks[4].data[1]).all()
    np.testing.assert_allclose(pose.tracks[9].data[1, 0], (305, 50))
    np.testing.assert_allclose(pose.time, [0, 1 / 30])


def test_openpose_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .json files"):
        read_openpose(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x_000_keypoints.json").write_text("{broken")
    with pytest.raises(InputError, match="x_000_keypoints.json"):
        read_openpose(bad)
    odd = write_openpose(tmp_path / "odd", {0: [(-1, person("coco17"))]})
    with pytest.raises(InputError, match="17 keypoints"):
        read_openpose(odd)
    assert read_openpose(odd, layout="coco17").layout == "coco17"


def _pose2sim_json(cam: str):
    return data_path("pose2sim", "Pose2Sim", "S00_Demo_Session", "S00_P00_SingleParticipant",
                     "S00_P00_T01_BalancingTrial", "pose", f"{cam}_json")


def test_pose2sim_openpose_real_sample():
    video = data_path("pose2sim", "Pose2Sim", "Demo_SinglePerson", "videos", "cam01.mp4")
    pose = read_openpose(_pose2sim_json("cam01"), video=video)
    assert pose.layout == "body25b" and len(pose.keypoint_names) == 25
    assert len(pose) == 100 and pose.frames.tolist() == list(range(100))
    np.testing.assert_allclose(pose.time, np.arange(100) / 60, atol=1e-4)
    assert pose.video_size == (1080, 1920) and pose.source == str(video)
    counts = pose.present().sum(axis=0)
    assert counts.min() >= 1 and (counts >= 2).any()
    # detections lie in the frame and confidences are OpenPose's, within [0, 1]
    kp = pose.keypoints()
    ok = ~np.isnan(kp[..., 0])
    assert (kp[..., 0][ok] >= 0).all() and (kp[..., 0][ok] <= 1080).all()
    assert (kp[..., 1][ok] >= 0).all() and (kp[..., 1][ok] <= 1920).all()
    conf = pose.confidence()
    assert conf.max() <= 1 and conf[ok].min() > 0


@pytest.mark.parametrize("cam", ["cam02", "cam03", "cam04"])
def test_pose2sim_other_cameras_are_body25b(cam):
    pose = read_openpose(_pose2sim_json(cam), fps=60)
    assert pose.layout == "body25b" and len(pose) == 100


def test_guess_openpose_layout_needs_evidence():
    with pytest.raises(ValueError):
        guess_openpose_layout([np.zeros((25, 3))])


def _instance_1x(kp: np.ndarray) -> dict:
    x0, y0 = kp[:, :2].min(0)
    x1, y1 = kp[:, :2].max(0)
    return {"keypoints": kp[:, :2].tolist(), "keypoint_scores": kp[:, 2].tolist(),
            "bbox": [[float(x0), float(y0), float(x1), float(y1)]], "bbox_score": 0.97}


def test_mmpose_topdown_demo_file(tmp_path):
    doc = {"meta_info": {"dataset_name": "coco", "num_keypoints": 17},
           "instance_info": [
               {"frame_id": 1, "instances": [_instance_1x(person("coco17", conf=0.9))]},
               {"frame_id": 2, "instances": [_instance_1x(person("coco17", (3, 0), conf=1.02)),
                                             _instance_1x(person("coco17", (400, 0)))]},
               {"frame_id": 3, "instances": []}]}
    path = tmp_path / "results_clip.json"
    path.write_text(json.dumps(doc))
    pose = read_mmpose(path, fps=25)
    assert pose.layout == "coco17" and pose.model == "mmpose"
    assert pose.frames.tolist() == [0, 1, 2]  # the demo counts from 1
    np.testing.assert_allclose(pose.time, [0, 0.04, 0.08])
    assert pose.person_ids == [0, 1] and pose.extra["tracked"] is False
    np.testing.assert_allclose(pose.tracks[0].data[1, 0], (103, 50))
    assert pose.tracks[0].confidence[1].max() == 1.0  # scores above 1 are clipped
    assert not pose.present()[:, 2].any()


def test_mmpose_inferencer_and_old_formats(tmp_path):
    frames = [{"frame_id": i, "instances": [_instance_1x(person("halpe26", (i, 0)))]} for i in range(4)]
    path = tmp_path / "clip.json"
    path.write_text(json.dumps(frames))
    pose = read_mmpose(path)
    assert pose.layout == "halpe26" and pose.frames.tolist() == [0, 1, 2, 3]

    old = [[{"bbox": [0, 0, 10, 10, 0.9], "keypoints": person("coco17", (i, 0)).tolist(), "track_id": 5},
            {"bbox": [0, 0, 10, 10, 0.9], "keypoints": person("coco17", (i + 200, 0)).tolist(), "track_id": 2}]
           for i in range(3)]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    pose = read_mmpose(path)
    assert pose.extra["tracked"] is True and pose.person_ids == [2, 5]
    np.testing.assert_allclose(pose.tracks[2].data[2, 0], (302, 50))

    one_image = tmp_path / "img.json"
    one_image.write_text(json.dumps([_instance_1x(person("coco17"))]))
    assert len(read_mmpose(one_image)) == 1

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"foo": 1}))
    with pytest.raises(InputError, match="not an MMPose prediction file"):
        read_mmpose(bad)


def test_coco_results(tmp_path):
    def det(image_id, kp, score=0.9, cat=1):
        return {"image_id": image_id, "category_id": cat, "keypoints": kp.reshape(-1).tolist(), "score": score}
    dets = [det(9, person("coco17", (9, 0))), det(3, person("coco17", (3, 0))),
            det(3, person("coco17", (303, 0), drop=("nose",))), det(5, person("coco17", (5, 0))),
            det(5, person("coco17"), cat=2)]  # another category: ignored
    path = tmp_path / "person_keypoints_results.json"
    path.write_text(json.dumps(dets))
    pose = read_coco_results(path, fps=10)
    assert pose.extra["image_ids"] == [3, 5, 9] and pose.frames.tolist() == [0, 1, 2]
    assert pose.person_ids == [0, 1]
    np.testing.assert_allclose(pose.tracks[0].data[:, 0, 0], [103, 105, 109])
    assert np.isnan(pose.tracks[1].data[0, 0]).all()  # v = 0 -> missing
    np.testing.assert_allclose(pose.tracks[1].data[0, 5], (423, 80))
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(InputError, match="JSON list"):
        read_coco_results(path)


def _write_dlc(path, header_rows, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows(header_rows)
        w.writerows(rows)


def test_deeplabcut_single_animal(tmp_path):
    parts = ["LHip", "RHip", "LKnee", "RKnee", "nose", "tail"]
    scorer = "DLC_resnet50_humanJan1shuffle1_100000"
    header = [["scorer"] + [scorer] * 18,
              ["bodyparts"] + [p for p in parts for _ in range(3)],
              ["coords"] + ["x", "y", "likelihood"] * 6]
    rows = []
    for f in range(5):
        r = [f]
        for p in parts:
            name = {"LHip": "left_hip", "RHip": "right_hip", "LKnee": "left_knee",
                    "RKnee": "right_knee", "nose": "nose"}.get(p)
            x, y = BODY[name] if name else (0, 0)
            r += [x + f, y, 0.5 + 0.1 * (f % 3)]
        rows.append(r)
    path = tmp_path / "videoDLC.csv"
    _write_dlc(path, header, rows)
    with pytest.warns(UserWarning, match="tail"):
        pose = read_deeplabcut(path, fps=50)
    assert pose.layout == "coco17" and pose.person_ids == [0]
    assert pose.extra["bodyparts"]["LHip"] == "left_hip"
    s = pose.tracks[0]
    np.testing.assert_allclose(s["left_knee"][:, 0], [113, 114, 115, 116, 117])
    np.testing.assert_allclose(s.confidence[:, s.index("left_knee")], [0.5, 0.6, 0.7, 0.5, 0.6])
    assert np.isnan(s["left_ankle"]).all()
    np.testing.assert_allclose(pose.time, np.arange(5) / 50)
    assert pose.model == f"deeplabcut:{scorer}"


def test_deeplabcut_multi_animal_and_names(tmp_path):
    header = [["scorer"] + ["DLC"] * 12,
              ["individuals"] + ["ind1"] * 6 + ["ind2"] * 6,
              ["bodyparts"] + ["hip1"] * 3 + ["knee1"] * 3 + ["hip1"] * 3 + ["knee1"] * 3,
              ["coords"] + ["x", "y", "likelihood"] * 4]
    rows = [[0, 1, 2, 0.9, 3, 4, 0.8, 11, 12, 0.7, "", "", ""],
            [1, 1.5, 2, 0.9, 3.5, 4, 0.8, 11.5, 12, 0.7, 13.5, 14, 0.6]]
    path = tmp_path / "multi.csv"
    _write_dlc(path, header, rows)
    pose = read_deeplabcut(path, layout="coco17", names={"hip1": "left_hip", "knee1": "left_knee"})
    assert pose.person_ids == [0, 1] and pose.extra["individuals"] == ["ind1", "ind2"]
    np.testing.assert_allclose(pose.tracks[1]["left_hip"], [[11, 12], [11.5, 12]])
    assert np.isnan(pose.tracks[1]["left_knee"][0]).all()
    assert pose.tracks[1].confidence[0, LAYOUTS["coco17"].index("left_knee")] == 0
    with pytest.raises(InputError, match="matches a keypoint"):
        read_deeplabcut(path, layout="coco17")
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="plain.csv"):
        read_deeplabcut(plain)


def test_frame_times_from_a_video(tmp_path):
    import av
    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=20)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(6):
            f = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    frames = {i: [(-1, person("body25"))] for i in (0, 2, 5)}
    pose = read_openpose(write_openpose(tmp_path / "json", frames), video=video)
    np.testing.assert_allclose(pose.time, [0, 0.1, 0.25], atol=1e-6)
    assert pose.video_size == (64, 48)
    frames[9] = [(-1, person("body25"))]
    with pytest.raises(InputError, match="beyond"):
        read_openpose(write_openpose(tmp_path / "json2", frames), video=video)


@pytest.mark.parametrize("layout", ["body25", "body25b"])
def test_guess_openpose_layout_from_legs_when_the_face_is_hidden(layout):
    back_view = [person(layout, (i * 7, 0), drop=("nose", "left_eye", "right_eye")) for i in range(3)]
    assert guess_openpose_layout(back_view) == layout
