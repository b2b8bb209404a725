"""Top-down inference glue for one frame: person boxes -> affine crops -> heatmaps -> keypoints.

Conventions: image coordinates in pixels with pixel centres at integers; a crop is (H, W) =
the model's input size; boxes are (x1, y1, x2, y2).

The crop transform is mmpose's, in both flavours the published checkpoints were trained with:

* UDP (``udp=True``, every ViTPose COCO config): the box of size ``scale`` maps onto
  ``input_size - 1`` pixel *intervals*, so the box centre lands on the crop's centre pixel
  ((W - 1) / 2) and heatmap -> crop scaling is ``(W_in - 1) / (W_hm - 1)``;
* classic (``udp=False``): the box maps onto ``input_size`` pixels, centre at W / 2, heatmap
  scaling ``W_in / W_hm``.

Crops are warped with ``torch.nn.functional.grid_sample`` (bilinear, zero border as cv2's
warpAffine default) on the inference device, so no OpenCV is needed.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .heatmap import decode_heatmaps, flip_heatmaps

__all__ = [
    "select_device", "resolve_fp16", "box_to_center_scale", "crop_matrix", "invert_affine",
    "apply_affine", "warp_crops", "heatmap_to_input", "input_to_heatmap", "TopDownPredictor",
]


# ---------------------------------------------------------------------------- device choice
def select_device(preference: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA, else Apple MPS, else CPU; an explicit request that cannot work is an error."""
    if isinstance(preference, torch.device):
        return preference
    pref = preference.lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available")
    return dev


def resolve_fp16(device: torch.device, fp16: bool | str = "auto") -> bool:
    """Half precision on CUDA by default (ViT inference is bandwidth-bound; heatmap peaks are
    unaffected at fp16 resolution); never on CPU, where fp16 matmuls are slow or missing."""
    if fp16 == "auto":
        return device.type == "cuda"
    if fp16 and device.type == "cpu":
        raise ValueError("fp16 inference is not supported on the CPU; use fp16='auto' or False")
    return bool(fp16)


# ------------------------------------------------------------------------------- geometry
def box_to_center_scale(boxes: np.ndarray, aspect_ratio: float, padding: float = 1.25
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Centres (M, 2) and scales (M, 2) = padded (w, h) in pixels with w / h = ``aspect_ratio``.

    The box is grown, never shrunk, to the model's aspect ratio (mmpose's rule), then padded.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b.T
    if np.any(x2 < x1) or np.any(y2 < y1):
        raise ValueError("boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
    center = np.stack([(x1 + x2) / 2, (y1 + y2) / 2], axis=1)
    w = x2 - x1
    h = y2 - y1
    wide = w > aspect_ratio * h
    h = np.where(wide, w / aspect_ratio, h)
    w = np.where(wide, w, h * aspect_ratio)
    return center, np.stack([w, h], axis=1) * padding


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int], *,
                rotation: float | np.ndarray = 0.0, udp: bool = True) -> np.ndarray:
    """(M, 2, 3) affine maps image -> crop for boxes of ``center`` and ``scale`` (w, h).

    ``rotation`` in degrees, counter-clockwise in the image as in mmpose.
    """
    c = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(scale, dtype=np.float64).reshape(-1, 2)
    m = c.shape[0]
    th = np.deg2rad(np.broadcast_to(np.asarray(rotation, dtype=np.float64), (m,)))
    out_h, out_w = input_size
    if udp:
        sx = (out_w - 1.0) / s[:, 0]
        sy = (out_h - 1.0) / s[:, 1]
        ox, oy = (out_w - 1.0) / 2, (out_h - 1.0) / 2
    else:  # one isotropic factor from the widths, as mmpose's get_affine_transform
        sx = sy = out_w / s[:, 0]
        ox, oy = out_w / 2.0, out_h / 2.0
    cos, sin = np.cos(th), np.sin(th)
    mat = np.zeros((m, 2, 3))
    mat[:, 0, 0] = cos * sx
    mat[:, 0, 1] = -sin * sx
    mat[:, 1, 0] = sin * sy
    mat[:, 1, 1] = cos * sy
    mat[:, 0, 2] = ox - (mat[:, 0, 0] * c[:, 0] + mat[:, 0, 1] * c[:, 1])
    mat[:, 1, 2] = oy - (mat[:, 1, 0] * c[:, 0] + mat[:, 1, 1] * c[:, 1])
    return mat


def invert_affine(mat: np.ndarray) -> np.ndarray:
    """Exact inverse of (M, 2, 3) affine maps."""
    a = np.asarray(mat, dtype=np.float64)
    lin = a[..., :2]
    inv = np.linalg.inv(lin)
    t = -np.einsum("mij,mj->mi", inv, a[..., 2])
    return np.concatenate([inv, t[..., None]], axis=-1)


def apply_affine(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Map (M, K, 2) points with (M, 2, 3) affine maps."""
    p = np.asarray(points, dtype=np.float64)
    a = np.asarray(mat, dtype=np.float64)
    return np.einsum("mij,mkj->mki", a[..., :2], p) + a[:, None, :, 2]


def heatmap_to_input(coords: np.ndarray, heatmap_size: tuple[int, int],
                     input_size: tuple[int, int], udp: bool = True) -> np.ndarray:
    """Heatmap pixels -> crop pixels (same convention as the training targets)."""
    c = np.array(coords, dtype=np.float64, copy=True)
    (hh, hw), (ih, iw) = heatmap_size, input_size
    if udp:
        c[..., 0] *= (iw - 1.0) / (hw - 1.0)
        c[..., 1] *= (ih - 1.0) / (hh - 1.0)
    else:
        c[..., 0] *= iw / hw
        c[..., 1] *= ih / hh
    return c


def input_to_heatmap(coords: np.ndarray, heatmap_size: tuple[int, int],
                     input_size: tuple[int, int], udp: bool = True) -> np.ndarray:
    """Inverse of ``heatmap_to_input``."""
    c = np.array(coords, dtype=np.float64, copy=True)
    (hh, hw), (ih, iw) = heatmap_size, input_size
    if udp:
        c[..., 0] *= (hw - 1.0) / (iw - 1.0)
        c[..., 1] *= (hh - 1.0) / (ih - 1.0)
    else:
        c[..., 0] *= hw / iw
        c[..., 1] *= hh / ih
    return c


def warp_crops(image, mats: np.ndarray, input_size: tuple[int, int], *,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Crops (M, 3, H, W), float32 in the image's value range, from an (H, W, 3) image.

    Bilinear sampling at A^-1(u, v) for every crop pixel (u, v); outside the image is zero.
    """
    img = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {tuple(img.shape)}")
    img = img.to(device=device, dtype=torch.float32).permute(2, 0, 1)[None]
    h_img, w_img = img.shape[-2:]
    inv = torch.as_tensor(invert_affine(mats), dtype=torch.float64)
    m = inv.shape[0]
    out_h, out_w = input_size
    v, u = torch.meshgrid(torch.arange(out_h, dtype=torch.float64),
                          torch.arange(out_w, dtype=torch.float64), indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)  # (P, 3)
    src = torch.einsum("mij,pj->mpi", inv, uv1)                           # (M, P, 2)
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    gx = src[..., 0] * (2.0 / max(w_img - 1, 1)) - 1.0
    gy = src[..., 1] * (2.0 / max(h_img - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(m, out_h, out_w, 2).to(device=device, dtype=torch.float32)
    return F.grid_sample(img.expand(m, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)


# ------------------------------------------------------------------------------ predictor
class TopDownPredictor:
    """Runs a heatmap model on person boxes of one frame at a time, batched, with flip test."""

    def __init__(self, model: torch.nn.Module, *, input_size: tuple[int, int] = (256, 192),
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), decoder: str = "udp",
                 udp: bool = True, blur_kernel: int = 11,
                 flip_pairs: Iterable[Sequence[int]] | None = None, flip_shift: bool = False,
                 device: str | torch.device = "auto", fp16: bool | str = "auto",
                 batch_size: int = 32, padding: float = 1.25):
        self.device = select_device(device)
        self.fp16 = resolve_fp16(self.device, fp16)
        self.model = model.to(self.device).eval()
        if self.fp16:
            self.model = self.model.half()
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        self.decoder = decoder
        self.udp = udp
        self.blur_kernel = blur_kernel
        self.flip_pairs = None if flip_pairs is None else [tuple(p) for p in flip_pairs]
        self.flip_shift = flip_shift
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.padding = padding

    @classmethod
    def from_spec(cls, model: torch.nn.Module, spec, *, flip_pairs=None, **kwargs) -> "TopDownPredictor":
        """Settings from a ``models.checkpoints.WeightSpec`` (what the checkpoint was trained with)."""
        return cls(model, input_size=getattr(model, "img_size", spec.input_size), mean=spec.mean,
                   std=spec.std, decoder=spec.decoder, udp=spec.udp, blur_kernel=spec.blur_kernel,
                   flip_pairs=flip_pairs, flip_shift=spec.flip_shift, **kwargs)

    @torch.inference_mode()
    def heatmaps(self, crops: torch.Tensor) -> np.ndarray:
        """Heatmaps (M, K, h, w) float32 for raw crops (M, 3, H, W) in 0..255, flip-averaged."""
        outs = []
        step = self.batch_size if self.flip_pairs is None else max(1, self.batch_size // 2)
        for i in range(0, crops.shape[0], step):
            x = (crops[i:i + step].to(self.device, torch.float32) - self.mean) / self.std
            n = x.shape[0]
            if self.flip_pairs is not None:
                x = torch.cat([x, torch.flip(x, dims=(-1,))], dim=0)
            hm = self.model(x.to(self.dtype)).float()
            if self.flip_pairs is not None:
                hm = 0.5 * (hm[:n] + flip_heatmaps(hm[n:], self.flip_pairs, shift=self.flip_shift))
            outs.append(hm.cpu())
        if not outs:
            k = getattr(self.model, "num_keypoints", 0)
            return np.zeros((0, k, 0, 0), np.float32)
        return torch.cat(outs).numpy()

    def predict(self, image, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (M, K, 2) in image pixels and scores (M, K) for (M, 4) xyxy boxes."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        k = getattr(self.model, "num_keypoints", None)
        if boxes.shape[0] == 0:
            return np.zeros((0, k or 0, 2)), np.zeros((0, k or 0))
        ih, iw = self.input_size
        center, scale = box_to_center_scale(boxes, iw / ih, self.padding)
        mats = crop_matrix(center, scale, self.input_size, udp=self.udp)
        crops = warp_crops(image, mats, self.input_size, device=self.device)
        hm = self.heatmaps(crops)
        coords, scores = decode_heatmaps(hm, self.decoder, self.blur_kernel)
        in_crop = heatmap_to_input(coords, hm.shape[-2:], self.input_size, self.udp)
        return apply_affine(in_crop, invert_affine(mats)), scores
