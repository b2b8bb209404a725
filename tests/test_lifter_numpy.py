"""kinevid's lifter without PyTorch: the checkpoint reader, the numpy network, the loader."""
from __future__ import annotations

import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoints import CheckpointError
from models.lifter_numpy import NumpyLifter, load_numpy_lifter, read_tensor_archive
from models.lifter_registry import save_lifter_checkpoint
from models.tcn import TemporalModel, TemporalModelOptimized1f
from test_tcn import _randomise_bn

ROOT = Path(__file__).resolve().parents[1]


def _randomised(model, seed=0):
    """Non-trivial BatchNorm statistics (and a batch count) so eval-mode layers matter."""
    _randomise_bn(model, seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.num_batches_tracked.fill_(1234)
    return model.eval()


def _kinevid_meta(model) -> dict:
    """A person_window lifter's meta, as models.train_lifter writes it (HALPE-26 + context)."""
    from models import lifter_data as D
    return {"format": "kinevid-lifter-1", "input_layout": "halpe26", "in_features": 3,
            "output_names": list(D.OUTPUT_MARKERS), "root_index": D.ROOT_INDEX,
            "input_root_index": D.INPUT_ROOT_INDEX, "output_units": "height",
            "normalisation": "person_window", "filter_widths": list(model.filter_widths),
            "channels": model.channels, "causal": model.causal, "dense": False}


def _kinevid_model(widths=(3, 3, 3), causal=False, channels=32, seed=0):
    torch.manual_seed(seed)
    return _randomised(TemporalModel(27, 3, 30, widths, causal=causal, channels=channels), seed)


def test_archive_reader_equals_torch_load(tmp_path):
    model = _kinevid_model()
    path = save_lifter_checkpoint(model, tmp_path / "m.pt", meta=_kinevid_meta(model), epoch=7)
    mine = read_tensor_archive(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert mine["epoch"] == 7 and mine["meta"] == ref["meta"]
    assert list(mine["model_pos"]) == list(ref["model_pos"])
    for k, v in ref["model_pos"].items():
        got = mine["model_pos"][k]
        assert isinstance(got, np.ndarray) and got.shape == tuple(v.shape), k
        assert got.dtype == v.numpy().dtype, k
        np.testing.assert_array_equal(got, v.numpy(), err_msg=k)
    assert mine["model_pos"]["expand_bn.num_batches_tracked"] == 1234


def test_archive_reader_handles_views_of_a_shared_storage(tmp_path):
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    obj = {"t": base.t(), "row": base[2], "col": base[:, 3], "half": torch.ones(3).half()}
    torch.save(obj, tmp_path / "v.pt")
    got = read_tensor_archive(tmp_path / "v.pt")
    for k, v in obj.items():
        np.testing.assert_array_equal(got[k], v.numpy())


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("widths", [(3, 3, 3), (3, 3, 3, 3)])
def test_numpy_network_equals_the_torch_single_frame_model(causal, widths):
    model = _kinevid_model(widths, causal)
    one = TemporalModelOptimized1f(27, 3, 30, widths, causal=causal, channels=32).eval()
    one.load_state_dict(model.state_dict(), strict=True)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    net = NumpyLifter(sd, widths, causal=causal, in_features=3)
    assert net.receptive_field() == model.receptive_field()
    assert net.sequence_padding() == model.sequence_padding()
    assert net.num_joints_in == 27 and net.num_joints_out == 30
    x = np.random.default_rng(1).normal(size=(16, net.receptive_field(), 27, 3)).astype(np.float32)
    with torch.no_grad():
        want = one(torch.from_numpy(x)).numpy()
    got = net(x)
    assert got.shape == want.shape == (16, 1, 30, 3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="expected windows"):
        net(x[:, 1:])


def test_reader_refuses_code_in_a_weights_file(tmp_path):
    """A pickle that names any callable but the tensor rebuild is refused before it runs."""
    class Evil:
        def __reduce__(self):
            return (print, ("this must never be printed",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"model_pos": Evil()}, protocol=2))
        zf.writestr("evil/byteorder", "little")
    with pytest.raises(CheckpointError, match=r"print is not allowed in a weights file"):
        read_tensor_archive(path)
    (tmp_path / "plain.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a PyTorch zip checkpoint"):
        read_tensor_archive(tmp_path / "plain.pt")


def test_loader_checks_keys_and_shapes_and_refuses_torch_only_lifters(tmp_path):
    model = _kinevid_model()
    meta = _kinevid_meta(model)
    good = save_lifter_checkpoint(model, tmp_path / "good.pt", meta=meta)
    net, spec = load_numpy_lifter(good)
    assert isinstance(net, NumpyLifter) and spec.normalisation == "person_window"
    assert spec.sha256 and spec.channels == 32

    # a key missing
    sd = torch.load(good, weights_only=True)["model_pos"]
    del sd["shrink.bias"]
    torch.save({"model_pos": sd, "meta": meta}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing shrink.bias"):
        load_numpy_lifter(tmp_path / "missing.pt")
    # a VideoPose3D-style file (screen coordinates, no meta) needs PyTorch ...
    vp = _randomised(TemporalModel(17, 2, 17, (3, 3, 3), channels=32))
    torch.save({"model_pos": vp.state_dict()}, tmp_path / "vp3d.pt")
    with pytest.raises(CheckpointError, match="runs with PyTorch only"):
        load_numpy_lifter(tmp_path / "vp3d.pt")
    # ... and inference then loads it that way
    from inference.lift import load_lifter_for_inference
    m, s = load_lifter_for_inference(str(tmp_path / "vp3d.pt"))
    assert isinstance(m, TemporalModel) and s.normalisation == "screen_width"
    m, s = load_lifter_for_inference(str(good))
    assert isinstance(m, NumpyLifter)


def test_shipped_lifter_lifts_the_same_in_numpy_and_torch():
    from inference.layouts import get_layout
    from models.lift_infer import lift_sequence
    from models.lifter_registry import load_lifter

    rng = np.random.default_rng(3)
    tm, spec_t = load_lifter("kinevid", quiet=True)
    T, J = 60, get_layout(spec_t.input_layout).n
    base = rng.uniform(300, 700, size=(1, J, 2))
    kp = base + np.cumsum(rng.normal(0, 2.0, size=(T, J, 2)), axis=0)
    kp[10:14, 5] = np.nan                                  # a gap, filled as inference fills it
    kp[:, -2:] = np.nan                                    # points this detector never gives
    conf = rng.uniform(0.3, 1.0, size=(T, J))
    nm, spec_n = load_numpy_lifter("kinevid")
    assert spec_t == spec_n
    want = lift_sequence(tm, spec_t, kp, conf, (1280, 720), height=1.8)
    got = lift_sequence(nm, spec_n, kp, conf, (1280, 720), height=1.8)
    assert got.shape == (T, 30, 3)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_lifting_with_the_shipped_lifter_never_imports_torch():
    """The point of the numpy path: a cold process lifts without loading PyTorch."""
    code = (
        "import sys, numpy as np\n"
        "from inference.lift import load_lifter_for_inference\n"
        "from models.lift_infer import lift_sequence\n"
        "m, s = load_lifter_for_inference('kinevid')\n"
        "from inference.layouts import get_layout\n"
        "kp = np.random.default_rng(0).uniform(300, 600, (30, get_layout(s.input_layout).n, 2))\n"
        "out = lift_sequence(m, s, kp, None, (1280, 720), height=1.7)\n"
        "assert out.shape == (30, 30, 3) and np.isfinite(out).all()\n"
        "print('torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
