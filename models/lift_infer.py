"""Running a temporal lifter over a whole 2D sequence, as VideoPose3D evaluates it.

* Input normalisation (:func:`normalize_screen_coordinates`): pixels -> ``x / w * 2 - 1``,
  ``y / w * 2 - h / w``: both axes are divided by the image WIDTH so the aspect ratio is kept;
  x spans [-1, 1], y spans [-h/w, h/w]. Exactly invertible (:func:`image_coordinates`).
* Missing 2D points (NaN) are filled by linear interpolation over time, held at the ends;
  a point never seen sits at the mean of the points that are (its confidence stays 0, which a
  confidence-aware model sees).
* Sequence ends are padded by replicating the first/last frame: ``pad + shift`` frames before
  and ``pad - shift`` after (``models.tcn.TemporalModelBase.sequence_padding``), so the output
  has one 3D pose per input frame, aligned with it, for symmetric and causal models.
* Test-time flip augmentation: a second copy with x negated (mirror about the image centre
  in normalised coordinates) and left/right input joints swapped; its output is mirrored back
  (x negated, left/right output joints swapped) and the two are averaged.
* Long sequences are processed in chunks of ``chunk`` output frames (each with its
  ``receptive_field - 1`` frames of context), so memory is bounded whatever the length and the
  result is identical to one pass.

* Lifters trained with the ``person_window`` normalisation (:mod:`models.lifter_input`) see
  every receptive-field window normalised on its own, so they run window by window
  (:func:`run_window_lifter`, the strided single-frame variant of the same weights, one output
  frame per window) rather than as one dilated pass; their output, in units of the subject's
  height, is multiplied by the height given.

Output: (T, J_out, 3) float32, root-relative (root joint exactly 0), in metres and the
model's camera axes (x right, y down, z away from the camera).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "fill_missing",
    "image_coordinates",
    "lift_sequence",
    "mirror_permutation",
    "normalize_screen_coordinates",
    "prepare_input",
    "run_lifter",
    "run_window_lifter",
]


def normalize_screen_coordinates(xy: np.ndarray, w: float, h: float) -> np.ndarray:
    """Pixels -> VideoPose3D screen coordinates (both axes over the image width)."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.shape[-1] != 2:
        raise ValueError(f"expected (..., 2) coordinates, got {xy.shape}")
    from models.lifter_input import screen_width

    return screen_width(xy, w, h)


def image_coordinates(xy: np.ndarray, w: float, h: float) -> np.ndarray:
    """Inverse of :func:`normalize_screen_coordinates`."""
    xy = np.asarray(xy, dtype=np.float64)
    return (xy + np.array([1.0, h / w])) * w / 2.0


def mirror_permutation(names: Sequence[str]) -> np.ndarray:
    """Index permutation swapping ``left_*`` and ``right_*`` names (an involution)."""
    idx = {n: i for i, n in enumerate(names)}
    perm = np.arange(len(names))
    for i, n in enumerate(names):
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if n.startswith(a) and (b + n[len(a):]) in idx:
                perm[i] = idx[b + n[len(a):]]
    return perm


def fill_missing(xy: np.ndarray) -> np.ndarray:
    """(T, J, D) with NaN -> filled: linear in time between samples, held at the ends; a joint
    never present takes the per-frame mean of the present joints (or 0 if a frame has none)."""
    out = np.array(xy, dtype=np.float64, copy=True)
    t = np.arange(out.shape[0])
    ok = np.isfinite(out).all(axis=-1)
    for j in range(out.shape[1]):
        good = ok[:, j]
        if good.all() or not good.any():
            continue
        for d in range(out.shape[2]):
            out[~good, j, d] = np.interp(t[~good], t[good], out[good, j, d])
    never = ~ok.any(axis=0)
    if never.any():
        present = np.where(never[None, :, None], np.nan, out)
        with np.errstate(all="ignore"):
            centre = np.nanmean(present, axis=1)
        centre = np.nan_to_num(centre, nan=0.0)
        out[:, never] = centre[:, None, :]
    return out


def _checked_inputs(keypoints, confidence, video_size):
    """(filled (T, J, 2) pixels, (T, J) confidences with 0 where missing, w, h), validated."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise ValueError(f"expected (T, J, 2) keypoints, got {kp.shape}")
    w, h = float(video_size[0]), float(video_size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"bad video size {video_size}")
    conf = np.ones(kp.shape[:2]) if confidence is None else np.asarray(confidence, dtype=np.float64)
    conf = np.where(np.isfinite(kp).all(axis=-1), np.nan_to_num(conf, nan=0.0), 0.0)
    return fill_missing(kp), conf, w, h


def prepare_input(keypoints: np.ndarray, confidence: np.ndarray | None, video_size: tuple[int, int],
                  in_features: int = 2) -> np.ndarray:
    """(T, J, 2) px (+ (T, J) confidence) -> (T, J, in_features) float32 network input."""
    filled, conf, w, h = _checked_inputs(keypoints, confidence, video_size)
    xy = normalize_screen_coordinates(filled, w, h)
    if in_features == 2:
        return xy.astype(np.float32)
    if in_features != 3:
        raise ValueError(f"in_features must be 2 or 3, got {in_features}")
    return np.concatenate([xy, conf[..., None]], axis=-1).astype(np.float32)


def run_lifter(model, inputs: np.ndarray, *, flip: bool = True,
               input_flip: Sequence[int] | None = None, output_flip: Sequence[int] | None = None,
               root_index: int | None = 0, chunk: int = 1024) -> np.ndarray:
    """(T, J_in, F) normalised inputs -> (T, J_out, 3) root-relative 3D, one pose per frame."""
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"expected (T, J, F) inputs, got {x.shape}")
    n_frames = x.shape[0]
    if n_frames == 0:
        return np.zeros((0, model.num_joints_out, 3), np.float32)
    before, after = model.sequence_padding()
    padded = np.concatenate([np.repeat(x[:1], before, 0), x, np.repeat(x[-1:], after, 0)])
    seqs = [padded]
    if flip:
        if input_flip is None or output_flip is None:
            raise ValueError("flip augmentation needs the input and output left/right permutations")
        mirrored = padded[:, list(input_flip)].copy()
        mirrored[..., 0] *= -1.0
        seqs.append(mirrored)
    import torch

    batch = torch.from_numpy(np.stack(seqs))            # (1 or 2, T + rf - 1, J, F)
    rf = model.receptive_field()
    chunk = max(1, int(chunk))
    parts = []
    with torch.inference_mode():
        for start in range(0, n_frames, chunk):
            stop = min(n_frames, start + chunk)
            parts.append(model(batch[:, start: stop + rf - 1]).numpy())
    out = np.concatenate(parts, axis=1)                  # (1 or 2, T, J_out, 3)
    if flip:
        back = out[1][:, list(output_flip)].copy()
        back[..., 0] *= -1.0
        pred = 0.5 * (out[0] + back)
    else:
        pred = out[0]
    if root_index is not None:
        pred = pred - pred[:, root_index: root_index + 1]
    return pred.astype(np.float32)


def _single_frame_model(model):
    """The strided single-frame variant sharing ``model``'s weights (built once, kept on it);
    a :class:`models.lifter_numpy.NumpyLifter` is one already."""
    from models.lifter_numpy import NumpyLifter

    if isinstance(model, NumpyLifter):
        return model
    from models.tcn import TemporalModelOptimized1f

    if isinstance(model, TemporalModelOptimized1f):
        return model
    opt = getattr(model, "_kinevid_1f", None)
    if opt is None:
        opt = TemporalModelOptimized1f(model.num_joints_in, model.in_features, model.num_joints_out,
                                       model.filter_widths, causal=model.causal, dropout=0.0,
                                       channels=model.channels)
        opt.load_state_dict(model.state_dict(), strict=True)
        opt.eval()
        object.__setattr__(model, "_kinevid_1f", opt)   # not a registered submodule
    return opt


def lift_windows(net, x: np.ndarray, input_perm: Sequence[int] | None = None,
                 output_flip: Sequence[int] | None = None) -> np.ndarray:
    """Normalised windows (N, rf, J_in, F) -> the centre frames' poses (N, J_out, 3) by a
    single-frame network (torch, or a :class:`models.lifter_numpy.NumpyLifter`); with
    ``output_flip`` (and ``input_perm``, the input rows' left/right permutation), averaged with
    the mirrored windows' mirrored poses (test-time flip: x negated, left and right swapped,
    both ways)."""
    run = _window_runner(net)
    out = run(x)
    if output_flip is None:
        return out
    m = x[:, :, list(input_perm)].copy()
    m[..., 0] *= -1.0
    back = run(m)[:, list(output_flip)]
    back[..., 0] *= -1.0
    return 0.5 * (out + back)


def _window_runner(net):
    """x (N, rf, J, F) float32 -> (N, J_out, 3) numpy, for either kind of network."""
    from models.lifter_numpy import NumpyLifter

    if isinstance(net, NumpyLifter):
        return lambda x: net(x)[:, 0]
    import torch

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))[:, 0].numpy()
    return run


def run_window_lifter(model, keypoints: np.ndarray, confidence: np.ndarray | None,
                      video_size: tuple[int, int], *, input_root_index: int, flip: bool = True,
                      input_flip: Sequence[int] | None = None,
                      output_flip: Sequence[int] | None = None, root_index: int | None = 0,
                      chunk: int = 1024) -> np.ndarray:
    """(T, J, 2) pixels (+ confidences) -> (T, J_out, 3) for a ``person_window`` lifter: every
    frame's receptive-field window (sequence ends padded by repeating the end frames, as
    :func:`run_lifter` pads) is normalised on its own (:func:`models.lifter_input.person_window`)
    and lifted to that frame's pose, in the model's units."""
    from numpy.lib.stride_tricks import sliding_window_view

    from models.lifter_input import person_window

    xy, conf, w, h = _checked_inputs(keypoints, confidence, video_size)
    n_frames, J = xy.shape[:2]
    net = _single_frame_model(model)
    if n_frames == 0:
        return np.zeros((0, net.num_joints_out, 3), np.float32)
    before, after = model.sequence_padding()
    pad = lambda a: np.concatenate([np.repeat(a[:1], before, 0), a, np.repeat(a[-1:], after, 0)])
    xy_p, conf_p = pad(xy), pad(conf)
    rf = model.receptive_field()
    if flip and (input_flip is None or output_flip is None):
        raise ValueError("flip augmentation needs the input and output left/right permutations")
    in_perm = list(input_flip) + list(range(J, net.num_joints_in)) if flip else None
    parts = []
    for start in range(0, n_frames, max(1, int(chunk))):
        stop = min(n_frames, start + max(1, int(chunk)))
        # (n, rf, J, 2) windows: view, then one copy inside person_window
        win = np.moveaxis(sliding_window_view(xy_p[start: stop + rf - 1], rf, axis=0), -1, 1)
        cw = np.moveaxis(sliding_window_view(conf_p[start: stop + rf - 1], rf, axis=0), -1, 1)
        x = person_window(win, cw, w, h, input_root_index)
        parts.append(lift_windows(net, x, in_perm, output_flip if flip else None))
    pred = np.concatenate(parts)
    if root_index is not None:
        pred = pred - pred[:, root_index: root_index + 1]
    return pred.astype(np.float32)


def lift_sequence(model, spec, keypoints: np.ndarray, confidence: np.ndarray | None,
                  video_size: tuple[int, int], *, flip: bool = True, chunk: int = 1024,
                  height: float | None = None) -> np.ndarray:
    """2D pixels in ``spec.input_layout`` -> (T, J_out, 3) root-relative camera-axes 3D in metres
    (a lifter whose output is in units of height needs the subject's ``height``)."""
    from inference.layouts import get_layout

    layout = get_layout(spec.input_layout)
    if spec.normalisation == "person_window":
        if spec.input_root_index is None:
            raise ValueError(f"lifter {spec.name}: person_window normalisation needs input_root_index")
        rel = run_window_lifter(model, keypoints, confidence, video_size,
                                input_root_index=spec.input_root_index, flip=flip,
                                input_flip=layout.flip_index,
                                output_flip=mirror_permutation(spec.output_names),
                                root_index=spec.root_index, chunk=chunk)
    else:
        inputs = prepare_input(keypoints, confidence, video_size, spec.in_features)
        rel = run_lifter(model, inputs, flip=flip, input_flip=layout.flip_index,
                         output_flip=mirror_permutation(spec.output_names),
                         root_index=spec.root_index, chunk=chunk)
    if spec.output_units == "height":
        if height is None:
            raise ValueError(f"lifter {spec.name} predicts in units of body height: give the height")
        rel = rel * np.float32(height)
    elif spec.output_units != "m":
        raise ValueError(f"lifter {spec.name}: unknown output units {spec.output_units!r}")
    return rel
