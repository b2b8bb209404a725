"""The colour signature that tells the followed person from others (inference.appearance),
and how a one-person reader uses it to choose among the persons a detection pass finds."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from inference.appearance import SharedSignature, distance, signature
from inference.layouts import get_layout

LAY = get_layout("blazepose33")


def _person(x0: float, y0: float, scale: float = 1.0, conf: float = 0.9) -> np.ndarray:
    """BlazePose-33 keypoints of an upright person whose shoulders are at (x0..x0+40s, y0)."""
    kp = np.full((33, 3), np.nan)
    kp[:, 2] = 0.0
    pts = {"left_shoulder": (40, 0), "right_shoulder": (0, 0), "left_hip": (36, 60),
           "right_hip": (4, 60), "left_knee": (36, 110), "right_knee": (4, 110),
           "nose": (20, -25), "left_ankle": (36, 160), "right_ankle": (4, 160)}
    for name, (dx, dy) in pts.items():
        kp[LAY.index(name)] = (x0 + scale * dx, y0 + scale * dy, conf)
    return kp


def _scene(shirts, trousers=(40, 40, 120), noise=8, seed=0):
    """A grey frame with a person per shirt colour (torso + thighs painted), side by side."""
    rng = np.random.default_rng(seed)
    img = np.full((300, 400, 3), 128, np.int16)
    people = []
    for i, shirt in enumerate(shirts):
        x0, y0 = 40 + 150 * i, 60
        kp = _person(x0, y0)
        img[y0:y0 + 60, x0:x0 + 41] = shirt
        img[y0 + 60:y0 + 111, x0:x0 + 41] = trousers
        people.append(kp)
    img = np.clip(img + rng.integers(-noise, noise + 1, img.shape), 0, 255).astype(np.uint8)
    return img, people


def test_same_clothes_match_and_other_clothes_do_not():
    img, (red, green) = _scene([(200, 30, 30), (30, 170, 40)])
    img2, (red2, _) = _scene([(200, 30, 30), (30, 170, 40)], seed=1)   # another frame: new noise
    a, b, a2 = signature(img, red), signature(img, green), signature(img2, red2)
    assert a.shape == (16, 8) and a.sum() == pytest.approx(1.0, abs=1e-5)
    assert distance(a, a2) < 0.2
    assert distance(a, b) > 0.6
    # brightness is left out: the same shirt in shade still matches better than other clothes
    shade, (red3,) = _scene([(150, 22, 22)], seed=2)
    assert distance(a, signature(shade, red3)) < distance(a, b)


def test_no_signature_without_a_visible_torso():
    img, (person,) = _scene([(200, 30, 30)])
    hidden = person.copy()
    hidden[[LAY.index("left_hip"), LAY.index("right_hip")], 2] = 0.05   # hips not seen
    assert signature(img, hidden) is None
    tiny = _person(10, 10, scale=0.05)                                   # a few pixels tall
    assert signature(img, tiny) is None
    off = _person(1000, 1000)                                            # outside the frame
    assert signature(img, off) is None


def test_shared_signature_is_awaited_and_set_once():
    shared = SharedSignature()
    got = []
    t = threading.Thread(target=lambda: got.append(shared.get(timeout=5.0)))
    t.start()
    value = np.ones((16, 8), np.float32) / 128
    shared.set(value)
    shared.set(None)                    # a later set (the reader's "none found") changes nothing
    t.join(5.0)
    assert got[0] is value and shared.get() is value
    assert SharedSignature().get(timeout=0.01) is None


def test_one_person_reader_follows_the_look_alike_not_the_most_prominent():
    from inference.blazepose import MultiPersonBlazePose

    img, (red, green) = _scene([(200, 30, 30), (30, 170, 40)])
    ref = signature(img, red)
    finder = MultiPersonBlazePose(max_people=1, candidates=3, reference=ref)
    # green is made more prominent (taller box): without a reference it would be chosen
    big_green = green.copy()
    big_green[LAY.index("left_ankle"), 1] += 80
    found = [big_green, red]
    finder._rank(img, found, 1)
    assert found[0] is red
    plain = MultiPersonBlazePose(max_people=1, candidates=3)
    found = [red, big_green]
    plain._rank(img, found, 1)
    assert found[0] is big_green                            # prominence alone
    # the reference may be another reader's, awaited when the choice is made
    shared = SharedSignature()
    shared.set(ref)
    waiting = MultiPersonBlazePose(max_people=1, candidates=3,
                                   reference=lambda: shared.get(timeout=1.0))
    found = [big_green, red]
    waiting._rank(img, found, 1)
    assert found[0] is red
