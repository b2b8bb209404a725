"""The VideoPose3D-compatible temporal model and its checkpoint registry.

Checkpoints are built here in the official layout ({'model_pos': state_dict, 'epoch', ...},
torch.save) with random weights and served from file:// URLs into a temporary cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path

import pytest
import torch

from models.checkpoints import CheckpointError
from models.lifter_registry import (
    LIFTER_REGISTRY,
    build_lifter,
    import_lifter,
    infer_tcn_architecture,
    lifter_cache,
    load_lifter,
    save_lifter_checkpoint,
)
from models.tcn import TemporalModel, TemporalModelOptimized1f, receptive_field

WIDTHS = {27: (3, 3, 3), 81: (3, 3, 3, 3), 243: (3, 3, 3, 3, 3)}


def _randomise_bn(model, seed=0):
    """Non-trivial BatchNorm statistics so eval-mode layers are not identities."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("rf", [27, 81, 243])
@pytest.mark.parametrize("causal", [False, True])
def test_receptive_field_and_causal_shift(rf, causal):
    m = TemporalModel(17, 2, 17, WIDTHS[rf], causal=causal, channels=16)
    pad = (rf - 1) // 2          # run.py: pad = (receptive_field - 1) // 2
    assert m.receptive_field() == rf == receptive_field(WIDTHS[rf])
    assert m.total_causal_shift() == (pad if causal else 0)   # run.py: causal_shift = pad
    assert m.sequence_padding() == ((2 * pad, 0) if causal else (pad, pad))
    # the original's per-stage definitions: pad_i = (w_i - 1) * d_i // 2, shift_i = w_i // 2 * d_i
    d, pads, shifts = 1, [], []
    for w in WIDTHS[rf]:
        pads.append((w - 1) * d // 2)
        shifts.append(w // 2 * d if causal else 0)
        d *= w
    assert m.pad == pads and m.causal_shift == shifts
    x = torch.randn(1, rf + 4, 17, 2)
    assert m.eval()(x).shape == (1, 5, 17, 3)
    o = TemporalModelOptimized1f(17, 2, 17, WIDTHS[rf], causal=causal, channels=16)
    assert o.receptive_field() == rf and o.total_causal_shift() == m.total_causal_shift()


def test_official_parameter_names():
    m = TemporalModel(17, 2, 17, (3, 3, 3, 3, 3), channels=32)
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    want = {"expand_conv.weight", "shrink.weight", "shrink.bias"} | {f"expand_bn.{p}" for p in bn}
    for i in range(8):  # 4 residual blocks, 2 convolutions each
        want.add(f"layers_conv.{i}.weight")
        want |= {f"layers_bn.{i}.{p}" for p in bn}
    assert set(m.state_dict()) == want
    o = TemporalModelOptimized1f(17, 2, 17, (3, 3, 3, 3, 3), channels=32)
    assert {k: v.shape for k, v in o.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    assert m.layers_conv[0].dilation == (3,) and m.layers_conv[6].dilation == (81,)
    assert o.layers_conv[0].stride == (3,)


@pytest.mark.parametrize("causal", [False, True])
def test_causality(causal):
    torch.manual_seed(0)
    m = _randomise_bn(TemporalModel(5, 2, 4, (3, 3, 3), causal=causal, channels=32)).eval()
    before, after = m.sequence_padding()
    T = 40
    x = torch.randn(1, T, 5, 2)
    pad = lambda s: torch.cat([s[:, :1].repeat(1, before, 1, 1), s, s[:, -1:].repeat(1, after, 1, 1)], 1)
    y = m(pad(x))
    assert y.shape[1] == T
    t = 20
    x2 = x.clone()
    x2[:, t + 1:] += torch.randn_like(x2[:, t + 1:])     # change only the future
    y2 = m(pad(x2))
    if causal:
        torch.testing.assert_close(y2[:, :t + 1], y[:, :t + 1], rtol=0, atol=0)
    else:
        assert (y2[:, t] - y[:, t]).abs().max() > 1e-4   # a symmetric model looks ahead
    x3 = x.clone()
    x3[:, t] += 1.0                                      # the present always matters
    assert (m(pad(x3))[:, t] - y[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rf", [27, 243])
def test_optimized_1f_matches_full_model(causal, rf):
    torch.manual_seed(1)
    full = _randomise_bn(TemporalModel(17, 3, 17, WIDTHS[rf], causal=causal, channels=64)).eval()
    one = TemporalModelOptimized1f(17, 3, 17, WIDTHS[rf], causal=causal, channels=64).eval()
    one.load_state_dict(full.state_dict(), strict=True)
    x = torch.randn(4, rf, 17, 3)
    torch.testing.assert_close(one(x), full(x), rtol=1e-5, atol=1e-5)


def _strided_conv_reference(m: TemporalModelOptimized1f, x: torch.Tensor) -> torch.Tensor:
    """The 1f model's maths written with Conv1d (stride = width), as in the original code."""
    n, t = x.shape[:2]
    h = x.reshape(n, t, -1).permute(0, 2, 1)
    h = m.drop(m.relu(m.expand_bn(m.expand_conv(h))))
    for i in range(len(m.pad) - 1):
        w = m.filter_widths[i + 1]
        res = h[:, :, m.causal_shift[i + 1] + w // 2:: w]
        h = m.drop(m.relu(m.layers_bn[2 * i](m.layers_conv[2 * i](h))))
        h = res + m.drop(m.relu(m.layers_bn[2 * i + 1](m.layers_conv[2 * i + 1](h))))
    return m.shrink(h).permute(0, 2, 1).reshape(n, -1, m.num_joints_out, 3)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("windows", [1, 3])
def test_optimized_1f_matrix_form_equals_strided_convolutions(causal, windows):
    """Training mode too: BatchNorm sees the same samples, so outputs and gradients agree."""
    torch.manual_seed(2)
    m = TemporalModelOptimized1f(17, 3, 17, (3, 3, 3), causal=causal, dropout=0.0, channels=32)
    x = torch.randn(8, 27 * windows, 17, 3)
    m.train()
    fast = m(x)
    assert fast.shape == (8, windows, 17, 3)
    grad_fast = torch.autograd.grad(fast.square().sum(), m.expand_conv.weight)[0]
    m.train()
    ref = _strided_conv_reference(m, x)
    grad_ref = torch.autograd.grad(ref.square().sum(), m.expand_conv.weight)[0]
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-3, atol=1e-4)
    m.eval()
    torch.testing.assert_close(m(x), _strided_conv_reference(m, x), rtol=1e-5, atol=1e-5)


def test_optimized_1f_under_bfloat16_autocast_stays_close():
    torch.manual_seed(3)
    m = _randomise_bn(TemporalModelOptimized1f(17, 3, 17, (3, 3, 3), channels=64)).eval()
    x = torch.randn(16, 27, 17, 3)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)
    assert low.dtype == torch.bfloat16
    err = (low.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.05, err


def _official_checkpoint(path: Path, model) -> str:
    # as the original run.py saves: optimizer state and bookkeeping beside 'model_pos'
    torch.save({"epoch": 80, "lr": 1e-5, "model_pos": model.state_dict(),
                "model_traj": {"shrink.bias": torch.zeros(3)}}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_official_checkpoint_loads_strictly_via_registry(tmp_path):
    spec = LIFTER_REGISTRY["videopose3d-243"]
    ref = _randomise_bn(build_lifter(spec), seed=3).eval()   # full size: 1024 channels, rf 243
    src = tmp_path / "pretrained_h36m_detectron_coco.bin"
    digest = _official_checkpoint(src, ref)
    local = dataclasses.replace(spec, url=src.as_uri(), sha256=digest)
    with pytest.warns(UserWarning, match="NON-COMMERCIAL"):
        model, got = load_lifter(local, cache=tmp_path / "cache")
    assert got.receptive_field == 243 and model.receptive_field() == 243
    assert (lifter_cache(tmp_path / "cache") / "index.json").exists()
    x = torch.randn(1, 243, 17, 2)
    torch.testing.assert_close(model(x), ref(x))
    # a changed file under the same sha256 entry is refused
    bad = dataclasses.replace(local, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="sha256"):
        load_lifter(bad, cache=tmp_path / "other")


def test_unverified_download_needs_trust_and_pins(tmp_path):
    spec = dataclasses.replace(LIFTER_REGISTRY["videopose3d-cpn-243"], channels=32)
    src = tmp_path / "pretrained_h36m_cpn.bin"
    _official_checkpoint(src, build_lifter(spec))
    local = dataclasses.replace(spec, url=src.as_uri())
    with pytest.raises(CheckpointError, match="--trust"):
        load_lifter(local, cache=tmp_path / "c")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = load_lifter(local, cache=tmp_path / "c", trust=True)
    assert any("pinned" in str(w.message) for w in caught)
    assert model.num_joints_in == 17
    # now cached and pinned: no trust needed; tampering is detected
    load_lifter(local, cache=tmp_path / "c", quiet=True)
    cached = next((tmp_path / "c" / "lifters").glob("*.bin"))
    cached.write_bytes(cached.read_bytes() + b"x")
    with pytest.raises(CheckpointError, match="sha256"):
        load_lifter(local, cache=tmp_path / "c", quiet=True)


@pytest.mark.filterwarnings("ignore:videopose3d-cpn-243. accepted without")
def test_strict_loading_rejects_foreign_keys(tmp_path):
    spec = dataclasses.replace(LIFTER_REGISTRY["videopose3d-cpn-243"], channels=32)
    sd = build_lifter(spec).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["shrink.bias"]
    src = tmp_path / "bad.bin"
    torch.save({"model_pos": sd, "epoch": 1}, src)
    with pytest.raises(CheckpointError, match="missing shrink.bias.*unexpected extra.weight"):
        load_lifter(dataclasses.replace(spec, url=src.as_uri()), cache=tmp_path / "c", trust=True)
    # and a file that is not a lifter at all
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}}, tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match="model_pos"):
        load_lifter(tmp_path / "vit.pth")


def test_user_file_architecture_inferred_and_import(tmp_path):
    m = TemporalModel(17, 2, 17, (3, 3, 3), channels=48)
    src = tmp_path / "mine_27.bin"
    torch.save({"model_pos": m.state_dict(), "epoch": 1}, src)
    arch = infer_tcn_architecture(m.state_dict())
    assert arch == {"filter_widths": (3, 3, 3), "channels": 48, "in_channels": 34, "num_joints_out": 17}
    model, spec = load_lifter(src)
    assert model.receptive_field() == 27 and spec.channels == 48
    # kinevid-style file with its own 'meta'; round trip through save_lifter_checkpoint
    m3 = TemporalModel(26, 3, 26, (3, 3, 3), channels=16)
    out = save_lifter_checkpoint(m3, tmp_path / "k.pt", meta={
        "input_layout": "halpe26", "output_names": list(LIFTER_REGISTRY["kinevid"].output_names),
        "filter_widths": [3, 3, 3], "channels": 16, "in_features": 3})
    model3, spec3 = load_lifter(out)
    assert spec3.in_features == 3 and spec3.input_layout == "halpe26" and model3.receptive_field() == 27
    # the trainer may name outputs by the built-in model's markers: they become canonical names
    from inference.lift import MARKER_FOR
    from opensim_bridge.builtin_model import KEYPOINT_MARKERS
    m4 = TemporalModel(26, 3, len(KEYPOINT_MARKERS), (3,), channels=8)
    out4 = save_lifter_checkpoint(m4, tmp_path / "k4.pt", meta={
        "input_layout": "halpe26", "output_names": list(KEYPOINT_MARKERS), "in_features": 3,
        "filter_widths": [3], "channels": 8, "root_index": KEYPOINT_MARKERS.index("Hip")})
    _, spec4 = load_lifter(out4)
    assert [MARKER_FOR[n] for n in spec4.output_names] == list(KEYPOINT_MARKERS)
    assert "right_heel" in spec4.output_names and "RHeel" not in spec4.output_names
    # offline import of an official file needs trust (no sha256 on record), then loads from cache
    with pytest.raises(CheckpointError, match="--trust"):
        import_lifter(src, "videopose3d-cpn-243", cache=tmp_path / "c")
