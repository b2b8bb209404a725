"""The person-window lifter input (models.lifter_input) and window-by-window inference.

Generated keypoint windows; a randomly initialised network in kinevid's layout (HALPE-26 plus
the context row, confidence channel) stands in for trained weights: what is tested is that
training and inference build the same numbers and that the flip test stays exact.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inference.layouts import get_layout
from models import lifter_data as D
from models.lift_infer import fill_missing, lift_sequence, mirror_permutation, run_window_lifter
from models.lifter_input import PERSON_WINDOW, SIZE_GAIN, extra_rows, person_window, window_size
from models.lifter_registry import LIFTER_REGISTRY, build_lifter

RF = 9


def _walk_2d(T=40, J=len(D.INPUT_NAMES), seed=0):
    """A plausible moving 2D skeleton: random pose around a root drifting across the image."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 80, (J, 2))
    base[D.INPUT_ROOT_INDEX] = 0
    t = np.arange(T)[:, None, None]
    wiggle = 10 * np.sin(0.3 * t + rng.uniform(0, 6, (1, J, 1)))
    root = np.stack([400 + 6 * np.arange(T), 500 + 2 * np.sin(0.2 * np.arange(T))], -1)
    return root[:, None, :] + base[None] + wiggle, rng.uniform(0.5, 1, (T, J))


def test_unknown_normalisation_is_refused():
    assert extra_rows("screen_width") == 0 and extra_rows(PERSON_WINDOW) == 1
    with pytest.raises(ValueError, match="unknown lifter input normalisation"):
        extra_rows("pixels")


def test_window_is_centred_on_the_centre_root_and_scaled_by_its_size():
    xy, conf = _walk_2d(T=RF)
    x = person_window(xy[None], conf[None], 1920, 1080, D.INPUT_ROOT_INDEX)
    J = len(D.INPUT_NAMES)
    assert x.shape == (1, RF, J + 1, 3) and x.dtype == np.float32
    s = window_size(xy[None], D.INPUT_ROOT_INDEX)[0]
    np.testing.assert_allclose(x[0, RF // 2, D.INPUT_ROOT_INDEX, :2], 0, atol=1e-6)
    np.testing.assert_allclose(x[0, :, :J, :2] * s + xy[RF // 2, D.INPUT_ROOT_INDEX],
                               xy, atol=1e-3)
    np.testing.assert_allclose(x[0, :, :J, 2], conf, atol=1e-6)
    # the context row: centre root in VideoPose3D screen coordinates, then the size
    root = xy[RF // 2, D.INPUT_ROOT_INDEX]
    np.testing.assert_allclose(x[0, :, J], np.broadcast_to(
        [root[0] / 1920 * 2 - 1, root[1] / 1920 * 2 - 1080 / 1920, SIZE_GAIN * s / 1920],
        (RF, 3)), atol=1e-6)


def test_pose_rows_do_not_depend_on_image_scale_or_position():
    """A person filmed twice as large, elsewhere in the frame, gives the same pose rows:
    only the context row changes."""
    xy, conf = _walk_2d(T=RF, seed=1)
    a = person_window(xy[None], conf[None], 1920, 1080, D.INPUT_ROOT_INDEX)
    b = person_window((2.0 * xy + [123.0, -45.0])[None], conf[None], 1920, 1080, D.INPUT_ROOT_INDEX)
    J = len(D.INPUT_NAMES)
    np.testing.assert_allclose(a[..., :J, :], b[..., :J, :], atol=1e-5)
    assert b[0, 0, J, 2] == pytest.approx(2 * a[0, 0, J, 2], rel=1e-6)


def test_size_ignores_a_single_bad_frame():
    xy, conf = _walk_2d(T=RF, seed=2)
    s0 = window_size(xy[None], D.INPUT_ROOT_INDEX)[0]
    bad = xy.copy()
    bad[3] = bad[3, D.INPUT_ROOT_INDEX] + 20 * (bad[3] - bad[3, D.INPUT_ROOT_INDEX])
    assert window_size(bad[None], D.INPUT_ROOT_INDEX)[0] == pytest.approx(s0, rel=0.15)


def test_training_pairs_use_the_same_input_as_inference():
    """make_pairs' person-window input, fed window by window, equals what inference builds
    from the same noisy pixels; targets in units of height are the metre targets over H."""
    rng = np.random.default_rng(4)
    world = rng.normal(0, 0.3, (6, RF, 30, 3)) + [0, 1.0, 0]
    H = rng.uniform(1.5, 1.9, 6)
    kw = dict(sigma=0.02, spec=D.NoiseSpec(sigma=0.02), return_2d=True)
    x, y, (uv, cf) = D.make_pairs(np.random.default_rng(5), world, H, **kw,
                                  normalisation=PERSON_WINDOW, output_units="height")
    x_m, y_m, _ = D.make_pairs(np.random.default_rng(5), world, H, **kw)
    np.testing.assert_allclose(y * H[:, None, None], y_m, atol=1e-5)
    cams = D.random_cameras(np.random.default_rng(5), world[:, RF // 2, D.ROOT_INDEX], H)
    for i in range(len(world)):
        conf = np.where(np.isfinite(uv[i]).all(-1), cf[i], 0.0)
        ref = person_window(fill_missing(uv[i])[None], conf[None], cams.w[i], cams.h[i],
                            D.INPUT_ROOT_INDEX)
        np.testing.assert_allclose(x[i], ref[0], atol=1e-5)
    assert x_m.shape[2] == len(D.INPUT_NAMES) and x.shape[2] == len(D.INPUT_NAMES) + 1


def _net(seed=0):
    torch.manual_seed(seed)
    spec = dataclasses.replace(LIFTER_REGISTRY["kinevid"], filter_widths=(3, 3), channels=32,
                               normalisation=PERSON_WINDOW, output_units="height",
                               input_root_index=D.INPUT_ROOT_INDEX,
                               output_names=LIFTER_REGISTRY["kinevid"].output_names)
    model = build_lifter(spec, dropout=0.0)
    # non-trivial BatchNorm statistics, as a trained network has
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
    return model.eval(), spec


def test_window_inference_equals_the_network_on_each_window():
    model, spec = _net()
    xy, conf = _walk_2d(T=30, seed=5)
    out = run_window_lifter(model, xy, conf, (1920, 1080), input_root_index=D.INPUT_ROOT_INDEX,
                            flip=False, root_index=None, chunk=7)
    assert out.shape == (30, model.num_joints_out, 3)
    # frame 12 by hand: its window, normalised on its own, through the sequence model
    win = xy[12 - RF // 2: 12 + RF // 2 + 1][None]
    x = person_window(win, conf[12 - RF // 2: 12 + RF // 2 + 1][None], 1920, 1080,
                      D.INPUT_ROOT_INDEX)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))[0, 0].numpy()
    np.testing.assert_allclose(out[12], ref, atol=1e-5)
    # ends are padded by repeating the end frames
    win0 = np.concatenate([np.repeat(xy[:1], RF // 2, 0), xy[:RF // 2 + 1]])[None]
    c0 = np.concatenate([np.repeat(conf[:1], RF // 2, 0), conf[:RF // 2 + 1]])[None]
    with torch.no_grad():
        ref0 = model(torch.from_numpy(person_window(win0, c0, 1920, 1080,
                                                    D.INPUT_ROOT_INDEX)))[0, 0].numpy()
    np.testing.assert_allclose(out[0], ref0, atol=1e-5)


def test_window_flip_test_is_mirror_symmetric_and_scaled_by_height():
    model, spec = _net(1)
    lay = get_layout(spec.input_layout)
    xy, conf = _walk_2d(T=20, seed=6)
    W = 1920
    mirrored = xy[:, lay.flip_index].copy()
    mirrored[..., 0] = W - mirrored[..., 0]
    a = lift_sequence(model, spec, xy, conf, (W, 1080), height=1.8)
    b = lift_sequence(model, spec, mirrored, conf[:, lay.flip_index], (W, 1080), height=1.8)
    perm = mirror_permutation(spec.output_names)
    b_back = b[:, perm].copy()
    b_back[..., 0] *= -1
    np.testing.assert_allclose(a, b_back, atol=1e-5)
    np.testing.assert_allclose(a[:, spec.root_index], 0, atol=1e-7)
    c = lift_sequence(model, spec, xy, conf, (W, 1080), height=0.9)
    np.testing.assert_allclose(c, a / 2, atol=1e-6)
    with pytest.raises(ValueError, match="height"):
        lift_sequence(model, spec, xy, conf, (W, 1080))
