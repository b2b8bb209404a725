"""The VideoPose3D temporal convolutional lifter (Pavllo et al., CVPR 2019), in plain torch.nn.

2D keypoint sequences (N, T, J_in, F) -> root-relative 3D (N, T - receptive_field + 1, J_out, 3).
The network is a stack of dilated 1-D convolutions over time: an ``expand`` convolution of width
``filter_widths[0]``, then one residual block per further width ``w_i`` (a convolution of width
``w_i`` dilated by the product of the earlier widths, then a 1x1 convolution), then a 1x1
``shrink`` convolution to ``J_out * 3`` values. No padding is applied inside the network, so
every output frame sees exactly ``receptive_field()`` input frames: 27 for widths (3, 3, 3),
81 for (3, 3, 3, 3), 243 for (3, 3, 3, 3, 3).

Parameter names are those of the official code (``expand_conv``, ``expand_bn``,
``layers_conv.N``, ``layers_bn.N``, ``shrink``) so the published checkpoints'
``checkpoint['model_pos']`` load with ``strict=True``.

Symmetric vs causal. A symmetric model's output frame uses ``pad`` frames on each side of it,
``pad = (receptive_field - 1) // 2``. A causal model (``causal=True``) has the same weights'
shapes but takes its residual connections from the *end* of each window, so the output is
aligned with the last input frame: frame t depends on frames t - 2*pad .. t only. For whole
sequences the caller pads ``pad + shift`` frames before and ``pad - shift`` after, with
``shift = total_causal_shift()`` (= pad for causal models, 0 for symmetric ones), exactly as the
original's ``UnchunkedGenerator`` does; :meth:`TemporalModelBase.sequence_padding` returns that pair.

:class:`TemporalModelOptimized1f` is the training variant that predicts one frame per window:
convolutions with stride equal to their width instead of dilation (same maths on one window,
far fewer operations). Its parameters have the same names and shapes, so weights move freely
between the two (train with the 1f model, infer over sequences with :class:`TemporalModel`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "BN_MOMENTUM",
    "TemporalModel",
    "TemporalModelBase",
    "TemporalModelOptimized1f",
    "receptive_field",
]

BN_MOMENTUM = 0.1  # the original's initial BatchNorm momentum (it decays it during training)


def receptive_field(filter_widths: Sequence[int]) -> int:
    """Number of input frames behind one output frame: the product of the filter widths."""
    rf = 1
    for w in filter_widths:
        rf *= int(w)
    return rf


class TemporalModelBase(nn.Module):
    """Shared bookkeeping; build :class:`TemporalModel` or :class:`TemporalModelOptimized1f`."""

    def __init__(self, num_joints_in: int, in_features: int, num_joints_out: int,
                 filter_widths: Sequence[int], causal: bool, dropout: float, channels: int):
        super().__init__()
        filter_widths = tuple(int(w) for w in filter_widths)
        if not filter_widths:
            raise ValueError("filter_widths must not be empty")
        for w in filter_widths:
            # an even width has no centre frame, so symmetric alignment would be off by half
            if w < 1 or w % 2 == 0:
                raise ValueError(f"filter widths must be odd and positive, got {filter_widths}")
        self.num_joints_in = int(num_joints_in)
        self.in_features = int(in_features)
        self.num_joints_out = int(num_joints_out)
        self.filter_widths = filter_widths
        self.causal = bool(causal)
        self.channels = int(channels)

        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=True)
        # pad[i]: frames each side consumed by stage i (in input frames)
        self.pad = [filter_widths[0] // 2]
        self.expand_bn = nn.BatchNorm1d(channels, momentum=BN_MOMENTUM)
        self.shrink = nn.Conv1d(channels, num_joints_out * 3, 1)

    def set_bn_momentum(self, momentum: float) -> None:
        """The original decays BatchNorm momentum during training; this sets it everywhere."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = momentum

    def receptive_field(self) -> int:
        """Input frames per output frame (1 + 2 * sum of the per-stage pads)."""
        return 1 + 2 * sum(self.pad)

    def total_causal_shift(self) -> int:
        """Frames the output is shifted towards the window's end: pad if causal, else 0."""
        frames, dilation = 0, 1
        for w in self.filter_widths:
            frames += (w // 2 if self.causal else 0) * dilation
            dilation *= w
        return frames

    def sequence_padding(self) -> tuple[int, int]:
        """(frames before, frames after) to add to a sequence so that output frame t is input
        frame t: ``pad + shift`` and ``pad - shift`` (causal: all of it before)."""
        pad = (self.receptive_field() - 1) // 2
        shift = self.total_causal_shift()
        return pad + shift, pad - shift

    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        """(N, T) of a valid input (N, T, J_in, F) with T >= receptive_field(); else ValueError."""
        if x.ndim != 4 or x.shape[-2] != self.num_joints_in or x.shape[-1] != self.in_features:
            raise ValueError(f"expected input (N, T, {self.num_joints_in}, {self.in_features}), "
                             f"got {tuple(x.shape)}")
        n, t = x.shape[:2]
        if t < self.receptive_field():
            raise ValueError(f"{t} frames is fewer than the receptive field {self.receptive_field()}")
        return n, t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, J_in, F) -> (N, T - receptive_field + 1, J_out, 3)."""
        n, t = self._check_input(x)
        x = x.reshape(n, t, -1).permute(0, 2, 1)      # (N, J*F, T): channels first for Conv1d
        x = self._forward_blocks(x)
        return x.permute(0, 2, 1).reshape(n, -1, self.num_joints_out, 3)

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TemporalModel(TemporalModelBase):
    """Dilated TCN for whole sequences (inference, or training on chunks)."""

    def __init__(self, num_joints_in: int, in_features: int = 2, num_joints_out: int = 17,
                 filter_widths: Sequence[int] = (3, 3, 3, 3, 3), causal: bool = False,
                 dropout: float = 0.25, channels: int = 1024, dense: bool = False):
        super().__init__(num_joints_in, in_features, num_joints_out, filter_widths, causal,
                         dropout, channels)
        fw = self.filter_widths
        self.dense = bool(dense)
        self.expand_conv = nn.Conv1d(num_joints_in * in_features, channels, fw[0], bias=False)
        convs, bns = [], []
        self.causal_shift = [fw[0] // 2 if causal else 0]
        dilation = fw[0]
        for w in fw[1:]:
            pad = (w - 1) * dilation // 2
            self.pad.append(pad)
            self.causal_shift.append(w // 2 * dilation if causal else 0)
            # dense: the ablation with an undilated kernel covering the same span
            convs.append(nn.Conv1d(channels, channels, 2 * pad + 1 if dense else w,
                                   dilation=1 if dense else dilation, bias=False))
            bns.append(nn.BatchNorm1d(channels, momentum=BN_MOMENTUM))
            convs.append(nn.Conv1d(channels, channels, 1, bias=False))
            bns.append(nn.BatchNorm1d(channels, momentum=BN_MOMENTUM))
            dilation *= w
        self.layers_conv = nn.ModuleList(convs)
        self.layers_bn = nn.ModuleList(bns)

    def _forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.relu(self.expand_bn(self.expand_conv(x))))
        for i in range(len(self.pad) - 1):
            pad, shift = self.pad[i + 1], self.causal_shift[i + 1]
            # the residual is the frames the dilated conv is centred on (or ends on, if causal)
            res = x[:, :, pad + shift: x.shape[2] - pad + shift]
            x = self.drop(self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x))))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
        return self.shrink(x)


class TemporalModelOptimized1f(TemporalModelBase):
    """Single-output-frame training variant: strided instead of dilated convolutions.

    Fed windows of exactly ``receptive_field()`` frames (or more: then it predicts one frame
    every ``receptive_field()`` frames). Same parameter names/shapes as :class:`TemporalModel`.
    """

    def __init__(self, num_joints_in: int, in_features: int = 2, num_joints_out: int = 17,
                 filter_widths: Sequence[int] = (3, 3, 3, 3, 3), causal: bool = False,
                 dropout: float = 0.25, channels: int = 1024):
        super().__init__(num_joints_in, in_features, num_joints_out, filter_widths, causal,
                         dropout, channels)
        fw = self.filter_widths
        self.expand_conv = nn.Conv1d(num_joints_in * in_features, channels, fw[0], stride=fw[0],
                                     bias=False)
        convs, bns = [], []
        self.causal_shift = [fw[0] // 2 if causal else 0]
        dilation = fw[0]
        for w in fw[1:]:
            self.pad.append((w - 1) * dilation // 2)
            # in this variant the shift is counted in the strided layer's own frames
            self.causal_shift.append(w // 2 if causal else 0)
            convs.append(nn.Conv1d(channels, channels, w, stride=w, bias=False))
            bns.append(nn.BatchNorm1d(channels, momentum=BN_MOMENTUM))
            convs.append(nn.Conv1d(channels, channels, 1, bias=False))
            bns.append(nn.BatchNorm1d(channels, momentum=BN_MOMENTUM))
            dilation *= w
        self.layers_conv = nn.ModuleList(convs)
        self.layers_bn = nn.ModuleList(bns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, J_in, F) -> (N, T // receptive_field, J_out, 3).

        The same maths as the strided convolutions, computed frames-last as matrix products: a
        convolution of width w and stride w is one product of each group of w frames with the
        kernel laid out as (C_out, w * C_in). That runs about twice as fast on a CPU as
        ``Conv1d`` (no im2col, no layout changes) and, under ``torch.autocast("cpu",
        dtype=torch.bfloat16)``, reaches the matrix units of CPUs that have them: this is the
        training variant, so its speed bounds how long the lifter can be trained.
        """
        n, t = self._check_input(x)
        fw = self.filter_widths
        h = self._act(self._strided(x.reshape(n, t, -1), self.expand_conv, fw[0]), self.expand_bn)
        for i in range(len(self.pad) - 1):
            w = fw[i + 1]
            h = h[:, : h.shape[1] // w * w]
            # centre (or last, if causal) frame of each group of w frames
            res = h[:, self.causal_shift[i + 1] + w // 2:: w]
            h = self._act(self._strided(h, self.layers_conv[2 * i], w), self.layers_bn[2 * i])
            h = res + self._act(self._strided(h, self.layers_conv[2 * i + 1], 1),
                                self.layers_bn[2 * i + 1])
        out = nn.functional.linear(h, self.shrink.weight[:, :, 0], self.shrink.bias)
        return out.reshape(n, -1, self.num_joints_out, 3)

    @staticmethod
    def _strided(h: torch.Tensor, conv: nn.Conv1d, w: int) -> torch.Tensor:
        """(N, T, C_in) -> (N, T // w, C_out): ``conv`` (width w, stride w) as one product."""
        n, t, c = h.shape
        h = h[:, : t // w * w].reshape(n, t // w, w * c)
        weight = conv.weight.permute(0, 2, 1).reshape(conv.weight.shape[0], w * c)
        return nn.functional.linear(h, weight)

    def _act(self, h: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
        """BatchNorm over every (window, frame) sample, then ReLU and dropout."""
        shape = h.shape
        h = bn(h.reshape(-1, shape[-1])).reshape(shape)
        return self.drop(self.relu(h))
