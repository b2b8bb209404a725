"""kinevid's lifter without PyTorch: the checkpoint read and the network run with numpy alone.

Importing PyTorch takes about a second of CPU, more than lifting a whole clip does, and on a
2-core machine a cold ``kinevid run`` pays it while the 2D stage needs both cores. The lifter's
inference is a handful of matrix products, so kinevid runs its own ``person_window`` lifters
here: same checkpoint file, same strict key and shape checks, same answer as
:class:`models.tcn.TemporalModelOptimized1f` in eval mode (float32; tested to 1e-5).

* :func:`read_tensor_archive` reads PyTorch's zip checkpoint format (``data.pkl`` plus one raw
  file per storage) with an unpickler that admits only what a weights file holds (ordered
  dicts, tensors of plain dtypes, the JSON-like meta), as ``torch.load(weights_only=True)``
  does; anything else is refused, so a checkpoint cannot run code here either.
* :class:`NumpyLifter` is the single-frame network with each BatchNorm folded into the
  product before it.
* :func:`load_numpy_lifter` resolves a lifter as :func:`models.lifter_registry.load_lifter`
  does (registry name or file, sha256-verified) and returns it with its spec.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from models.checkpoints import CheckpointError

__all__ = ["NumpyLifter", "expected_shapes", "load_numpy_lifter", "read_tensor_archive"]

# PyTorch's legacy typed-storage class names, as its zip format pickles them
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
BN_EPS = 1e-5   # torch.nn.BatchNorm1d's default, which models.tcn uses


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None,
                    metadata=None):
    """torch._utils._rebuild_tensor_v2 for numpy: a copy of the strided view."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    need = 1 + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else 0
    if offset < 0 or offset + need > storage.size:
        raise pickle.UnpicklingError("a tensor reaches beyond its storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * storage.itemsize for s in stride))
    return np.array(view, dtype=storage.dtype.newbyteorder("="))


def read_tensor_archive(path: str | os.PathLike):
    """The object a PyTorch zip checkpoint holds, with every tensor as a numpy array."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"not a PyTorch zip checkpoint ({exc})", path) from None
    with zf:
        names = set(zf.namelist())
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointError("not a PyTorch zip checkpoint (no single <name>/data.pkl)", path)
        prefix = pkl[0][: -len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        storages: dict[str, np.ndarray] = {}

        def storage(kind: _StorageType, key: str) -> np.ndarray:
            if key not in storages:
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise pickle.UnpicklingError(f"storage {key} is missing from the archive")
                dt = kind.dtype.newbyteorder("<" if order == "little" else ">")
                storages[key] = np.frombuffer(zf.read(member), dtype=dt)
            return storages[key]

        class Restricted(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) == ("collections", "OrderedDict"):
                    return collections.OrderedDict
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return _rebuild_tensor
                if module == "torch" and name in _STORAGE_DTYPES:
                    return _StorageType(_STORAGE_DTYPES[name])
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

            def persistent_load(self, pid):
                if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                        and isinstance(pid[1], _StorageType)):
                    raise pickle.UnpicklingError(f"unsupported storage reference {pid!r:.80}")
                return storage(pid[1], str(pid[2]))

        try:
            return Restricted(io.BytesIO(zf.read(pkl[0]))).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"cannot read the checkpoint: {exc}", path) from None


def expected_shapes(n_in: int, in_features: int, n_out: int, filter_widths: Sequence[int],
                    channels: int) -> dict[str, tuple[int, ...]]:
    """Every key and shape of a (non-dense) :class:`models.tcn.TemporalModel` state dict."""
    def bn(name):
        return {f"{name}.{p}": (channels,) for p in ("weight", "bias", "running_mean",
                                                      "running_var")} | {f"{name}.num_batches_tracked": ()}
    fw = list(filter_widths)
    shapes = {"expand_conv.weight": (channels, n_in * in_features, fw[0]), **bn("expand_bn")}
    for i, w in enumerate(fw[1:]):
        shapes[f"layers_conv.{2 * i}.weight"] = (channels, channels, w)
        shapes[f"layers_conv.{2 * i + 1}.weight"] = (channels, channels, 1)
        shapes.update(bn(f"layers_bn.{2 * i}"))
        shapes.update(bn(f"layers_bn.{2 * i + 1}"))
    shapes["shrink.weight"] = (3 * n_out, channels, 1)
    shapes["shrink.bias"] = (3 * n_out,)
    return shapes


class NumpyLifter:
    """The single-frame temporal network in eval mode: a window of ``receptive_field()`` frames
    (N, rf, J_in, F) -> the centre (or, if causal, last) frame's pose (N, 1, J_out, 3).

    Each strided convolution of width w is a product of every group of w frames with the kernel
    laid out (w * C_in, C_out), the BatchNorm after it folded into that kernel and a bias."""

    def __init__(self, state: Mapping[str, np.ndarray], filter_widths: Sequence[int],
                 causal: bool = False, in_features: int = 3):
        self.filter_widths = tuple(int(w) for w in filter_widths)
        self.causal = bool(causal)
        sd = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
        self.channels, cin, _ = sd["expand_conv.weight"].shape
        self.num_joints_out = sd["shrink.weight"].shape[0] // 3
        self.in_channels = cin
        self.in_features = int(in_features)
        if cin % self.in_features:
            raise ValueError(f"{cin} input channels is not a multiple of {in_features} features")
        self.num_joints_in = cin // self.in_features

        def fold(conv: str, bn: str):
            w = sd[conv]                                      # (C_out, C_in, k)
            mat = w.transpose(2, 1, 0).reshape(-1, w.shape[0])  # row k * C_in + c
            s = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + BN_EPS)
            bias = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * s
            return (mat * s).astype(np.float32), bias.astype(np.float32)

        self._expand = fold("expand_conv.weight", "expand_bn")
        self._blocks = [(fold(f"layers_conv.{2 * i}.weight", f"layers_bn.{2 * i}"),
                         fold(f"layers_conv.{2 * i + 1}.weight", f"layers_bn.{2 * i + 1}"))
                        for i in range(len(self.filter_widths) - 1)]
        self._shrink = (sd["shrink.weight"][:, :, 0].T.astype(np.float32),
                        sd["shrink.bias"].astype(np.float32))

    def receptive_field(self) -> int:
        return int(np.prod(self.filter_widths))

    def sequence_padding(self) -> tuple[int, int]:
        """(frames before, frames after) a sequence is padded by, as the torch model's."""
        pad = (self.receptive_field() - 1) // 2
        return (2 * pad, 0) if self.causal else (pad, pad)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        n, t = x.shape[:2]
        if t != self.receptive_field() or x.shape[2] * x.shape[3] != self.in_channels:
            raise ValueError(f"expected windows (N, {self.receptive_field()}, J, F) with J*F = "
                             f"{self.in_channels}, got {x.shape}")
        h = x.reshape(n, t, -1)
        fw = self.filter_widths
        h = self._layer(h, *self._expand, fw[0])
        for (first, second), w in zip(self._blocks, fw[1:]):
            res = h[:, (w - 1 if self.causal else w // 2):: w]
            h = self._layer(h, *first, w)
            h = res + self._layer(h, *second, 1)
        out = h.reshape(-1, h.shape[-1]) @ self._shrink[0] + self._shrink[1]
        return out.reshape(n, -1, self.num_joints_out, 3)

    @staticmethod
    def _layer(h: np.ndarray, mat: np.ndarray, bias: np.ndarray, w: int) -> np.ndarray:
        n, t, c = h.shape
        # one 2-D product: numpy's matmul on a 3-D stack runs one small product per window
        out = h.reshape(n * (t // w), w * c) @ mat
        out += bias
        np.maximum(out, 0.0, out=out)
        return out.reshape(n, t // w, -1)


def load_numpy_lifter(lifter, *, cache=None, trust: bool = False, download: bool = True):
    """(:class:`NumpyLifter`, spec) for a ``person_window`` lifter: a registry name, a spec or a
    checkpoint file, resolved and verified as :func:`models.lifter_registry.load_lifter` does."""
    from inference.layouts import get_layout
    from models.lifter_input import extra_rows
    from models.lifter_registry import _apply_meta, resolve_lifter

    spec, path = resolve_lifter(lifter, cache=cache, trust=trust, download=download)
    obj = read_tensor_archive(path)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model_pos"), Mapping):
        raise CheckpointError("no 'model_pos' state dict in the checkpoint", path)
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    spec = _apply_meta(spec, meta, path)
    if spec.normalisation != "person_window" or spec.dense:
        raise CheckpointError(f"lifter {spec.name!r} ({spec.normalisation}"
                              f"{', dense' if spec.dense else ''}) runs with PyTorch only", path)
    sd = dict(obj["model_pos"])
    n_in = get_layout(spec.input_layout).n + extra_rows(spec.normalisation)
    want = expected_shapes(n_in, spec.in_features, len(spec.output_names), spec.filter_widths,
                           spec.channels)
    problems = [f"missing {k}" for k in want if k not in sd]
    problems += [f"unexpected {k}" for k in sd if k not in want]
    problems += [f"wrong shape {k} {tuple(np.shape(sd[k]))} vs {want[k]}" for k in want
                 if k in sd and tuple(np.shape(sd[k])) != want[k]]
    if problems:
        raise CheckpointError(f"checkpoint does not fit lifter {spec.name!r}: "
                              + "; ".join(problems[:10]), path)
    return NumpyLifter(sd, spec.filter_widths, causal=spec.causal,
                       in_features=spec.in_features), spec
