"""Top-down glue: crop/uncrop geometry, crop sampling, device choice, and an end-to-end run with
an equivariant stand-in network whose heatmaps are the crop itself, so the true answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.topdown import (TopDownPredictor, apply_affine, box_to_center_scale, crop_matrix,
                            heatmap_to_input, input_to_heatmap, invert_affine, resolve_fp16,
                            select_device, warp_crops)

COCO_FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


def _boxes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 500, (n, 2))
    wh = rng.uniform(20, 400, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def test_box_grows_to_aspect_then_pads():
    c, s = box_to_center_scale(np.array([[10, 20, 110, 420], [0, 0, 300, 100]]), 0.75)
    assert np.allclose(c, [[60, 220], [150, 50]])
    assert np.allclose(s, [[300 * 1.25, 400 * 1.25], [300 * 1.25, 400 * 1.25]])
    with pytest.raises(ValueError):
        box_to_center_scale(np.array([[10, 10, 5, 20]]), 0.75)


@pytest.mark.parametrize("udp", [True, False])
@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_crop_and_uncrop_are_exact_inverses(udp, rotation):
    boxes = _boxes(6, seed=1)
    c, s = box_to_center_scale(boxes, 0.75)
    m = crop_matrix(c, s, (256, 192), rotation=rotation, udp=udp)
    pts = np.random.default_rng(2).uniform(-100, 900, (6, 17, 2))
    back = apply_affine(apply_affine(pts, m), invert_affine(m))
    assert np.abs(back - pts).max() < 1e-9
    crop_pts = np.random.default_rng(3).uniform(0, 192, (6, 17, 2))
    assert np.abs(apply_affine(apply_affine(crop_pts, invert_affine(m)), m) - crop_pts).max() < 1e-9


def test_udp_crop_maps_box_edges_to_pixel_centres():
    c, s = np.array([[300.0, 200.0]]), np.array([[150.0, 200.0]])
    m = crop_matrix(c, s, (256, 192), udp=True)
    corners = np.array([[[225.0, 100.0], [375.0, 300.0], [300.0, 200.0]]])
    assert np.allclose(apply_affine(corners, m), [[[0, 0], [191, 255], [95.5, 127.5]]])
    m = crop_matrix(c, s, (256, 192), udp=False)
    assert np.allclose(apply_affine(corners, m), [[[0, 0], [192, 256], [96, 128]]])


@pytest.mark.parametrize("udp", [True, False])
def test_heatmap_input_scaling_inverse(udp):
    pts = np.random.default_rng(0).uniform(0, 47, (2, 17, 2))
    there = heatmap_to_input(pts, (64, 48), (256, 192), udp)
    assert np.allclose(input_to_heatmap(there, (64, 48), (256, 192), udp), pts)
    if udp:  # the last heatmap pixel is the last input pixel
        assert np.allclose(heatmap_to_input(np.array([[[47.0, 63.0]]]), (64, 48), (256, 192)),
                           [[[191.0, 255.0]]])


def test_warp_samples_the_image_where_the_inverse_map_points():
    """On an image linear in x and y, bilinear sampling is exact: crop(u, v) = I(A^-1(u, v))."""
    h, w = 360, 640
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([xs, ys, 0.5 * xs + 0.25 * ys + 3], axis=-1)
    boxes = np.array([[100, 50, 300, 330], [400, 100, 520, 200]], dtype=np.float64)
    c, s = box_to_center_scale(boxes, 0.75, padding=1.0)
    m = crop_matrix(c, s, (64, 48), rotation=np.array([0.0, 20.0]))
    crops = warp_crops(img.astype(np.float32), m, (64, 48)).numpy()
    v, u = np.mgrid[0:64, 0:48].astype(np.float64)
    src = apply_affine(np.stack([u, v], -1).reshape(1, -1, 2).repeat(2, 0), invert_affine(m))
    expect_x = src[..., 0].reshape(2, 64, 48)
    expect_y = src[..., 1].reshape(2, 64, 48)
    assert np.allclose(crops[:, 0], expect_x, atol=2e-3)
    assert np.allclose(crops[:, 1], expect_y, atol=2e-3)
    assert np.allclose(crops[:, 2], 0.5 * expect_x + 0.25 * expect_y + 3, atol=2e-3)
    # Outside the image the crop is zero (cv2.warpAffine's default border).
    far = warp_crops(img.astype(np.float32), crop_matrix(np.array([[-500.0, -500.0]]),
                                                         np.array([[30.0, 40.0]]), (8, 6)), (8, 6))
    assert torch.count_nonzero(far) == 0


class CropToHeatmap(torch.nn.Module):
    """Stand-in network: heatmap pixel (i, j) = the un-normalised crop's channel 0 (scaled to
    0..1 like trained heatmaps) sampled at the UDP position of that heatmap pixel, repeated for K
    keypoints. Equivariant to flips."""

    def __init__(self, k: int, mean0: float, std0: float):
        super().__init__()
        self.num_keypoints = k
        self.mean0, self.std0 = mean0 * 255, std0 * 255
        self.img_size = (256, 192)

    def forward(self, x):
        raw = (x[:, :1].float() * self.std0 + self.mean0) / 255.0
        hm = F.interpolate(raw, size=(64, 48), mode="bilinear", align_corners=True)
        return hm.repeat(1, self.num_keypoints, 1, 1).to(x.dtype)


def _blob_image(centres: np.ndarray, size=(480, 640), sigma=4.0) -> np.ndarray:
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for cx, cy in centres:
        img[..., 0] += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    return (img * 200).astype(np.float32)


@pytest.mark.parametrize("flip", [False, True])
def test_end_to_end_recovers_known_points(flip):
    centres = np.array([[150.3, 220.7], [470.6, 300.2]])
    img = _blob_image(centres)
    # Boxes of about 60 x 80 px: one heatmap pixel ~ 1.6 image pixels, blob sigma ~ 2.5 hm px.
    boxes = np.array([[c[0] - 25, c[1] - 42, c[0] + 37, c[1] + 38] for c in centres])
    model = CropToHeatmap(17, 0.485, 0.229)
    pred = TopDownPredictor(model, decoder="udp", udp=True, device="cpu", batch_size=3,
                            flip_pairs=COCO_FLIP_PAIRS if flip else None)
    kp, scores = pred.predict(img, boxes)
    assert kp.shape == (2, 17, 2) and scores.shape == (2, 17)
    err = np.abs(kp - centres[:, None, :]).max()
    assert err < 0.1, err
    assert np.all(scores > 0.7) and np.all(scores < 0.8)  # blob peak 200 / 255, blurred a little


def test_flip_test_with_a_real_vitpose_is_mirror_consistent():
    """For a trained-or-not ViTPose, flip averaging makes the output mirror-symmetric: predicting
    on the mirrored image gives the mirrored keypoints (UDP geometry makes this exact)."""
    from models.vitpose import create_vitpose

    torch.manual_seed(0)
    model = create_vitpose("s", depth=1)
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (200, 240, 3)).astype(np.float32)
    box = np.array([[40.0, 20.0, 190.0, 180.0]])
    pred = TopDownPredictor(model, device="cpu", flip_pairs=COCO_FLIP_PAIRS)
    mirror_box = np.array([[239 - 190.0, 20.0, 239 - 40.0, 180.0]])
    crops = warp_crops(img, crop_matrix(*box_to_center_scale(box, 0.75), (256, 192)), (256, 192))
    crops_m = warp_crops(img[:, ::-1], crop_matrix(*box_to_center_scale(mirror_box, 0.75), (256, 192)),
                         (256, 192))
    assert torch.allclose(torch.flip(crops, dims=(-1,)), crops_m, atol=1e-2)  # of 0..255
    hm = pred.heatmaps(crops)
    hm_m = pred.heatmaps(crops_m)
    from models.heatmap import flip_heatmaps
    assert np.abs(flip_heatmaps(hm, COCO_FLIP_PAIRS) - hm_m).max() < 1e-3 * np.abs(hm).max()


def test_device_and_precision_choice():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_fp16(torch.device("cpu")) is False
    assert resolve_fp16(torch.device("cuda")) is True
    with pytest.raises(ValueError, match="CPU"):
        resolve_fp16(torch.device("cpu"), True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            select_device("cuda")


def test_no_boxes_gives_empty_result():
    pred = TopDownPredictor(CropToHeatmap(17, 0.485, 0.229), device="cpu")
    kp, scores = pred.predict(np.zeros((10, 10, 3), np.float32), np.zeros((0, 4)))
    assert kp.shape == (0, 17, 2) and scores.shape == (0, 17)
