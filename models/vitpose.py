"""ViTPose: a plain ViT backbone and a heatmap head (Xu et al., NeurIPS 2022).

One model class with typed keyword arguments; the published variants are small named factories
(`vitpose_small`, `vitpose_base`, `vitpose_large`, `vitpose_huge`) and ``VARIANTS`` holds their
widths as data. Module names follow the official ViTPose code (``backbone.blocks.N.attn.qkv``,
``head.deconv_layers.N``, ``head.final_layer``) so official checkpoints map onto it with renames
only (see ``models.checkpoints.checkpoint_filter_fn``).

Facts checked against ViTAE-Transformer/ViTPose (``mmpose/models/backbones/vit.py``,
``mmpose/models/heads/topdown_heatmap_simple_head.py``, ``configs/body/.../coco/ViTPose_*``):

* patch embedding ``Conv2d(3, C, 16, stride 16, padding 2)``: 256x192 -> 16x12 tokens;
* LayerNorm eps 1e-6, qkv bias, MLP ratio 4, GELU, a final ``last_norm``;
* the official ``pos_embed`` has a class-token slot that is *added to every patch*
  (``x + pos_embed[:, 1:] + pos_embed[:, :1]``); we store the sum (one vector per patch), which is
  exactly the same function and also matches mmpose 1.x (mmpretrain backbone, no class slot);
* classic head: 2 x (ConvTranspose2d k4 s2 p1, no bias, BN, ReLU) with 256 channels, then 1x1
  conv to K; simple head: ReLU, bilinear x4 upsampling (align_corners False), 3x3 conv to K.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ViTPose", "ViTBackbone", "ClassicHead", "SimpleHead", "VariantConfig", "VARIANTS",
    "create_vitpose", "vitpose_small", "vitpose_base", "vitpose_large", "vitpose_huge",
    "token_grid",
]

HeadType = Literal["classic", "simple"]


@dataclass(frozen=True)
class VariantConfig:
    embed_dim: int
    depth: int
    num_heads: int
    drop_path_rate: float  # used only in training; kept so the data match the official configs


# From the official configs ViTPose_{small,base,large,huge}_coco_256x192.py.
VARIANTS: dict[str, VariantConfig] = {
    "s": VariantConfig(embed_dim=384, depth=12, num_heads=12, drop_path_rate=0.3),
    "b": VariantConfig(embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.3),
    "l": VariantConfig(embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.5),
    "h": VariantConfig(embed_dim=1280, depth=32, num_heads=16, drop_path_rate=0.55),
}


def token_grid(img_size: tuple[int, int], patch_size: int = 16, padding: int = 2) -> tuple[int, int]:
    """Token rows and columns the padded patch convolution yields for an (H, W) input."""
    h, w = img_size
    return ((h + 2 * padding - patch_size) // patch_size + 1,
            (w + 2 * padding - patch_size) // patch_size + 1)


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample while training only."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size,
                              padding=padding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        hp, wp = x.shape[2], x.shape[3]
        return x.flatten(2).transpose(1, 2), (hp, wp)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        # The fused kernel computes softmax(q k^T / sqrt(d)) v, the official attention exactly.
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 drop_path: float, norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViTBackbone(nn.Module):
    """Plain ViT returning the (N, C, Hp, Wp) token map."""

    def __init__(self, *, img_size: tuple[int, int], patch_size: int, patch_padding: int,
                 in_chans: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 qkv_bias: bool, drop_path_rate: float, norm_eps: float):
        super().__init__()
        self.img_size = tuple(img_size)
        self.grid = token_grid(self.img_size, patch_size, patch_padding)
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, patch_padding)
        # One vector per patch: the official class-token slot is folded in (see module doc).
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], embed_dim))
        # Python arithmetic, not torch.linspace, so the model can be built on the meta device.
        rates = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rates[i], norm_eps) for i in range(depth))
        self.last_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x, (hp, wp) = self.patch_embed(x)
        if (hp, wp) != self.grid:
            raise ValueError(f"input {tuple(x.shape)} gives a {hp}x{wp} token grid; this model "
                             f"was built for {self.img_size[0]}x{self.img_size[1]} ({self.grid})")
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.last_norm(x)
        return x.transpose(1, 2).reshape(b, -1, hp, wp)


class ClassicHead(nn.Module):
    """TopdownHeatmapSimpleHead with two deconvolutions: 4x upsampling by learnt layers."""

    def __init__(self, in_channels: int, num_keypoints: int, channels: tuple[int, ...] = (256, 256),
                 kernel: int = 4):
        super().__init__()
        if kernel != 4:
            raise ValueError("only kernel 4 (padding 1, no output padding) is used by ViTPose")
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in channels:
            layers += [nn.ConvTranspose2d(c_in, c, kernel, stride=2, padding=1, output_padding=0,
                                          bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(c_in, num_keypoints, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(x))


class SimpleHead(nn.Module):
    """ViTPose's simple decoder: ReLU, bilinear upsampling, then a 3x3 conv to the heatmaps."""

    def __init__(self, in_channels: int, num_keypoints: int, upsample: int = 4):
        super().__init__()
        self.upsample = upsample
        self.final_layer = nn.Conv2d(in_channels, num_keypoints, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Order as in the official head: relu first, then resize (they do not commute).
        x = F.interpolate(F.relu(x), scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return self.final_layer(x)


class ViTPose(nn.Module):
    """Top-down ViTPose: normalised RGB crops (N, 3, H, W) -> heatmaps (N, K, H/4, W/4)."""

    def __init__(self, *, img_size: tuple[int, int] = (256, 192), patch_size: int = 16,
                 patch_padding: int = 2, in_chans: int = 3, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6, head: HeadType = "classic",
                 num_keypoints: int = 17, deconv_channels: tuple[int, ...] = (256, 256)):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.num_keypoints = num_keypoints
        self.head_type = head
        self.backbone = ViTBackbone(img_size=self.img_size, patch_size=patch_size,
                                    patch_padding=patch_padding, in_chans=in_chans,
                                    embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                    mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                    drop_path_rate=drop_path_rate, norm_eps=norm_eps)
        if head == "classic":
            self.head: nn.Module = ClassicHead(embed_dim, num_keypoints, tuple(deconv_channels))
            self.upsample = 2 ** len(deconv_channels)
        elif head == "simple":
            self.head = SimpleHead(embed_dim, num_keypoints, upsample=4)
            self.upsample = 4
        else:
            raise ValueError(f"unknown head {head!r}: expected 'classic' or 'simple'")

    @property
    def heatmap_size(self) -> tuple[int, int]:
        gh, gw = self.backbone.grid
        return gh * self.upsample, gw * self.upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def create_vitpose(variant: str, *, head: HeadType = "classic", num_keypoints: int = 17,
                   img_size: tuple[int, int] = (256, 192), **overrides) -> ViTPose:
    """Build a named variant ('s', 'b', 'l', 'h'); ``overrides`` (e.g. ``depth=1``) win."""
    try:
        cfg = VARIANTS[variant.lower()]
    except KeyError:
        raise ValueError(f"unknown ViTPose variant {variant!r}: expected one of "
                         f"{', '.join(VARIANTS)}") from None
    kwargs = dict(embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads)
    kwargs.update(overrides)
    return ViTPose(img_size=img_size, head=head, num_keypoints=num_keypoints, **kwargs)


def vitpose_small(**kwargs) -> ViTPose:
    return create_vitpose("s", **kwargs)


def vitpose_base(**kwargs) -> ViTPose:
    return create_vitpose("b", **kwargs)


def vitpose_large(**kwargs) -> ViTPose:
    return create_vitpose("l", **kwargs)


def vitpose_huge(**kwargs) -> ViTPose:
    return create_vitpose("h", **kwargs)
