"""ViTPose network: shapes of every variant, key layout of the official checkpoints, and equality
with an independent functional forward pass written from the official code's structure.

The helpers ``official_state_dict`` and ``reference_forward`` are used by test_checkpoints.py too.
They are written from ViTPose's ``vit.py`` / ``topdown_heatmap_simple_head.py`` and mmpose 1.x's
mmpretrain ``VisionTransformer`` + ``HeatmapHead`` naming, not from our model.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.checkpoints import checkpoint_filter_fn
from models.vitpose import VARIANTS, create_vitpose, token_grid, vitpose_base, vitpose_huge, \
    vitpose_large, vitpose_small

FACTORIES = {"s": vitpose_small, "b": vitpose_base, "l": vitpose_large, "h": vitpose_huge}


def official_state_dict(embed: int, depth: int, num_keypoints: int, head: str = "classic",
                        naming: str = "mmpose0", grid: tuple[int, int] = (16, 12), seed: int = 0,
                        device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A state dict laid out as the published checkpoints, filled with random values."""
    g = torch.Generator().manual_seed(seed) if device == "cpu" else None
    C = embed
    meta = torch.device(device).type == "meta"

    def rnd(*shape, std=0.02, mean=0.0):
        if meta:
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=g) * std + mean

    sd: dict[str, torch.Tensor] = {}
    n_pos = grid[0] * grid[1] + (1 if naming == "mmpose0" else 0)
    if naming == "mmpose0":
        bb, blk, hd = "backbone.", "backbone.blocks.{i}.", "keypoint_head."
        names = dict(proj="patch_embed.proj", n1="norm1", n2="norm2", fc1="mlp.fc1", fc2="mlp.fc2",
                     last="last_norm")
    else:
        bb, blk, hd = "backbone.", "backbone.layers.{i}.", "head."
        names = dict(proj="patch_embed.projection", n1="ln1", n2="ln2", fc1="ffn.layers.0.0",
                     fc2="ffn.layers.1", last="ln1")
    sd[bb + names["proj"] + ".weight"] = rnd(C, 3, 16, 16)
    sd[bb + names["proj"] + ".bias"] = rnd(C)
    sd[bb + "pos_embed"] = rnd(1, n_pos, C)
    for i in range(depth):
        p = blk.format(i=i)
        for n in ("n1", "n2"):
            sd[p + names[n] + ".weight"] = rnd(C, std=0.1, mean=1.0)
            sd[p + names[n] + ".bias"] = rnd(C)
        sd[p + "attn.qkv.weight"] = rnd(3 * C, C, std=C ** -0.5)
        sd[p + "attn.qkv.bias"] = rnd(3 * C)
        sd[p + "attn.proj.weight"] = rnd(C, C, std=C ** -0.5)
        sd[p + "attn.proj.bias"] = rnd(C)
        sd[p + names["fc1"] + ".weight"] = rnd(4 * C, C, std=C ** -0.5)
        sd[p + names["fc1"] + ".bias"] = rnd(4 * C)
        sd[p + names["fc2"] + ".weight"] = rnd(C, 4 * C, std=(4 * C) ** -0.5)
        sd[p + names["fc2"] + ".bias"] = rnd(C)
    sd[bb + names["last"] + ".weight"] = rnd(C, std=0.1, mean=1.0)
    sd[bb + names["last"] + ".bias"] = rnd(C)
    if head == "classic":
        c_in = C
        for j in (0, 3):
            sd[f"{hd}deconv_layers.{j}.weight"] = rnd(c_in, 256, 4, 4, std=(c_in * 4) ** -0.5)
            bn = f"{hd}deconv_layers.{j + 1}."
            sd[bn + "weight"] = rnd(256, std=0.1, mean=1.0)
            sd[bn + "bias"] = rnd(256, std=0.1)
            sd[bn + "running_mean"] = rnd(256, std=0.1)
            sd[bn + "running_var"] = (torch.empty(256, device="meta") if meta
                                      else torch.rand(256, generator=g) + 0.5)
            sd[bn + "num_batches_tracked"] = (torch.empty((), dtype=torch.long, device="meta") if meta
                                              else torch.tensor(1000))
            c_in = 256
        sd[f"{hd}final_layer.weight"] = rnd(num_keypoints, 256, 1, 1, std=256 ** -0.5)
    else:
        sd[f"{hd}final_layer.weight"] = rnd(num_keypoints, C, 3, 3, std=(9 * C) ** -0.5)
    sd[f"{hd}final_layer.bias"] = rnd(num_keypoints)
    return sd


def reference_forward(sd: dict, x: torch.Tensor, num_heads: int, head: str = "classic",
                      naming: str = "mmpose0") -> torch.Tensor:
    """ViTPose's forward pass written with functional ops straight from an official state dict."""
    v0 = naming == "mmpose0"
    proj = "backbone.patch_embed.proj" if v0 else "backbone.patch_embed.projection"
    hd = "keypoint_head." if v0 else "head."
    t = F.conv2d(x, sd[proj + ".weight"], sd[proj + ".bias"], stride=16, padding=2)
    B, C, gh, gw = t.shape
    t = t.flatten(2).transpose(1, 2)
    pos = sd["backbone.pos_embed"]
    t = t + (pos[:, 1:] + pos[:, :1] if v0 else pos)     # vit.py: x + pos[:, 1:] + pos[:, :1]
    depth = len({k.split(".")[2] for k in sd if k.startswith("backbone.blocks." if v0 else "backbone.layers.")})
    for i in range(depth):
        p = f"backbone.blocks.{i}." if v0 else f"backbone.layers.{i}."
        n1, n2 = ("norm1", "norm2") if v0 else ("ln1", "ln2")
        fc1, fc2 = ("mlp.fc1", "mlp.fc2") if v0 else ("ffn.layers.0.0", "ffn.layers.1")
        y = F.layer_norm(t, (C,), sd[p + n1 + ".weight"], sd[p + n1 + ".bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        qkv = qkv.reshape(B, -1, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * (C // num_heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(B, -1, C)
        t = t + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.layer_norm(t, (C,), sd[p + n2 + ".weight"], sd[p + n2 + ".bias"], eps=1e-6)
        y = F.gelu(F.linear(y, sd[p + fc1 + ".weight"], sd[p + fc1 + ".bias"]))
        t = t + F.linear(y, sd[p + fc2 + ".weight"], sd[p + fc2 + ".bias"])
    last = "backbone.last_norm" if v0 else "backbone.ln1"
    t = F.layer_norm(t, (C,), sd[last + ".weight"], sd[last + ".bias"], eps=1e-6)
    f = t.transpose(1, 2).reshape(B, C, gh, gw)
    if head == "classic":
        for j in (0, 3):
            f = F.conv_transpose2d(f, sd[f"{hd}deconv_layers.{j}.weight"], stride=2, padding=1)
            bn = f"{hd}deconv_layers.{j + 1}."
            f = F.relu(F.batch_norm(f, sd[bn + "running_mean"], sd[bn + "running_var"],
                                    sd[bn + "weight"], sd[bn + "bias"], training=False, eps=1e-5))
        return F.conv2d(f, sd[f"{hd}final_layer.weight"], sd[f"{hd}final_layer.bias"])
    f = F.interpolate(F.relu(f), scale_factor=4, mode="bilinear", align_corners=False)
    return F.conv2d(f, sd[f"{hd}final_layer.weight"], sd[f"{hd}final_layer.bias"], padding=1)


def test_published_variant_widths():
    # ViTPose_{small,base,large,huge}_coco_256x192.py
    assert [(VARIANTS[v].embed_dim, VARIANTS[v].depth, VARIANTS[v].num_heads) for v in "sblh"] == \
        [(384, 12, 12), (768, 12, 12), (1024, 24, 16), (1280, 32, 16)]
    assert token_grid((256, 192)) == (16, 12)
    assert token_grid((384, 288)) == (24, 18)


@pytest.mark.parametrize("variant", list("sblh"))
@pytest.mark.parametrize("naming", ["mmpose0", "mmpose1"])
def test_full_size_variant_matches_official_layout_on_meta(variant, naming):
    """Real-size models built without memory: every official key maps onto ours, shapes agree."""
    cfg = VARIANTS[variant]
    with torch.device("meta"):
        model = FACTORIES[variant](num_keypoints=17)
        sd = official_state_dict(cfg.embed_dim, cfg.depth, 17, naming=naming, device="meta")
    filtered = checkpoint_filter_fn({"state_dict": sd}, model)
    target = model.state_dict()
    assert list(filtered) == list(target)
    assert all(filtered[k].shape == target[k].shape for k in target)
    n_blocks = len({k.split(".")[2] for k in target if k.startswith("backbone.blocks.")})
    assert n_blocks == cfg.depth
    assert model.heatmap_size == (64, 48)


@pytest.mark.parametrize("variant,head,k", [("s", "classic", 17), ("s", "simple", 17),
                                            ("b", "classic", 133), ("b", "simple", 17)])
@pytest.mark.parametrize("naming", ["mmpose0", "mmpose1"])
def test_forward_equals_reference_implementation(variant, head, k, naming):
    cfg = VARIANTS[variant]
    sd = official_state_dict(cfg.embed_dim, 2, k, head=head, naming=naming, seed=3)
    model = create_vitpose(variant, head=head, num_keypoints=k, depth=2).eval()
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
        ref = reference_forward(sd, x, cfg.num_heads, head=head, naming=naming)
    assert ours.shape == (2, k, 64, 48)
    scale = ref.abs().max().item()
    assert scale > 0
    assert torch.allclose(ours, ref, atol=1e-5 * max(1.0, scale), rtol=1e-4)


def test_wrong_input_size_is_a_clear_error():
    model = create_vitpose("s", depth=1)
    with pytest.raises(ValueError, match="token grid"):
        model(torch.zeros(1, 3, 384, 288))


def test_unknown_variant_and_head_are_errors():
    with pytest.raises(ValueError, match="variant"):
        create_vitpose("xl")
    with pytest.raises(ValueError, match="head"):
        create_vitpose("s", head="fancy", depth=1)
