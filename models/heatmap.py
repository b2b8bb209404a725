"""Heatmap decoding: integer argmax plus the sub-pixel refinement a checkpoint was trained with.

Coordinates are in heatmap pixels, pixel centres at integers (pixel (0, 0) covers [-0.5, 0.5]).

* ``"argmax"``: the hottest pixel.
* ``"default"``: argmax moved a quarter pixel towards the higher neighbour (mmpose's default for
  non-UDP models).
* ``"dark"``: DARK (Zhang et al., CVPR 2020): blur the heatmap with a Gaussian (zero border, peak
  height restored), take the log, and do one Newton step (Taylor expansion to second order)
  from the argmax, second derivatives on a 2-pixel stencil.
* ``"udp"``: the refinement used with UDP-trained models (Huang et al., CVPR 2020; mmpose's
  ``post_dark_udp``, which every ViTPose COCO config selects with ``use_udp=True`` and
  ``modulate_kernel=11``): blur (mirrored border), clip to [0.001, 50], log, Newton step with
  3x3 central differences. UDP's other half, the unbiased pixel->image scaling, lives in
  ``models.topdown`` (``heatmap_to_input``).

Flip-test helpers swap left/right channels given a list of index pairs (layouts are defined
elsewhere; any list of pairs works) and mirror the width axis.
"""
from __future__ import annotations

from typing import Iterable, Literal, Sequence

import numpy as np
from scipy.ndimage import correlate1d

__all__ = [
    "DecodeMethod", "get_max_preds", "gaussian_kernel", "gaussian_blur", "refine_dark",
    "refine_dark_udp", "decode_heatmaps", "flip_permutation", "flip_heatmaps", "flip_keypoints",
    "render_gaussian_heatmaps",
]

DecodeMethod = Literal["argmax", "default", "dark", "udp"]


def get_max_preds(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak (x, y) and its value for every (N, K) heatmap."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {hm.shape}")
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    coords = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    return coords, maxvals


def gaussian_kernel(size: int) -> np.ndarray:
    """1-D Gaussian with OpenCV's sigma for ``GaussianBlur(..., (size, size), 0)``.

    The published models were tuned with OpenCV's rule, so the blur must match it.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"blur kernel must be a positive odd size, got {size}")
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_blur(heatmaps: np.ndarray, kernel: int = 11, *, border: str = "constant",
                  keep_max: bool = False) -> np.ndarray:
    """Separable Gaussian blur over the last two axes.

    ``border``: ``"constant"`` (zeros, as DARK pads) or ``"mirror"`` (OpenCV's default
    BORDER_REFLECT_101, used by the UDP refinement). ``keep_max`` rescales every map to its
    original peak height, as DARK does, so the log stays comparable.
    """
    hm = np.asarray(heatmaps, dtype=np.float64)
    g = gaussian_kernel(kernel)
    out = correlate1d(hm, g, axis=-1, mode=border, cval=0.0)
    out = correlate1d(out, g, axis=-2, mode=border, cval=0.0)
    if keep_max:
        before = hm.max(axis=(-2, -1), keepdims=True)
        after = out.max(axis=(-2, -1), keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(after > 0, before / after, 1.0)
        out = out * ratio
    return out


def _solve_newton(coords: np.ndarray, gx, gy, hxx, hxy, hyy, ok: np.ndarray, *,
                  eps: float = 0.0) -> np.ndarray:
    """coords - H^-1 g where the Hessian is usable (``ok`` and non-singular)."""
    hxx = hxx + eps
    hyy = hyy + eps
    det = hxx * hyy - hxy * hxy
    good = ok & np.isfinite(det) & (det != 0)
    safe = np.where(good, det, 1.0)
    dx = (hyy * gx - hxy * gy) / safe
    dy = (hxx * gy - hxy * gx) / safe
    out = coords.astype(np.float64).copy()
    out[..., 0] -= np.where(good, dx, 0.0)
    out[..., 1] -= np.where(good, dy, 0.0)
    return out


def refine_dark(heatmaps: np.ndarray, coords: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DARK sub-pixel refinement of integer peaks ``coords`` (N, K, 2)."""
    hm = np.asarray(heatmaps, dtype=np.float64)
    n, k, h, w = hm.shape
    logh = np.log(np.maximum(gaussian_blur(hm, kernel, border="constant", keep_max=True), 1e-10))
    px = coords[..., 0].astype(int)
    py = coords[..., 1].astype(int)
    # The 2-pixel stencil needs two pixels of room on every side.
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    pxc = np.clip(px, 2, w - 3)
    pyc = np.clip(py, 2, h - 3)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return logh[ni, ki, pyc + dy, pxc + dx]

    c = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    hyy = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    return _solve_newton(coords, gx, gy, hxx, hxy, hyy, ok)


def refine_dark_udp(heatmaps: np.ndarray, coords: np.ndarray, kernel: int = 11) -> np.ndarray:
    """The UDP-era DARK refinement (3x3 stencil, edge padding, applied at every peak)."""
    hm = np.asarray(heatmaps, dtype=np.float64)
    n, k, h, w = hm.shape
    logh = np.log(np.clip(gaussian_blur(hm, kernel, border="mirror"), 0.001, 50.0))
    pad = np.pad(logh, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    px = np.clip(coords[..., 0].astype(int), 0, w - 1) + 1
    py = np.clip(coords[..., 1].astype(int), 0, h - 1) + 1
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return pad[ni, ki, py + dy, px + dx]

    c = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = at(0, 1) - 2 * c + at(0, -1)
    hyy = at(1, 0) - 2 * c + at(-1, 0)
    hxy = 0.5 * (at(1, 1) - at(0, 1) - at(1, 0) + 2 * c - at(0, -1) - at(-1, 0) + at(-1, -1))
    ok = np.ones_like(c, dtype=bool)
    # mmpose adds float32 eps to the Hessian's diagonal before inverting; keep that behaviour.
    return _solve_newton(coords, gx, gy, hxx, hxy, hyy, ok, eps=float(np.finfo(np.float32).eps))


def _quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    px = coords[..., 0].astype(int)
    py = coords[..., 1].astype(int)
    ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    pxc = np.clip(px, 1, w - 2)
    pyc = np.clip(py, 1, h - 2)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    dx = hm[ni, ki, pyc, pxc + 1] - hm[ni, ki, pyc, pxc - 1]
    dy = hm[ni, ki, pyc + 1, pxc] - hm[ni, ki, pyc - 1, pxc]
    out = coords.astype(np.float64).copy()
    out[..., 0] += np.where(ok, np.sign(dx) * 0.25, 0.0)
    out[..., 1] += np.where(ok, np.sign(dy) * 0.25, 0.0)
    return out


def decode_heatmaps(heatmaps: np.ndarray, method: DecodeMethod = "udp",
                    blur_kernel: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, K, 2) in heatmap pixels and scores (N, K) (the peak heights)."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    coords, scores = get_max_preds(hm)
    if method == "argmax":
        out = coords.astype(np.float64)
    elif method == "default":
        out = _quarter_offset(hm, coords)
    elif method == "dark":
        out = refine_dark(hm, coords, blur_kernel)
    elif method == "udp":
        out = refine_dark_udp(hm, coords, blur_kernel)
    else:
        raise ValueError(f"unknown decoding {method!r}: expected argmax, default, dark or udp")
    return out, scores


# ---------------------------------------------------------------------------------- flip test
def flip_permutation(num_keypoints: int, flip_pairs: Iterable[Sequence[int]]) -> np.ndarray:
    """Channel order of the mirrored image: left and right swapped, centre keypoints kept."""
    perm = np.arange(num_keypoints)
    seen: set[int] = set()
    for pair in flip_pairs:
        if len(pair) != 2:
            raise ValueError(f"flip pair {pair!r} must have two indices")
        a, b = int(pair[0]), int(pair[1])
        for i in (a, b):
            if not 0 <= i < num_keypoints:
                raise ValueError(f"flip pair {pair!r} has index {i} outside 0..{num_keypoints - 1}")
            if i in seen:
                raise ValueError(f"keypoint {i} appears in more than one flip pair")
            seen.add(i)
        perm[a], perm[b] = b, a
    return perm


def flip_heatmaps(heatmaps, flip_pairs: Iterable[Sequence[int]], *, shift: bool = False):
    """Heatmaps of the mirrored image mapped back (or forth: the operation is its own inverse).

    Works on numpy arrays and torch tensors of shape (N, K, H, W). ``shift`` moves the result
    one pixel right, mmpose's ``shift_heatmap`` for models trained without UDP; it is not
    invertible, so flip tests of UDP models leave it off.
    """
    k = heatmaps.shape[1]
    perm = flip_permutation(k, flip_pairs)
    if isinstance(heatmaps, np.ndarray):
        out = heatmaps[:, perm, :, ::-1].copy()
    else:
        import torch

        out = torch.flip(heatmaps[:, torch.as_tensor(perm, device=heatmaps.device)], dims=(-1,))
    if shift:
        out[..., 1:] = out[..., :-1].copy() if isinstance(out, np.ndarray) else out[..., :-1].clone()
    return out


def flip_keypoints(coords: np.ndarray, flip_pairs: Iterable[Sequence[int]], width: int) -> np.ndarray:
    """Keypoints (..., K, 2+) of an image of ``width`` pixels as seen in its mirror image."""
    c = np.array(coords, dtype=np.float64, copy=True)
    perm = flip_permutation(c.shape[-2], flip_pairs)
    c = c[..., perm, :]
    c[..., 0] = (width - 1) - c[..., 0]
    return c


def render_gaussian_heatmaps(coords: np.ndarray, size: tuple[int, int], sigma: float = 2.0) -> np.ndarray:
    """Unnormalised Gaussians exp(-d^2 / 2 sigma^2) at (N, K, 2) sub-pixel centres; (N, K, H, W).

    The training target of UDP-encoded ViTPose (sigma 2 at 64x48); used for tests and checks.
    """
    c = np.asarray(coords, dtype=np.float64)
    h, w = size
    ys = np.arange(h, dtype=np.float64)[:, None]
    xs = np.arange(w, dtype=np.float64)[None, :]
    dx = xs[None, None] - c[..., 0, None, None]
    dy = ys[None, None] - c[..., 1, None, None]
    return np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)).astype(np.float32)
