"""PNG figures of a comparison (see :mod:`opensim_bridge.compare`): overlaid curves and
Bland-Altman plots, a grid of up to ``per_page`` channels per page.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global state), and
writes each PNG atomically.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .compare import LOA_Z, ChannelComparison, MarkerComparison

#: Channels per page of a grid.
PER_PAGE = 12


def _figure(n_panels: int, panel_size=(4.0, 2.8)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(n_panels, 3 if n_panels > 4 else 2 if n_panels > 1 else 1)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _pages(n: int, per_page: int):
    per_page = max(1, int(per_page))
    return [range(i, min(i + per_page, n)) for i in range(0, n, per_page)]


def _title(result) -> str:
    a = result.alignment
    lag = (f"lag {a.lag_s:+.4f} s ({a.lag_frames:+.2f} frames)" if a.aligned else "not aligned")
    return f"OURS {Path(result.ours_source or 'OURS').name} vs LAB " \
           f"{Path(result.lab_source or 'LAB').name}; {lag}"


def plot_overlays(result: ChannelComparison, out_dir: str | os.PathLike,
                  per_page: int = PER_PAGE) -> list[Path]:
    """OURS and LAB (aligned) over time per channel, RMSE in each title: overlay_NN.png."""
    out_dir = Path(out_dir)
    files = []
    for page, idx in enumerate(_pages(len(result.pairs), per_page), start=1):
        fig, axes = _figure(len(idx))
        for ax, j in zip(axes, idx):
            s = result.stats[j]
            ax.plot(result.time, result.lab[:, j], color="0.2", lw=1.4, label="LAB")
            ax.plot(result.time, result.ours[:, j], color="tab:red", lw=1.0, label="OURS")
            ax.set_title(f"{s.name}  RMSE {s.rmse:.3g} {s.units}", fontsize=9)
            ax.set_xlabel("time (s)", fontsize=8)
            ax.set_ylabel(s.units, fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0].legend(fontsize=7, loc="best")
        fig.suptitle(_title(result), fontsize=9)
        files.append(_save(fig, out_dir / f"overlay_{page:02d}.png"))
    return files


def plot_bland_altman(result: ChannelComparison, out_dir: str | os.PathLike,
                      per_page: int = PER_PAGE) -> list[Path]:
    """Bland-Altman per channel -- difference (OURS - LAB) against the mean of the two, with the
    bias and the limits of agreement (bias +- 1.96 SD): bland_altman_NN.png."""
    out_dir = Path(out_dir)
    files = []
    for page, idx in enumerate(_pages(len(result.pairs), per_page), start=1):
        fig, axes = _figure(len(idx))
        for ax, j in zip(axes, idx):
            s = result.stats[j]
            o, b = result.ours[:, j], result.lab[:, j]
            ok = np.isfinite(o) & np.isfinite(b)
            ax.scatter((o[ok] + b[ok]) / 2, o[ok] - b[ok], s=6, color="tab:blue", alpha=0.6,
                       linewidths=0)
            if s.n > 1:
                ax.axhline(s.bias, color="k", lw=1.0)
                for y in (s.loa_low, s.loa_high):
                    ax.axhline(y, color="tab:red", lw=0.9, ls="--")
            ax.set_title(f"{s.name}  bias {s.bias:.3g}, LoA [{s.loa_low:.3g}, {s.loa_high:.3g}]",
                         fontsize=8)
            ax.set_xlabel(f"mean of OURS and LAB ({s.units})", fontsize=8)
            ax.set_ylabel(f"OURS - LAB ({s.units})", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.suptitle(f"Bland-Altman (limits: bias +- {LOA_Z} SD). " + _title(result), fontsize=9)
        files.append(_save(fig, out_dir / f"bland_altman_{page:02d}.png"))
    return files


def plot_marker_errors(result: MarkerComparison, out_dir: str | os.PathLike) -> list[Path]:
    """RMSE per marker (bars) and the error over time (median and worst marker): markers.png."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    m = len(result.stats)
    fig = Figure(figsize=(max(8.0, 0.22 * m + 2), 8.0), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1)
    rmse = [s.rmse_mm for s in result.stats]
    ax1.bar(np.arange(m), rmse, color="tab:blue")
    ax1.axhline(result.overall.rmse_mm, color="tab:red", lw=1.0,
                label=f"overall {result.overall.rmse_mm:.3g} mm")
    ax1.set_xticks(np.arange(m), [s.name for s in result.stats], rotation=90, fontsize=7)
    ax1.set_ylabel("RMSE (mm)")
    ax1.legend(fontsize=8)
    err = np.linalg.norm(result.ours - result.lab, axis=2) * 1000.0
    have = np.isfinite(err).any(axis=1)
    med = np.full(len(err), np.nan)
    worst = np.full(len(err), np.nan)
    med[have] = np.nanmedian(err[have], axis=1)
    worst[have] = np.nanmax(err[have], axis=1)
    ax2.plot(result.time, med, color="tab:blue", label="median over markers")
    ax2.plot(result.time, worst, color="tab:red", lw=0.8, label="worst marker")
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("error (mm)")
    ax2.legend(fontsize=8)
    rigid = f"rigid fit {result.rotation_deg:.1f} deg" if result.rigid else "no rigid fit"
    fig.suptitle(_title(result) + f"; {rigid}", fontsize=9)
    return [_save(fig, out_dir / "markers.png")]


def plot_comparison(result, out_dir: str | os.PathLike, per_page: int = PER_PAGE) -> list[Path]:
    """All figures of a comparison; returns the PNG paths."""
    if isinstance(result, MarkerComparison):
        return plot_marker_errors(result, out_dir)
    return plot_overlays(result, out_dir, per_page) + plot_bland_altman(result, out_dir, per_page)
