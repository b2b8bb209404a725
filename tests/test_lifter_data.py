"""Synthetic 2D/3D pairs for kinevid's lifter: shapes, exact projection, mirroring, split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import lifter_data as D

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    # OpenSim trials and the bvh11 clips only: seconds, not the CMU archive
    return D.build_clips(DATA, tmp_path_factory.mktemp("lifter_cache"), include_cmu=False,
                         log=lambda s: None)


def test_layout_tables():
    assert len(D.INPUT_NAMES) == 30 and len(D.OUTPUT_MARKERS) == 30
    from inference.layouts import get_layout
    assert tuple(get_layout(D.INPUT_LAYOUT).native_names) == D.INPUT_NAMES
    # HALPE-26 first, so a lifter trained on HALPE-26 alone takes the first 26 rows
    assert tuple(get_layout("halpe26").native_names) == D.INPUT_NAMES[:26]
    np.testing.assert_array_equal(D.input_matrix(D.INPUT_NAMES[:26]), D.INPUT_MATRIX[:26])
    np.testing.assert_allclose(D.INPUT_MATRIX.sum(axis=1), 1.0)
    neck = D.INPUT_NAMES.index("Neck")
    assert D.INPUT_MATRIX[neck, D.OUTPUT_MARKERS.index("RShoulder")] == 0.5
    # every HALPE keypoint but the neck is the built-in marker of the same name
    for i, n in enumerate(D.INPUT_NAMES):
        if n != "Neck":
            assert D.INPUT_MATRIX[i, D.OUTPUT_MARKERS.index(n)] == 1.0


def test_pairs_have_consistent_shapes(clips):
    train, _ = D.split_clips(clips)
    s = D.PairSampler(train, 27, seed=1)
    x, y = s.batch(32)
    assert x.shape == (32, 27, 30, 3) and x.dtype == np.float32
    assert y.shape == (32, 30, 3) and y.dtype == np.float32
    assert np.isfinite(x).all() and np.isfinite(y).all()
    np.testing.assert_allclose(y[:, D.ROOT_INDEX], 0.0, atol=1e-6)
    assert ((x[..., 2] >= 0) & (x[..., 2] <= 1)).all()
    # bodies are 1.5-1.95 m: head top to the lowest foot marker, in any orientation, is in range
    span = np.linalg.norm(y[:, D.OUTPUT_MARKERS.index("Head")]
                          - y[:, D.OUTPUT_MARKERS.index("RAnkle")], axis=-1)
    assert (span > 0.9).all() and (span < 2.0).all()


def test_clips_are_upright_unit_height_and_face_x(clips):
    idx = D.OUTPUT_MARKERS.index
    for c in clips:
        m = c.markers
        head = m[:, idx("Head"), 1]
        assert 0.85 < np.median(head) < 1.15, c.name
        # right is +z: right hip has larger z than left hip (in the pelvis frame, mostly)
        assert np.median(m[:, idx("RHip"), 2] - m[:, idx("LHip"), 2]) != 0
        feet = m[:, [idx("RHeel"), idx("LHeel")], 1].min(axis=1)
        assert abs(np.percentile(feet, 5)) < 0.05, c.name


def test_projection_of_known_points_is_exact():
    # a camera 4 m along -z of the world origin, looking along +z, no roll, 1000 px focal:
    # with y up, the image's right is world -x (a proper rotation, det +1)
    cam = D.Cameras(R=np.array([[[-1.0, 0, 0], [0, -1, 0], [0, 0, 1]]]),
                    C=np.array([[0.0, 1.0, -4.0]]), f=np.array([1000.0]),
                    w=np.array([1920.0]), h=np.array([1080.0]))
    pts = np.array([[[0.0, 1.0, 0.0], [0.5, 2.0, 1.0], [-1.0, 0.0, 4.0]]])
    uv, Xc = D.project(pts, cam)
    expected = [[960.0, 540.0], [960 - 1000 * 0.5 / 5, 540 - 1000 * 1.0 / 5],
                [960 + 1000 * 1 / 8, 540 + 1000 * 1 / 8]]
    np.testing.assert_allclose(uv[0], expected, atol=1e-9)
    np.testing.assert_allclose(Xc[0, 1], [-0.5, -1.0, 5.0], atol=1e-12)
    assert np.isclose(np.linalg.det(cam.R[0]), 1.0)
    # look_at builds the same rotation
    R = D.look_at(np.array([[0.0, 1.0, -4.0]]), np.array([[0.0, 1.0, 0.0]]), np.array([0.0]))
    np.testing.assert_allclose(R, cam.R, atol=1e-12)


def test_random_cameras_put_people_in_view():
    rng = np.random.default_rng(0)
    root = np.column_stack([rng.uniform(-3, 3, 200), np.full(200, 0.95), rng.uniform(-3, 3, 200)])
    cams = D.random_cameras(rng, root, np.full(200, 1.75))
    uv, Xc = D.project(root[:, None], cams)
    assert (Xc[..., 2] > 2.0).all()
    assert ((uv[:, 0, 0] > 0) & (uv[:, 0, 0] < cams.w)).mean() > 0.95
    fov = np.degrees(2 * np.arctan(cams.w / 2 / cams.f))
    assert fov.min() >= 40 - 1e-6 and fov.max() <= 80 + 1e-6


def test_mirroring_swaps_sides_and_mirrors_z(clips):
    m = clips[0].markers[:5].astype(float)
    mm = D.mirror_markers(m)
    i, j = D.OUTPUT_MARKERS.index("RHeel"), D.OUTPUT_MARKERS.index("LHeel")
    np.testing.assert_allclose(mm[:, j], m[:, i] * [1, 1, -1])
    np.testing.assert_allclose(mm[:, i], m[:, j] * [1, 1, -1])
    k = D.OUTPUT_MARKERS.index("Nose")
    np.testing.assert_allclose(mm[:, k], m[:, k] * [1, 1, -1])
    np.testing.assert_allclose(D.mirror_markers(mm), m)


@pytest.mark.parametrize("part", ["arms", "head"])
def test_part_swap_moves_only_the_part_keeping_lengths_and_the_donor_pose(clips, part):
    chains = D.ARM_CHAINS if part == "arms" else (D.HEAD_CHAIN,)
    i = D.OUTPUT_MARKERS.index
    body = clips[0].markers[:40].astype(float)
    donor = clips[-1].markers[:40].astype(float)
    # turn the donor's whole body: the arm pose relative to the trunk must not change
    c, s_ = np.cos(0.7), np.sin(0.7)
    donor = donor @ np.array([[c, 0, s_], [0, 1, 0], [-s_, 0, c]])
    out = D.swap_parts(body, donor, chains)
    moved = {b for chain in chains for _, b in chain}
    rest = [k for k, n in enumerate(D.OUTPUT_MARKERS) if n not in moved]
    np.testing.assert_array_equal(out[:, rest], body[:, rest])
    assert np.abs(out - body).max() > 0.02                 # the part did move
    fo, fd = D._trunk_frames(out), D._trunk_frames(donor)
    for chain in chains:
        for a, b in chain:
            seg = lambda m: m[:, i(b)] - m[:, i(a)]
            np.testing.assert_allclose(np.linalg.norm(seg(out), axis=-1),
                                       np.linalg.norm(seg(body), axis=-1), atol=1e-9)
            local = lambda f, v: np.einsum("tji,tj->ti", f, v / np.linalg.norm(v, axis=-1)[:, None])
            np.testing.assert_allclose(local(fo, seg(out)), local(fd, seg(donor)), atol=1e-9)
    np.testing.assert_allclose(D.swap_parts(body, body, chains), body, atol=1e-12)


def test_held_out_trials_never_in_training(clips):
    train, held = D.split_clips(clips)
    assert held and train
    assert not {c.group for c in train} & D.HELD_OUT_GROUPS
    assert {c.group for c in held} <= D.HELD_OUT_GROUPS
    # the same raw walk processed with three models is one trial: all three are held out
    walk = [c for c in clips if c.group == "opensim:subject01_walk1"]
    assert len(walk) == 6 and all(c in held for c in walk)
    s = D.PairSampler(train, 9, seed=0)
    assert all(s.clips[i].group not in D.HELD_OUT_GROUPS for i in range(len(s.clips)))


def test_noise_drops_low_confidence_and_fills_like_inference():
    from models.lift_infer import fill_missing
    rng = np.random.default_rng(3)
    uv = rng.uniform(100, 900, (4, 9, 26, 2))
    spec = D.NoiseSpec(sigma=0.02, drop_below=0.5)
    noisy, conf = D.add_noise(rng, uv, spec)
    dropped = ~np.isfinite(noisy).all(-1)
    assert dropped.any() and (conf[dropped] == 0).all() and (conf[~dropped] >= 0.5).all()
    x = D.model_input(noisy, conf, np.full(4, 1920.0), np.full(4, 1080.0))
    ref = np.stack([fill_missing(n) for n in noisy]) / 1920 * 2 - np.array([1.0, 1080 / 1920])
    np.testing.assert_allclose(x[..., :2], ref, atol=1e-5)
    # exact 2D at noise 0
    clean, c0 = D.add_noise(rng, uv, D.NoiseSpec(sigma=0.0, bias=0.0, outlier_rate=0.0,
                                                 drop_below=-1, conf_noise=False))
    np.testing.assert_array_equal(clean, uv)
    assert (c0 == 1).all()


def test_builtin_fk_scales_with_height():
    # the built-in model is built from fractions of height: scaling a unit-height clip is exact
    from opensim_bridge.builtin_model import build_model, marker_positions
    coords = {"hip_flexion_r": 0.4, "knee_angle_r": 0.7, "arm_flex_l": 0.3, "lumbar_bending": 0.1}
    unit = D.opensim_markers({k: np.array([v]) for k, v in coords.items()}, "f")[0]
    direct = marker_positions(build_model(1.6, 60.0, "f"), coords)
    got = np.array([direct[n] for n in D.OUTPUT_MARKERS])
    np.testing.assert_allclose(unit * 1.6, got, atol=1e-9)


def test_bvh_fk_matches_offsets_at_rest():
    bvh = D.read_bvh(DATA / "bvh11" / "resources" / "131_01.bvh")
    pos, rot = D.bvh_fk(bvh, np.zeros((1, bvh.motion.shape[1])))
    i = bvh.names.index("LeftKnee")
    p = bvh.parents[i]
    np.testing.assert_allclose(pos[0, i] - pos[0, p], bvh.offsets[i])
    np.testing.assert_allclose(rot[0, i], np.eye(3))


def test_edge_windows_are_padded_like_inference(clips):
    """With edge_fraction, windows centred near a clip's end repeat its first or last frame,
    as inference pads a sequence; without, every window lies inside its clip."""
    train, _ = D.split_clips(clips)

    def repeats(w):
        # frames equal to their neighbour (a padded run), counted at either end of the window
        same = np.all(np.isclose(w[:, 1:], w[:, :-1], atol=1e-12), axis=(2, 3))
        return same[:, 0] | same[:, -1]

    inside = D.PairSampler(train, 27, seed=3, speed_range=(1.0, 1.0), mirror=False)
    w, _ = inside.windows(400, fps=30.0)
    assert not repeats(w).any()
    edge = D.PairSampler(train, 27, seed=3, speed_range=(1.0, 1.0), mirror=False,
                         edge_fraction=1.0)
    w, _ = edge.windows(400, fps=30.0)
    r = repeats(w)
    assert r.mean() > 0.9                  # nearly all (a centre exactly at span pads nothing)
    same = np.all(np.isclose(w[:, 1:], w[:, :-1], atol=1e-12), axis=(2, 3))
    assert same[:, 0].any() and same[:, -1].any()          # both ends occur
    mixed = D.PairSampler(train, 27, seed=3, speed_range=(1.0, 1.0), mirror=False,
                          edge_fraction=0.1)
    w, _ = mixed.windows(2000, fps=30.0)
    assert 0.05 < repeats(w).mean() < 0.15


def test_batch_stream_gives_the_serial_batches_in_order(clips):
    """Training makes its batches in a forked process; they must be the very batches (and
    order) a serial loop over the same seeded sampler draws, so a training run repeats."""
    from models.train_lifter import BatchStream

    train, _ = D.split_clips(clips)
    serial = D.PairSampler(train, 27, seed=5)
    want = [serial.batch(16) for _ in range(4)]
    stream = BatchStream(D.PairSampler(train, 27, seed=5), 16, 4, ahead=2)
    try:
        got = [stream.next() for _ in range(4)]
        with pytest.raises(StopIteration):
            stream.next()
    finally:
        stream.close()
    for (xw, yw), (xg, yg) in zip(want, got):
        np.testing.assert_array_equal(xg, xw)
        np.testing.assert_array_equal(yg, yw)


def test_training_repeats_exactly_and_writes_a_loadable_lifter(clips, tmp_path):
    """A few steps of the real training loop (bfloat16 products, forked batch maker) twice from
    one seed: identical weights; the file loads strictly in PyTorch and in numpy alike."""
    import torch

    from models.lifter_numpy import load_numpy_lifter
    from models.lifter_registry import load_lifter
    from models.train_lifter import DEFAULTS, train

    cfg = dict(DEFAULTS, steps=6, batch=16, channels=16, bn_batches=2, seed=3)
    metas = [train(cfg, tmp_path / f"run{i}.pt", log=lambda s: None, clips=clips)
             for i in range(2)]
    a, b = (torch.load(tmp_path / f"run{i}.pt", weights_only=True)["model_pos"] for i in range(2))
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert metas[0]["train"]["precision"] == "bf16" and metas[0]["train_device"] == "cpu"
    model, spec = load_lifter(tmp_path / "run0.pt", quiet=True)
    net, spec_n = load_numpy_lifter(tmp_path / "run0.pt")
    assert spec.normalisation == spec_n.normalisation == "person_window"
    assert model.channels == 16 and net.channels == 16



def test_trials_without_arms_mark_them_unmeasured(clips, tmp_path):
    arms = [D.OUTPUT_MARKERS.index(f"{s}{p}") for s in "RL"
            for p in ("Elbow", "Wrist", "Index", "Pinky")]
    for c in clips:
        if c.group == "opensim:subject01_walk1":    # gait2354/2392/10dof: no arms
            assert not c.measured[arms].any() and c.measured.sum() == 30 - len(arms), c.name
        elif c.source == "opensim":
            assert c.measured.all(), c.name
    # the flag survives the cache
    D._save_clips(tmp_path / "clips.npz", clips)
    again = D._load_clips(tmp_path / "clips.npz")
    for a, b in zip(clips, again):
        assert (a.measured is None) == (b.measured is None)
        if a.measured is not None:
            np.testing.assert_array_equal(a.measured, b.measured)


def test_fast_dropout_is_dropout():
    import torch

    from models.train_lifter import FastDropout, build_model, fast_dropout, DEFAULTS
    torch.manual_seed(0)
    d = FastDropout(0.25)
    x = torch.ones(64, 512, 9, requires_grad=True)
    y = d(x)
    kept = y != 0
    # zero with probability p, the rest scaled by 1/(1-p): the mean is kept
    assert abs(1.0 - kept.float().mean().item() - 0.25) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)   # the same mask backwards
    d.eval()
    assert d(x) is x
    # swapped into the lifter, it changes no parameter or state-dict key
    model = build_model(dict(DEFAULTS))
    keys = {k: v.shape for k, v in model.state_dict().items()}
    fast_dropout(model)
    assert {k: v.shape for k, v in model.state_dict().items()} == keys
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(type(m) is FastDropout and m.p == DEFAULTS["dropout"] for m in drops)


def test_detector_kinds_match_the_layout_conversions():
    # each INPUT_SOURCES pattern is what converting that detector's layout leaves out
    from inference.layouts import get_layout, mapping
    lay = get_layout(D.INPUT_LAYOUT)
    for kind, layout in (("halpe26", "halpe26"), ("wholebody", "coco_wholebody133"),
                         ("blazepose", "blazepose33"), ("body25", "body25")):
        missing = {lay.native_names[j] for j, m in enumerate(mapping(layout, D.INPUT_LAYOUT))
                   if m is None}
        assert missing == set(D.INPUT_SOURCES[kind]), kind
    assert D.INPUT_SOURCES["all"] == ()


def test_sampler_draws_windows_without_a_detectors_points(clips):
    train, _ = D.split_clips(clips)
    kinds = {"blazepose": 0.5, "halpe26": 0.5}
    s = D.PairSampler(train, 27, seed=4, input_sources=kinds)
    x, _ = s.batch(400)
    gone = (x[:, :, :len(D.INPUT_NAMES), 2] == 0).all(axis=1)          # (B, J): never seen
    head, toes = D.INPUT_NAMES.index("Head"), D.INPUT_NAMES.index("LSmallToe")
    hands = [D.INPUT_NAMES.index(n) for n in ("LIndex", "RIndex", "LPinky", "RPinky")]
    blaze = gone[:, head] & gone[:, toes]
    halpe = gone[:, hands].all(axis=1)
    # about half of each, never both, and a missing point sits where inference puts it:
    # on the mean of the points seen in that frame (relative to the window's root)
    assert 140 < blaze.sum() < 260 and 140 < halpe.sum() < 260
    assert not (blaze & halpe).any() and (blaze | halpe).all()
    b = np.flatnonzero(blaze)[0]
    seen = ~gone[b]
    seen[head] = seen[toes] = seen[D.INPUT_NAMES.index("RSmallToe")] = False
    centre = x[b, :, :len(D.INPUT_NAMES), :2][:, seen].mean(axis=1)
    # (the mean of the seen points in pixels, then normalised: the same point)
    np.testing.assert_allclose(x[b, :, head, :2], centre, atol=0.05)
    with pytest.raises(ValueError, match="unknown input sources"):
        D.PairSampler(train, 27, input_sources={"openpose": 1.0})


def test_group_cap_balances_subjects(clips):
    train, _ = D.split_clips(clips)
    groups = np.array([c.group for c in train])
    dur = {g: sum(min(c.frames / c.fps, 20.0) for c in train if c.group == g)
           for g in set(groups)}
    cap = 6.0
    assert max(dur.values()) > cap > min(dur.values())     # the cap binds for some groups only
    p = D.PairSampler(train, 27, group_cap_s=cap).p
    share = {g: p[groups == g].sum() for g in dur}
    total = sum(min(d, cap) for d in dur.values())
    for g, d in dur.items():
        assert share[g] == pytest.approx(min(d, cap) / total), g
    # within a group the clips keep their duration weights
    big = max(dur, key=dur.get)
    q = D.PairSampler(train, 27).p
    np.testing.assert_allclose(p[groups == big] / p[groups == big].sum(),
                               q[groups == big] / q[groups == big].sum())
