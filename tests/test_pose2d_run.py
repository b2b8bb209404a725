"""`kinevid pose2d`: backend choice, output files, overlay video, subject re-selection, errors."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib

import av
import numpy as np
import pytest
import torch
from conftest import DATA

from inference.commands.pose2d import add_pose2d_parser
from inference.layouts import get_layout
from inference.pose2d import read_pose2d
from inference.pose2d_run import estimate_pose2d, resolve_backend
from models.checkpoints import REGISTRY, import_checkpoint
from opensim_bridge.errors import InputError, KinevidError

CAM01 = DATA / "pose2sim" / "Pose2Sim" / "Demo_SinglePerson" / "videos" / "cam01.mp4"


def _run(argv) -> int:
    parser = argparse.ArgumentParser(prog="kinevid")
    add_pose2d_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "kcache"
    monkeypatch.setenv("KINEVID_CACHE", str(cache))
    return cache / "weights"


def test_backend_choice_without_weights(empty_cache):
    choice = resolve_backend("auto")
    assert choice.backend == "blazepose" and "no ViTPose weights" in choice.reason
    assert resolve_backend("blazepose").backend == "blazepose"
    with pytest.raises(KinevidError, match="kinevid weights fetch vitpose-b-coco"):
        resolve_backend("vitpose-b")
    with pytest.raises(InputError, match="unknown pose backend"):
        resolve_backend("openpose")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pose2d_out")
    code = _run(["pose2d", str(CAM01), "-o", str(out), "--pose", "blazepose", "--max-frames", "12"])
    return code, out


def test_command_writes_pose_file_and_overlay(cli_run):
    code, out = cli_run
    assert code == 0
    pose = read_pose2d(out / "pose2d.npz")
    assert (out / "pose2d.json").is_file()
    assert len(pose) == 12 and list(pose.frames) == list(range(12))
    assert pose.layout == "blazepose33" and pose.video_size == (1080, 1920)
    assert pose.subject in pose.person_ids
    assert pose.extra["backend"] == "blazepose"
    # The subject is the person on the treadmill: found in every frame, tall in the image.
    sub = pose.subject_series()
    assert not np.isnan(sub.data).all(axis=(1, 2)).any()
    height = np.nanmax(sub.data[:, :, 1], axis=1) - np.nanmin(sub.data[:, :, 1], axis=1)
    assert np.median(height) > 0.3 * 1920
    # Overlay: same frame count and size as the processed video, decodable, drawn on.
    with av.open(str(out / "pose2d_overlay.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    # The quality-control video is halved to 960x540 (max side 1280).
    assert len(frames) == 12 and frames[0].shape == (960, 540, 3)
    with av.open(str(CAM01)) as c:
        original = next(c.decode(video=0)).to_ndarray(format="rgb24")[::2, ::2]
    # Pixels along the subject's skeleton changed; the far corner did not (beyond codec noise).
    x, y = (np.nanmean(sub.data[0], axis=0) / 2).round().astype(int)
    diff = np.abs(frames[0].astype(int) - original.astype(int)).sum(axis=2)
    assert diff[y - 100:y + 100, x - 50:x + 50].max() > 200
    assert np.median(diff[-50:, -50:]) < 30
    # No temporary files are left behind.
    assert sorted(p.name for p in out.iterdir()) == ["pose2d.json", "pose2d.npz", "pose2d_overlay.mp4"]


def test_all_tracks_kept_and_person_option_selects(cli_run, tmp_path):
    _, out = cli_run
    pose = read_pose2d(out / "pose2d.npz")
    others = [p for p in pose.person_ids if p != pose.subject]
    # cam01 shows a second person at the left edge of the frame: kept as its own track.
    assert others, pose.person_ids
    reselected = pose.with_subject(others[0])
    assert reselected.subject == others[0]
    assert np.array_equal(reselected.tracks[others[0]].data, pose.tracks[others[0]].data, equal_nan=True)
    # --person on the command line picks the same track (the run is deterministic).
    out2 = tmp_path / "again"
    assert _run(["pose2d", str(CAM01), "-o", str(out2), "--pose", "blazepose", "--max-frames", "12",
                 "--person", str(others[0]), "--no-overlay"]) == 0
    again = read_pose2d(out2 / "pose2d.npz")
    assert again.subject == others[0] and not (out2 / "pose2d_overlay.mp4").exists()


def test_bad_person_and_bad_input_keep_earlier_results(cli_run, tmp_path):
    _, out = cli_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(InputError, match="no such track"):
        _run(["pose2d", str(CAM01), "-o", str(out), "--pose", "blazepose", "--max-frames", "3",
              "--person", "999"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    with pytest.raises(InputError, match="notes.mp4|cannot open"):
        _run(["pose2d", str(not_video), "-o", str(tmp_path / "o"), "--pose", "blazepose"])
    with pytest.raises(InputError, match="not found"):
        _run(["pose2d", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o")])
    with pytest.raises(InputError, match="max-frames"):
        _run(["pose2d", str(CAM01), "-o", str(tmp_path / "o"), "--max-frames", "0"])


def test_vitpose_backend_on_blazepose_boxes(tmp_path, monkeypatch):
    """auto picks cached ViTPose weights; top-down runs on the persons BlazePose found.

    The checkpoint is a full-size ViTPose-S in the official layout with random weights (the
    real ones cannot be downloaded here): the keypoints are meaningless, the plumbing is not.
    """
    from test_vitpose import official_state_dict

    torch.manual_seed(0)
    sd = official_state_dict(384, 12, 17, seed=3)
    src = tmp_path / "vitpose_s.pth"
    torch.save({"state_dict": sd}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setitem(REGISTRY, "vitpose-s-coco",
                        dataclasses.replace(REGISTRY["vitpose-s-coco"], sha256=digest))
    cache = tmp_path / "cache"
    import_checkpoint(src, cache=cache)
    choice = resolve_backend("auto", cache=cache, gpu=False)
    assert choice.backend == "vitpose" and choice.weights == "vitpose-s-coco"
    pose = estimate_pose2d(CAM01, choice=choice, cache=cache, max_frames=2, device="cpu")
    assert pose.layout == "coco17" and pose.model == "vitpose-s-coco" and len(pose) == 2
    sub = pose.subject_series()
    # Keypoints come back in frame pixels, inside the padded person box.
    assert np.isfinite(sub.data).all()
    assert (sub.data[..., 0] > -200).all() and (sub.data[..., 0] < 1080 + 200).all()


def test_overlay_of_rotated_variable_rate_video_is_upright_and_keeps_times(tmp_path):
    from fractions import Fraction

    from test_video import H, W, write_video

    from inference.overlay import write_overlay
    from inference.pose2d import Pose2D
    from inference.video import open_video

    # Uneven frame times (ms) and a 90-degree display rotation, as a phone writes them.
    pts = [0, 40, 70, 130, 160, 230, 260, 300]
    src = write_video(tmp_path / "phone.mp4", n=len(pts), pts=pts, time_base=Fraction(1, 1000),
                      rotation=90)
    info = open_video(src).info
    assert (info.width, info.height) == (H, W)  # upright: portrait
    times = open_video(src).timestamps()
    # One synthetic person: a vertical segment in the upright frame, drawn in every frame.
    n, k = len(pts), get_layout("coco17").n
    kp = np.full((1, n, k, 2), np.nan)
    kp[0, :, :, 0] = info.width / 2
    kp[0, :, :, 1] = np.linspace(8, info.height - 8, k)
    pose = Pose2D.from_arrays(np.arange(n), times, [5], kp, np.full((1, n, k), 0.9), "coco17",
                              video_size=(info.width, info.height), subject=5)
    out = write_overlay(src, pose, tmp_path / "qc" / "overlay.mp4")
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        decoded = list(c.decode(stream))
        got_times = [float(f.pts * f.time_base) for f in decoded]
    assert len(decoded) == n
    assert (decoded[0].width, decoded[0].height) == (info.width, info.height)
    np.testing.assert_allclose(np.array(got_times) - got_times[0], times - times[0], atol=2e-3)
    # The drawn skeleton is there: the centre column differs from the input frame.
    first_in = next(iter(open_video(src).frames())).image.astype(int)
    first_out = decoded[0].to_ndarray(format="rgb24").astype(int)
    col = info.width // 2
    assert np.abs(first_out[10:-10, col - 1:col + 2] - first_in[10:-10, col - 1:col + 2]).mean() > 40
