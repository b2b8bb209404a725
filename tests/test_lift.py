"""Lifter inference (normalisation, padding, flip test, chunking) and `kinevid lift` end to end.

The end-to-end input is a Pose2D made by projecting the real Gait2354 walking markers through a
virtual camera; the lifter is a VideoPose3D-layout checkpoint with random weights, put in a
temporary cache through the registry's verified fetch (file:// URL).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.commands.lift import add_lift_parser
from inference.layouts import get_layout
from inference.lift import MARKER_FOR, lift_pose2d
from inference.pose2d import Pose2D
from models.checkpoints import fetch
from models.lift_infer import (
    image_coordinates,
    mirror_permutation,
    normalize_screen_coordinates,
    prepare_input,
    run_lifter,
)
from models.lifter_registry import LIFTER_REGISTRY, build_lifter, lifter_cache
from models.tcn import TemporalModel
from opensim_bridge.builtin_model import KEYPOINT_MARKERS
from opensim_bridge.trc import read_trc

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WALK = DATA / "opensim-models" / "Pipelines" / "Gait2354_Simbody" / "subject01_walk1.trc"

# COCO-17 keypoints from the walking trial's markers (averaged where several bracket a joint)
COCO_FROM = {
    "nose": ("R.Temple", "L.Temple"), "left_eye": ("L.Temple",), "right_eye": ("R.Temple",),
    "left_ear": ("L.Temple",), "right_ear": ("R.Temple",),
    "left_shoulder": ("L.Acromium",), "right_shoulder": ("R.Acromium",),
    "left_elbow": ("L.Elbow",), "right_elbow": ("R.Elbow",),
    "left_wrist": ("L.Wrist.Med", "L.Wrist.Lat"), "right_wrist": ("R.Wrist.Med", "R.Wrist.Lat"),
    "left_hip": ("L.ASIS", "V.Sacral"), "right_hip": ("R.ASIS", "V.Sacral"),
    "left_knee": ("L.Shank.Upper",), "right_knee": ("R.Shank.Upper",),
    "left_ankle": ("L.Heel", "L.Midfoot.Lat"), "right_ankle": ("R.Heel", "R.Midfoot.Lat"),
}


def test_normalisation_round_trip():
    rng = np.random.default_rng(0)
    w, h = 1080, 1920
    xy = rng.uniform([0, 0], [w, h], size=(50, 17, 2))
    n = normalize_screen_coordinates(xy, w, h)
    np.testing.assert_allclose(image_coordinates(n, w, h), xy, rtol=0, atol=1e-9)
    # x spans [-1, 1] over the width; y is scaled by the WIDTH too, spanning [-h/w, h/w]
    corners = normalize_screen_coordinates(np.array([[0.0, 0.0], [w, h]]), w, h)
    np.testing.assert_allclose(corners, [[-1, -h / w], [1, h / w]])


def test_missing_points_filled_and_confidence_kept():
    kp = np.zeros((5, 3, 2))
    kp[:, 0] = np.arange(5)[:, None]
    kp[2, 0] = np.nan                 # gap: interpolated
    kp[:, 1] = 7.0
    kp[:, 2] = np.nan                 # never seen: sits at the others' mean, confidence 0
    x = prepare_input(kp, np.full((5, 3), 0.9), (100, 100), in_features=3)
    assert np.isfinite(x).all()
    np.testing.assert_allclose(x[2, 0, :2], normalize_screen_coordinates(np.array([2.0, 2.0]), 100, 100))
    assert x[2, 0, 2] == 0 and x[0, 0, 2] == pytest.approx(0.9) and (x[:, 2, 2] == 0).all()


def _model(causal=False, widths=(3, 3, 3), seed=0, channels=32):
    torch.manual_seed(seed)
    m = TemporalModel(17, 2, 17, widths, causal=causal, channels=channels).eval()
    with torch.no_grad():
        for bn in [m.expand_bn, *m.layers_bn]:
            bn.running_var.uniform_(0.5, 1.5)
            bn.running_mean.normal_(0, 0.1)
    return m


H36M = LIFTER_REGISTRY["videopose3d-243"].output_names


def test_flip_augmentation_is_mirror_symmetric():
    m = _model()
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.3, size=(30, 17, 2)).astype(np.float32)
    fin = get_layout("coco17").flip_index
    fout = mirror_permutation(H36M)
    mirrored = x[:, fin].copy()
    mirrored[..., 0] *= -1
    y = run_lifter(m, x, input_flip=fin, output_flip=fout)
    ym = run_lifter(m, mirrored, input_flip=fin, output_flip=fout)
    back = ym[:, fout].copy()
    back[..., 0] *= -1
    np.testing.assert_allclose(back, y, atol=1e-5)
    # without the flip test the network alone is not symmetric (so the check above can fail)
    y0 = run_lifter(m, x, flip=False)
    ym0 = run_lifter(m, mirrored, flip=False)[:, fout]
    ym0[..., 0] *= -1
    assert np.abs(ym0 - y0).max() > 1e-3
    assert np.abs(y[:, 0]).max() == 0    # root-relative: pelvis exactly at the origin


@pytest.mark.parametrize("causal", [False, True])
def test_padding_chunking_and_causality_over_sequences(causal):
    m = _model(causal=causal)
    rng = np.random.default_rng(2)
    x = rng.normal(0, 0.3, size=(70, 17, 2)).astype(np.float32)
    whole = run_lifter(m, x, flip=False, chunk=10_000)
    assert whole.shape == (70, 17, 3)
    np.testing.assert_allclose(run_lifter(m, x, flip=False, chunk=7), whole, atol=1e-5)
    # the edge padding replicates the first/last frame: a sequence of one frame works
    assert run_lifter(m, x[:1], flip=False).shape == (1, 17, 3)
    x2 = x.copy()
    x2[41:] += 0.5
    y2 = run_lifter(m, x2, flip=False)
    if causal:
        np.testing.assert_array_equal(y2[:41], whole[:41])
    else:
        assert np.abs(y2[40] - whole[40]).max() > 1e-4


# ----------------------------------------------------------------------------- end to end
def _walk_pose2d(size=(1280, 720), fov=60.0) -> Pose2D:
    s = read_trc(WALK).to_metres()
    names = get_layout("coco17").names
    lab = np.stack([np.mean([s[m] for m in COCO_FROM[n]], axis=0) for n in names], axis=1)
    lab = lab[np.isfinite(lab).all(axis=(1, 2))][:60]
    centre = lab[:, 11:13].mean(axis=(0, 1))
    pos = centre + np.array([0.0, 1.2 - centre[1], 4.0])
    fwd = centre - pos
    fwd[1] = 0
    fwd /= np.linalg.norm(fwd)
    R = np.stack([np.cross(fwd, [0, 1, 0]), [0, -1, 0], fwd])
    cam = (lab - pos) @ R.T
    f = 0.5 * max(size) / math.tan(math.radians(fov) / 2)
    uv = np.stack([f * cam[..., 0] / cam[..., 2] + size[0] / 2,
                   f * cam[..., 1] / cam[..., 2] + size[1] / 2], axis=-1)
    conf = np.full(uv.shape[:2], 0.9)
    t = np.arange(len(uv)) / 60.0
    return Pose2D.from_arrays(np.arange(len(uv)), t, [4], uv[None], conf[None], "coco17",
                              video_size=size, source="synthetic walk")


def _cache_random_vp3d(tmp_path: Path, channels: int | None = None) -> Path:
    """Put a random-weight official-layout videopose3d-243 checkpoint into a cache folder."""
    spec = LIFTER_REGISTRY["videopose3d-243"]
    if channels:
        spec = dataclasses.replace(spec, channels=channels)
    src = tmp_path / "pretrained_h36m_detectron_coco.bin"
    torch.save({"model_pos": build_lifter(spec).state_dict(), "epoch": 1}, src)
    cache = tmp_path / "kcache"
    with pytest.warns(UserWarning, match="pinned"):
        fetch(dataclasses.replace(spec, url=src.as_uri()), cache=lifter_cache(cache / "weights"),
              trust=True)
    return cache


def test_lift_pose2d_shapes_and_world(tmp_path):
    pose = _walk_pose2d()
    spec = dataclasses.replace(LIFTER_REGISTRY["videopose3d-243"], channels=64)
    torch.manual_seed(0)
    model = build_lifter(spec).eval()
    res = lift_pose2d(pose, model=model, spec=spec, height=1.8)
    assert res.series.data.shape == (60, 17, 3) and res.series.units == "m"
    assert res.subject == 4
    assert set(res.markers.names) <= set(KEYPOINT_MARKERS)
    assert set(res.markers.names) == {MARKER_FOR[n] for n in H36M if n in MARKER_FOR}
    c = res.markers.confidence
    assert c.shape == (60, len(res.markers.names)) and (c >= 0).all() and (c <= 1).all()
    # world frame: Y is the height above the fitted floor plane (random weights: this checks
    # the frame bookkeeping; the floor's accuracy is test_trajectory's job)
    wt = res.trajectory
    np.testing.assert_allclose(res.series.data[..., 1], wt.floor.height(wt.points_camera), atol=1e-9)
    s = wt.summary()
    np.testing.assert_allclose(res.trajectory.rotation @ res.trajectory.rotation.T, np.eye(3), atol=1e-9)
    assert "default field of view 60" in s["focal_source"]


def test_kinevid_lift_command_writes_trc_and_confidence(tmp_path, monkeypatch, capsys):
    cache = _cache_random_vp3d(tmp_path)
    monkeypatch.setenv("KINEVID_CACHE", str(cache))
    pose_path, _ = _walk_pose2d().write(tmp_path / "pose2d.npz")
    parser = argparse.ArgumentParser()
    add_lift_parser(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["lift", str(pose_path), "-o", str(out), "--lifter", "videopose3d-243",
                              "--height", "1.8", "--fov", "60"])
    assert args.func(args) == 0
    text = capsys.readouterr()
    assert "NON-COMMERCIAL" in text.err and "wrote" in text.out
    trc = read_trc(out / "keypoints3d.trc")
    assert trc.units == "m" and len(trc) == 60
    assert set(trc.names) <= set(KEYPOINT_MARKERS) and {"RHip", "RKnee", "RAnkle", "Hip"} <= set(trc.names)
    assert np.isfinite(trc.data).all()
    header = (out / "keypoints3d_confidence.csv").read_text().splitlines()[0].split(",")
    assert header == ["time"] + list(trc.names)
    with np.load(out / "keypoints3d.npz", allow_pickle=False) as z:
        assert z["points"].shape == (60, 17, 3) and z["rotation"].shape == (3, 3)


def test_lift_refuses_a_layout_without_the_needed_points(tmp_path):
    pose = _walk_pose2d()
    spec = LIFTER_REGISTRY["kinevid"]   # needs feet, which COCO-17 lacks
    spec = dataclasses.replace(spec, channels=16, filter_widths=(3,))
    from opensim_bridge.errors import InputError
    with pytest.raises(InputError, match="never provide.*heel"):
        lift_pose2d(pose, model=build_lifter(spec).eval(), spec=spec)


def _halpe26_walk() -> Pose2D:
    """The walk in HALPE-26: COCO-17 plus a head top above the nose and feet around the
    ankles (their exact place does not matter to what is tested)."""
    coco = _walk_pose2d()
    uv, conf = coco.tracks[4].data, coco.tracks[4].weights()
    from inference.layouts import convert
    kp, c = convert(uv, conf, "coco17", "halpe26")
    h = get_layout("halpe26")
    kp[:, h.index("head_top")] = kp[:, h.index("nose")] - [0.0, 15.0]
    for side in ("left", "right"):
        ankle = kp[:, h.index(f"{side}_ankle")]
        for part, off in (("heel", (-6.0, 8.0)), ("big_toe", (14.0, 10.0)),
                          ("small_toe", (12.0, 11.0))):
            kp[:, h.index(f"{side}_{part}")] = ankle + off
    c = np.full(kp.shape[:2], 0.9)
    return Pose2D.from_arrays(coco.frames, coco.time, [4], kp[None], c[None], "halpe26",
                              video_size=coco.video_size, source="synthetic walk")


def test_lift_takes_a_detector_kind_its_lifter_was_trained_for(recwarn):
    # a lifter with hand inputs refuses 2D that never has hands (four points missing) unless
    # it was trained on such detections (meta 'input_sources'); then it lifts without a warning
    from opensim_bridge.errors import InputError
    pose = _halpe26_walk()
    base = dataclasses.replace(LIFTER_REGISTRY["kinevid"], input_layout="halpe26_hands",
                               channels=16, filter_widths=(3,))
    model = build_lifter(base).eval()
    with pytest.raises(InputError, match="never provide left_index, right_index"):
        lift_pose2d(pose, model=model, spec=base)
    hands = ["left_index", "right_index", "left_pinky", "right_pinky"]
    spec = dataclasses.replace(base, input_sources={"halpe26": hands})
    res = lift_pose2d(pose, model=model, spec=spec)
    assert res.series.data.shape[0] == len(pose.time) and np.isfinite(res.series.data).all()
    assert not [w for w in recwarn if "never provide" in str(w.message)]
    # a set the training never left out still warns
    spec = dataclasses.replace(base, input_sources={"halpe26": hands[:2]})
    pose.tracks[4].data[:, get_layout("halpe26").index("head_top")] = np.nan
    with pytest.raises(InputError, match="never provide"):
        lift_pose2d(pose, model=model, spec=spec)
