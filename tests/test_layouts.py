"""Keypoint layouts: sizes, orders, edges, flip pairs, conversions."""
from __future__ import annotations

import numpy as np
import pytest

from inference.layouts import DERIVED, LAYOUTS, convert, get_layout, mapping

SIZES = {"coco17": 17, "coco_wholebody133": 133, "halpe26": 26, "halpe26_hands": 30,
         "blazepose33": 33, "h36m17": 17, "body25": 25, "body25b": 25}


def test_sizes_and_aliases():
    assert {k: v.n for k, v in LAYOUTS.items()} == SIZES
    assert get_layout("COCO-17") is get_layout("coco") is LAYOUTS["coco17"]
    assert get_layout("BODY_25B").name == "body25b"
    assert get_layout("COCO_WholeBody").name == "coco_wholebody133"
    with pytest.raises(ValueError, match="unknown keypoint layout"):
        get_layout("body99")


@pytest.mark.parametrize("name", sorted(SIZES))
def test_names_unique_edges_valid(name):
    lay = LAYOUTS[name]
    assert len(set(lay.names)) == lay.n and len(lay.native_names) == lay.n
    assert lay.edges, "a layout needs edges to be drawn"
    for i, j in lay.edges:
        assert 0 <= i < lay.n and 0 <= j < lay.n and i != j
    # every body point is reachable in the drawing: no isolated keypoint except face points
    used = {i for e in lay.edges for i in e}
    assert all(i in used for i in range(lay.n)), [lay.names[i] for i in range(lay.n) if i not in used]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_flip_pairs_are_an_involution_mapping_left_to_right(name):
    lay = LAYOUTS[name]
    p = lay.flip_index
    np.testing.assert_array_equal(p[p], np.arange(lay.n))
    for i, n in enumerate(lay.names):
        if n.startswith("left_"):
            assert lay.names[p[i]] == "right_" + n[5:]
        elif n.startswith("right_"):
            assert lay.names[p[i]] == "left_" + n[6:]
        elif not n.startswith("face_"):
            assert p[i] == i, f"{n} has no side but is flipped"
    flipped = {i for pair in lay.flip_pairs for i in pair}
    assert len(flipped) == 2 * len(lay.flip_pairs)  # each point in at most one pair


def test_official_orders_spot_checks():
    coco = LAYOUTS["coco17"].names
    assert coco[0] == "nose" and coco[5] == "left_shoulder" and coco[16] == "right_ankle"
    wb = LAYOUTS["coco_wholebody133"].names
    assert wb[17:23] == ("left_big_toe", "left_small_toe", "left_heel",
                         "right_big_toe", "right_small_toe", "right_heel")
    assert wb[23] == "face_0" and wb[90] == "face_67"
    assert wb[91] == "left_hand_root" and wb[112] == "right_hand_root" and wb[132] == "right_pinky4"
    b25 = LAYOUTS["body25"].native_names
    assert (b25[1], b25[8], b25[15], b25[24]) == ("Neck", "MidHip", "REye", "RHeel")
    b25b = LAYOUTS["body25b"].native_names
    assert (b25b[1], b25b[17], b25b[18], b25b[19]) == ("LEye", "UpperNeck", "HeadTop", "LBigToe")
    h36m = LAYOUTS["h36m17"].names
    assert (h36m[0], h36m[3], h36m[8], h36m[10], h36m[16]) == ("mid_hip", "right_ankle", "neck", "head",
                                                              "right_wrist")
    blaze = LAYOUTS["blazepose33"].names
    assert (blaze[11], blaze[23], blaze[29], blaze[32]) == ("left_shoulder", "left_hip", "left_heel",
                                                          "right_foot_index")
    halpe = LAYOUTS["halpe26"].native_names
    assert halpe[17:20] == ("Head", "Neck", "Hip") and halpe[24:] == ("LHeel", "RHeel")
    # native names resolve too
    assert LAYOUTS["body25"].index("LHip") == LAYOUTS["body25"].index("left_hip") == 12


def test_face_flip_pairs_mirror_the_68_point_scheme():
    lay = LAYOUTS["coco_wholebody133"]
    p = lay.flip_index
    f0 = lay.index("face_0")
    assert p[f0] == lay.index("face_16")          # jaw ends
    assert p[lay.index("face_36")] == lay.index("face_45")  # outer eye corners
    assert p[lay.index("face_30")] == lay.index("face_30")  # nose tip on the midline


def test_coco_h36m_coco_round_trip_keeps_shared_joints():
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 1000, (4, 17, 2))
    conf = rng.uniform(0.1, 1, (4, 17))
    h, hc = convert(kp, conf, "coco17", "h36m17")
    back, bc = convert(h, hc, "h36m17", "coco17")
    coco, h36m = LAYOUTS["coco17"], LAYOUTS["h36m17"]
    shared = [i for i, n in enumerate(coco.names) if n in h36m.names]
    assert len(shared) == 13  # nose + 12 limb joints
    np.testing.assert_array_equal(back[:, shared], kp[:, shared])
    np.testing.assert_array_equal(bc[:, shared], conf[:, shared])
    lost = [i for i in range(17) if i not in shared]  # eyes and ears
    assert np.isnan(back[:, lost]).all() and (bc[:, lost] == 0).all()


def test_derived_joints_follow_their_formulas():
    rng = np.random.default_rng(1)
    kp = rng.uniform(0, 500, (17, 2))
    conf = rng.uniform(0.2, 1, 17)
    c = LAYOUTS["coco17"]
    h, hc = convert(kp, conf, "coco17", "h36m17")
    H = LAYOUTS["h36m17"]
    mid_hip = (kp[c.index("left_hip")] + kp[c.index("right_hip")]) / 2
    neck = (kp[c.index("left_shoulder")] + kp[c.index("right_shoulder")]) / 2
    np.testing.assert_allclose(h[H.index("mid_hip")], mid_hip)
    np.testing.assert_allclose(h[H.index("neck")], neck)
    np.testing.assert_allclose(h[H.index("spine")], (mid_hip + neck) / 2)
    np.testing.assert_allclose(h[H.index("head")], (kp[c.index("left_eye")] + kp[c.index("right_eye")]) / 2)
    four = [c.index(n) for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")]
    assert hc[H.index("spine")] == conf[four].min()
    # a missing source makes the derived point missing
    kp2 = kp.copy()
    kp2[c.index("left_hip")] = np.nan
    h2, _ = convert(kp2, conf, "coco17", "h36m17")
    assert np.isnan(h2[H.index("mid_hip")]).all() and np.isnan(h2[H.index("spine")]).all()
    assert not np.isnan(h2[H.index("neck")]).any()
    assert set(DERIVED) == {"mid_hip", "neck", "spine", "head", "left_big_toe", "right_big_toe",
                            "left_index", "right_index", "left_pinky", "right_pinky"}


def test_blazepose_foot_index_stands_in_for_the_big_toe():
    b = LAYOUTS["blazepose33"]
    kp = np.random.default_rng(3).uniform(0, 500, (33, 2))
    conf = np.linspace(0.1, 1.0, 33)
    out, oc = convert(kp, conf, "blazepose33", "halpe26")
    h = LAYOUTS["halpe26"]
    for side in ("left", "right"):
        np.testing.assert_array_equal(out[h.index(f"{side}_big_toe")], kp[b.index(f"{side}_foot_index")])
        assert oc[h.index(f"{side}_big_toe")] == conf[b.index(f"{side}_foot_index")]
        assert np.isnan(out[h.index(f"{side}_small_toe")]).all()  # no stand-in for the small toe


def test_hand_knuckles_from_blazepose_and_wholebody():
    # the lifter's input layout takes BlazePose's index/pinky points as they are and
    # COCO-WholeBody's first (MCP) joints of those fingers; HALPE-26 has no hands
    lay = LAYOUTS["halpe26_hands"]
    assert lay.native_names[:26] == LAYOUTS["halpe26"].native_names
    rng = np.random.default_rng(5)
    for src, own in (("blazepose33", "{}_index"), ("coco_wholebody133", "{}_index1")):
        s = LAYOUTS[src]
        kp = rng.uniform(0, 500, (s.n, 2))
        out, _ = convert(kp, np.ones(s.n), src, "halpe26_hands")
        for side in ("left", "right"):
            np.testing.assert_array_equal(out[lay.index(f"{side}_index")],
                                          kp[s.index(own.format(side))])
            np.testing.assert_array_equal(out[lay.index(f"{side}_pinky")],
                                          kp[s.index(own.format(side).replace("index", "pinky"))])
    out, conf = convert(np.zeros((26, 2)), np.ones(26), "halpe26", "halpe26_hands")
    assert np.isnan(out[26:]).all() and (conf[26:] == 0).all()
    # mirror pairs: left and right knuckles swap
    flip = lay.flip_index
    assert lay.names[flip[lay.index("left_pinky")]] == "right_pinky"


def test_body25b_to_halpe_and_back_and_3d_input():
    b, h = LAYOUTS["body25b"], LAYOUTS["halpe26"]
    m = mapping("body25b", "halpe26")
    assert m[h.index("head_top")] == (b.index("head_top"),)
    assert m[h.index("neck")] == tuple(sorted((b.index("left_shoulder"), b.index("right_shoulder"))))
    kp = np.random.default_rng(2).normal(size=(3, 25, 3))  # 3D coordinates convert as well
    out, conf = convert(kp, None, "body25b", "halpe26")
    assert out.shape == (3, 26, 3) and conf is None
    np.testing.assert_array_equal(out[:, h.index("left_heel")], kp[:, b.index("left_heel")])
    with pytest.raises(ValueError, match="do not match layout"):
        convert(kp, None, "coco17", "h36m17")


def test_blazepose_to_coco_copies_the_body():
    kp = np.random.default_rng(3).uniform(0, 100, (33, 2))
    out, _ = convert(kp, None, "blazepose33", "coco17")
    blaze = LAYOUTS["blazepose33"]
    for i, n in enumerate(LAYOUTS["coco17"].names):
        np.testing.assert_array_equal(out[i], kp[blaze.index(n)])
