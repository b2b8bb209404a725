"""Weights registry, verified cache, official-checkpoint loading, and the `weights` command.

Checkpoints are built in the tests in the official key layouts (mmpose 0.x and 1.x), saved
with torch.save and served from file:// URLs: nothing is downloaded from the network.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.commands.weights import add_weights_parser
from models import checkpoints as ck
from models.checkpoints import (REGISTRY, CheckpointError, cached_path, checkpoint_filter_fn,
                                fetch, import_checkpoint, list_weights, load_checkpoint,
                                read_state_dict)
from models.vitpose import VARIANTS, create_vitpose

from test_vitpose import official_state_dict, reference_forward


def _save(obj, path: Path) -> str:
    torch.save(obj, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wrap(sd: dict, naming: str) -> dict:
    """Nest as the tools save: mmcv 1.x {'meta', 'state_dict'}; mmengine adds numpy metadata."""
    if naming == "mmpose0":
        return {"meta": {"mmcv_version": "1.3.9", "epoch": 210}, "state_dict": sd}
    return {"meta": {"dataset_meta": {"flip_indices": np.array([0, 2, 1]),
                                      "sigmas": np.array([0.026, 0.025], dtype=np.float32)},
                     "epoch": 210}, "state_dict": sd}


def _spec_for(name: str, path: Path, digest: str | None, **changes) -> ck.WeightSpec:
    return dataclasses.replace(REGISTRY[name], url=path.as_uri(), sha256=digest, **changes)


CASES = [("s", "classic", 17, "mmpose0", 2), ("b", "simple", 17, "mmpose1", 1),
         ("l", "classic", 17, "mmpose1", 1), ("h", "simple", 17, "mmpose0", 1),
         ("b", "classic", 133, "mmpose0", 1)]


@pytest.mark.parametrize("variant,head,k,naming,depth", CASES)
def test_official_checkpoint_fetches_and_loads_strictly(tmp_path, variant, head, k, naming, depth):
    cfg = VARIANTS[variant]
    sd = official_state_dict(cfg.embed_dim, depth, k, head=head, naming=naming, seed=7)
    src = tmp_path / "published" / "model.pth"
    src.parent.mkdir()
    digest = _save(_wrap(sd, naming), src)
    base = "vitpose-b-wholebody" if k == 133 else \
        f"vitpose-{variant}{'-simple' if head == 'simple' else ''}-coco"
    spec = _spec_for(base, src, digest, moe_expert=None)
    cache = tmp_path / "cache"

    path = fetch(spec, cache=cache)
    assert path.parent == cache and path.read_bytes() == src.read_bytes()
    model, got = load_checkpoint(spec, cache=cache, depth=depth)
    x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hm = model(x)
        ref = reference_forward(sd, x, cfg.num_heads, head=head, naming=naming)
    assert hm.shape == (2, k, 64, 48)
    assert torch.allclose(hm, ref, atol=1e-5 * max(1.0, ref.abs().max().item()), rtol=1e-4)
    assert got.decoder == "udp" and got.input_size == (256, 192)


def test_wrong_sha256_is_refused_and_nothing_cached(tmp_path):
    sd = official_state_dict(384, 1, 17)
    src = tmp_path / "m.pth"
    digest = _save({"state_dict": sd}, src)
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        fetch(_spec_for("vitpose-s-coco", src, wrong), cache=cache)
    assert not cache.exists() or list(cache.iterdir()) == []
    with pytest.raises(CheckpointError, match="not in the cache"):
        load_checkpoint(_spec_for("vitpose-s-coco", src, wrong), cache=cache, depth=1)


def test_unknown_hash_needs_trust_checks_prefix_and_pins(tmp_path):
    sd = official_state_dict(384, 1, 17)
    src = tmp_path / "m.pth"
    digest = _save({"state_dict": sd}, src)
    cache = tmp_path / "cache"
    spec = _spec_for("vitpose-s-coco", src, None, sha256_prefix=None)
    with pytest.raises(CheckpointError, match="--trust"):
        fetch(spec, cache=cache)
    assert not cache.exists() or list(cache.glob("*.pth")) == []
    bad_prefix = dataclasses.replace(spec, sha256_prefix="ffffffff" if not digest.startswith("ffffffff") else "00000000")
    with pytest.raises(CheckpointError, match="prefix"):
        fetch(bad_prefix, cache=cache, trust=True)
    good = dataclasses.replace(spec, sha256_prefix=digest[:8])
    with pytest.warns(UserWarning, match="pinned"):
        path = fetch(good, cache=cache, trust=True)
    index = json.loads((cache / "index.json").read_text())
    assert index[good.name]["sha256"] == digest
    model, _ = load_checkpoint(good, cache=cache, depth=1)
    assert model(torch.zeros(1, 3, 256, 192)).shape == (1, 17, 64, 48)
    # A file swapped after pinning no longer loads.
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(CheckpointError, match="changed or corrupted"):
        load_checkpoint(good, cache=cache, depth=1)


def test_unknown_and_missing_keys_are_listed():
    model = create_vitpose("s", depth=1)
    sd = official_state_dict(384, 1, 17)
    extra = dict(sd, **{"backbone.cls_token": torch.zeros(1, 1, 384),
                        "keypoint_head.extra_conv.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError) as exc:
        checkpoint_filter_fn({"state_dict": extra}, model)
    assert "backbone.cls_token" in str(exc.value) and "extra_conv" in str(exc.value)
    short = {k: v for k, v in sd.items() if "last_norm" not in k}
    with pytest.raises(CheckpointError, match="backbone.last_norm.bias"):
        checkpoint_filter_fn(short, model)
    deeper = official_state_dict(384, 2, 17)
    with pytest.raises(CheckpointError, match="backbone.blocks.1"):
        checkpoint_filter_fn(deeper, model)
    with pytest.raises(CheckpointError, match="wrong shape"):
        checkpoint_filter_fn(official_state_dict(384, 1, 133), model)


def test_pos_embed_resampled_for_384x288(tmp_path):
    sd = official_state_dict(384, 1, 17, seed=5)
    # A smooth pattern: channel 0 encodes the row, channel 1 the column, the class slot a constant.
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
    pos = torch.zeros(1, 193, 384)
    pos[0, 0, :] = 0.5
    pos[0, 1:, 0] = rows.flatten()
    pos[0, 1:, 1] = cols.flatten()
    sd["backbone.pos_embed"] = pos
    src = tmp_path / "m.pth"
    digest = _save({"state_dict": sd}, src)
    spec = _spec_for("vitpose-s-coco", src, digest)
    fetch(spec, cache=tmp_path / "c")
    model, _ = load_checkpoint(spec, cache=tmp_path / "c", img_size=(384, 288), depth=1)
    assert model.backbone.grid == (24, 18)
    with torch.no_grad():
        hm = model(torch.randn(1, 3, 384, 288))
    assert hm.shape == (1, 17, 96, 72)
    grid = model.backbone.pos_embed.detach().reshape(24, 18, 384)
    # The class slot is folded in (+0.5 everywhere); the row code varies along rows only and
    # spans the same range; other channels stay at the constant.
    assert torch.allclose(grid[..., 2:], torch.full_like(grid[..., 2:], 0.5), atol=1e-5)
    r = grid[..., 0] - 0.5
    assert torch.allclose(r, r[:, :1].expand_as(r), atol=1e-5)
    assert torch.all(torch.diff(r[:, 0]) > 0)
    assert abs((r[0, 0] + r[-1, 0]).item() - 15.0) < 1e-3  # symmetric about the middle row
    c = grid[..., 1] - 0.5
    assert torch.allclose(c, c[:1, :].expand_as(c), atol=1e-5)
    # Same size: untouched apart from the folding.
    same = checkpoint_filter_fn(sd, create_vitpose("s", depth=1))
    assert torch.equal(same["backbone.pos_embed"], pos[:, 1:] + pos[:, :1])


def test_vitpose_plus_experts_and_heads():
    """ViTPose+ layout: fc2 holds embed - part rows, experts the rest; associate heads per dataset."""
    C, part = 384, 96
    sd = official_state_dict(C, 1, 17, seed=2)
    g = torch.Generator().manual_seed(9)
    full_fc2 = sd["backbone.blocks.0.mlp.fc2.weight"]
    sd["backbone.blocks.0.mlp.fc2.weight"] = full_fc2[:C - part].clone()
    sd["backbone.blocks.0.mlp.fc2.bias"] = sd["backbone.blocks.0.mlp.fc2.bias"][:C - part].clone()
    for e in range(6):
        sd[f"backbone.blocks.0.mlp.experts.{e}.weight"] = torch.randn(part, 4 * C, generator=g)
        sd[f"backbone.blocks.0.mlp.experts.{e}.bias"] = torch.randn(part, generator=g)
    for j, k in enumerate([14, 16, 17, 17, 133]):
        for name, value in official_state_dict(C, 0, 133, seed=20 + j).items():
            if name.startswith("keypoint_head."):
                sd[name.replace("keypoint_head.", f"associate_keypoint_heads.{j}.")] = value
    whole = create_vitpose("s", depth=1, num_keypoints=133)
    out = checkpoint_filter_fn({"state_dict": sd}, whole)
    assert torch.equal(out["backbone.blocks.0.mlp.fc2.weight"],
                       torch.cat([sd["backbone.blocks.0.mlp.fc2.weight"],
                                  sd["backbone.blocks.0.mlp.experts.5.weight"]]))
    assert torch.equal(out["head.final_layer.weight"],
                       sd["associate_keypoint_heads.4.final_layer.weight"])
    coco = create_vitpose("s", depth=1, num_keypoints=17)
    out = checkpoint_filter_fn(sd, coco)
    assert torch.equal(out["backbone.blocks.0.mlp.fc2.bias"][C - part:],
                       sd["backbone.blocks.0.mlp.experts.0.bias"])
    assert torch.equal(out["head.final_layer.weight"], sd["keypoint_head.final_layer.weight"])
    # A split file (fc2 already whole) with the spare expert copies the split tool leaves behind.
    split = official_state_dict(C, 1, 17, seed=2)
    split.update({k: v for k, v in sd.items() if ".experts." in k})
    out = checkpoint_filter_fn(split, coco)
    assert torch.equal(out["backbone.blocks.0.mlp.fc2.weight"], full_fc2)


def test_weights_only_refuses_code_objects(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": official_state_dict(384, 1, 17), "meta": argparse.Namespace(a=1)}, src)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(src)
    src.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(src)


def test_import_known_hash_and_new_name(tmp_path, monkeypatch):
    sd = official_state_dict(384, 12, 17, seed=4)  # a full-depth ViTPose-S: inferable architecture
    src = tmp_path / "downloaded.pth"
    digest = _save(_wrap(sd, "mmpose0"), src)
    cache = tmp_path / "cache"
    # A registry entry with this file's hash: imported by content alone.
    monkeypatch.setitem(REGISTRY, "vitpose-s-coco", dataclasses.replace(REGISTRY["vitpose-s-coco"],
                                                                         sha256=digest))
    name, path = import_checkpoint(src, cache=cache)
    assert name == "vitpose-s-coco" and cached_path(name, cache) == path
    monkeypatch.undo()
    # Not vouched for by the registry: needs --trust, then it is registered under a new name.
    with pytest.raises(CheckpointError, match="--trust"):
        import_checkpoint(src, name="my-vitpose", cache=cache)
    with pytest.warns(UserWarning, match="pinned sha256"):
        name, path = import_checkpoint(src, name="my-vitpose", trust=True, cache=cache)
    listed = {s.name: (s, p) for s, p in list_weights(cache)}
    spec, cached = listed["my-vitpose"]
    assert cached == path and spec.variant == "s" and spec.head == "classic" and spec.sha256 == digest
    model, spec = load_checkpoint("my-vitpose", cache=cache)
    with torch.no_grad():
        x = torch.randn(1, 3, 256, 192)
        assert torch.allclose(model(x), reference_forward(sd, x, 12), atol=1e-4)
    # A file for a registry name without a full hash and with the wrong published prefix.
    with pytest.raises(CheckpointError, match="prefix"):
        import_checkpoint(src, name="vitpose-b-coco", trust=True, cache=cache)


def test_registry_entries_are_consistent():
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert spec.variant in VARIANTS and spec.head in ("classic", "simple")
        assert spec.url and spec.url.startswith("https://")
        assert spec.sha256 is None or len(spec.sha256) == 64
        if spec.sha256_prefix:  # mmcv's publish_model names files with sha256[:8]
            assert spec.sha256_prefix in spec.url
        assert spec.decoder in ("udp", "dark", "default", "argmax")
        assert (spec.num_keypoints, spec.layout) in ((17, "coco17"), (133, "coco_wholebody133"))


def _cli(argv, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_weights_parser(sub)
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr()


def test_weights_command(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    code, out = _cli(["weights", "--cache", str(cache), "list"], capsys)
    assert code == 0 and "vitpose-h-coco" in out.out and "not cached" in out.out
    src = tmp_path / "m.pth"
    digest = _save({"state_dict": official_state_dict(384, 12, 17)}, src)
    monkeypatch.setitem(REGISTRY, "vitpose-s-coco", _spec_for("vitpose-s-coco", src, digest))
    code, out = _cli(["weights", "--cache", str(cache), "fetch", "vitpose-s-coco"], capsys)
    assert code == 0 and str(cache) in out.out
    code, out = _cli(["weights", "--cache", str(cache), "list"], capsys)
    line = next(l for l in out.out.splitlines() if "vitpose-s-coco" in l)
    assert "cached" in line and "not cached" not in line
    with pytest.raises(CheckpointError, match="--trust"):
        _cli(["weights", "--cache", str(cache), "fetch", "vitpose-b-coco"], capsys)
    code, out = _cli(["weights", "--cache", str(cache), "import", str(src), "--name", "mine",
                      "--trust"], capsys)
    assert code == 0 and "as mine" in out.out and "pinned" in out.err
