"""2D-to-3D lifter weights: a registry as data, verified download, strict loading.

Entries
-------
* ``kinevid`` - kinevid's own lifter, shipped in the repository (``models/weights/kinevid_lifter.pt``,
  trained by ``models/train_lifter.py`` from the public data in ``../shared/data``); no download.
* ``videopose3d-243`` - VideoPose3D ``pretrained_h36m_detectron_coco.bin``: COCO-17 2D (Detectron)
  in, Human3.6M-17 3D out, receptive field 243, symmetric.
* ``videopose3d-cpn-243`` - VideoPose3D ``pretrained_h36m_cpn.bin``: H36M-17 2D (CPN) in.

The official VideoPose3D weights are licensed **CC BY-NC 4.0 (non-commercial use only)**, like the
repository they come from; loading them warns so, and ``kinevid lift --help`` says so. Their full
sha256 is not on record here, so fetching them needs ``trust=True`` (``--trust``); the hash is
then pinned in the cache index and a later change of the file is refused.

The download cache is :mod:`models.checkpoints`' (same sha256-verified fetch, same index format),
in its own sub-folder ``lifters/`` so lifter entries never mix with the ViTPose ones.

Checkpoint files
----------------
A checkpoint is a ``torch.save`` dict loaded with ``weights_only=True``: the network's state dict
under ``'model_pos'`` (the official layout; ``'epoch'``, ``'lr'``, ``'optimizer'``, ``'model_traj'``
... are ignored), or a bare state dict. kinevid's own file may add ``'meta'``: a JSON-like dict
whose keys are :class:`LifterSpec` field names (``input_layout``, ``output_names``,
``filter_widths``, ``channels``, ``causal``, ``in_features``, ``normalisation`` ...), which
override the registry defaults, so the trainer states what it trained.
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from models.checkpoints import (
    CheckpointError,
    cache_dir,
    cached_path,
    fetch,
    read_state_dict,
    sha256_file,
)

__all__ = [
    "LIFTER_REGISTRY",
    "NONCOMMERCIAL",
    "REPO_ROOT",
    "LifterSpec",
    "build_lifter",
    "extract_state_dict",
    "get_lifter_spec",
    "import_lifter",
    "infer_tcn_architecture",
    "lifter_cache",
    "lifter_choices",
    "load_lifter",
    "resolve_checkpoint",
    "save_lifter_checkpoint",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

NONCOMMERCIAL = ("CC BY-NC 4.0: the official VideoPose3D weights are for NON-COMMERCIAL use only "
                 "(https://github.com/facebookresearch/VideoPose3D/blob/main/LICENSE)")

_VP3D_SOURCE = ("facebookresearch/VideoPose3D README, 'Evaluating our pretrained models' "
                "(Pavllo et al., CVPR 2019)")

# Human3.6M-17 output joint names in kinevid's canonical naming (inference.layouts "h36m17").
_H36M_OUT = ("mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
             "left_ankle", "spine", "neck", "nose", "head", "left_shoulder", "left_elbow",
             "left_wrist", "right_shoulder", "right_elbow", "right_wrist")

# Default outputs of kinevid's own lifter (the points the built-in model's keypoint markers
# need); the shipped file's 'meta' overrides this.
_KINEVID_OUT = ("mid_hip", "neck", "head_top", "nose", "left_eye", "right_eye", "left_ear",
                "right_ear", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
                "left_ankle", "right_ankle", "left_heel", "right_heel", "left_big_toe",
                "right_big_toe", "left_small_toe", "right_small_toe")


@dataclass(frozen=True)
class LifterSpec:
    name: str
    input_layout: str                    # inference.layouts name of the 2D input
    output_names: tuple[str, ...]        # canonical names of the 3D outputs, in order
    filter_widths: tuple[int, ...] = (3, 3, 3, 3, 3)
    channels: int = 1024
    causal: bool = False
    dense: bool = False
    in_features: int = 2                 # 2: x, y; 3: x, y, confidence
    normalisation: str = "screen_width"  # x/w*2-1, y/w*2-h/w (VideoPose3D); see models.lifter_input
    root_index: int = 0                  # output joint the 3D is relative to (pelvis)
    input_root_index: int | None = None  # input joint the person_window normalisation centres on
    output_units: str = "m"              # "m", or "height": multiply by the subject's height
    # {detector kind: canonical input points it never gives} the lifter was trained with
    # (a video missing one of these sets is expected, not a degraded input)
    input_sources: dict | None = dataclasses.field(default=None, hash=False)
    url: str | None = None
    sha256: str | None = None            # full hash when known; None: download needs trust
    sha256_prefix: str | None = None     # (kept for models.checkpoints.fetch)
    file: str | None = None              # repo-relative path of a shipped file
    licence: str = ""
    source: str = ""
    notes: str = ""

    @property
    def receptive_field(self) -> int:
        rf = 1
        for w in self.filter_widths:
            rf *= w
        return rf

    @property
    def noncommercial(self) -> bool:
        return "NC" in self.licence

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> LifterSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in fields}
        for k in ("output_names", "filter_widths"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


LIFTER_REGISTRY: dict[str, LifterSpec] = {s.name: s for s in [
    LifterSpec(
        name="kinevid", input_layout="halpe26_hands", output_names=_KINEVID_OUT, in_features=3,
        file="models/weights/kinevid_lifter.pt",
        licence="kinevid's own weights, trained on the public data listed in its model card "
                "(models/weights/kinevid_lifter.md)",
        source="models/train_lifter.py",
        notes="feet and head landmarks; architecture and layouts as stated in the file's 'meta'"),
    LifterSpec(
        name="videopose3d-243", input_layout="coco17", output_names=_H36M_OUT,
        url="https://dl.fbaipublicfiles.com/video-pose-3d/pretrained_h36m_detectron_coco.bin",
        licence=NONCOMMERCIAL, source=_VP3D_SOURCE,
        notes="trained on Detectron COCO keypoints of Human3.6M; 46.8 mm MPJPE (paper)"),
    LifterSpec(
        name="videopose3d-cpn-243", input_layout="h36m17", output_names=_H36M_OUT,
        url="https://dl.fbaipublicfiles.com/video-pose-3d/pretrained_h36m_cpn.bin",
        licence=NONCOMMERCIAL, source=_VP3D_SOURCE,
        notes="trained on CPN H36M-format keypoints; 46.8 mm MPJPE (paper, CPN 2D)"),
]}


def lifter_cache(cache: str | os.PathLike | None = None) -> Path:
    """The lifter sub-folder of kinevid's weights cache (``KINEVID_CACHE`` etc.)."""
    return cache_dir(cache) / "lifters"


def lifter_choices() -> list[str]:
    return list(LIFTER_REGISTRY)


def get_lifter_spec(name: str) -> LifterSpec:
    try:
        return LIFTER_REGISTRY[name]
    except KeyError:
        raise CheckpointError(f"unknown lifter {name!r}; known: {', '.join(LIFTER_REGISTRY)} "
                              "(or a path to a checkpoint file)") from None


def resolve_checkpoint(spec: LifterSpec, *, cache: str | os.PathLike | None = None,
                       trust: bool = False, download: bool = True) -> Path:
    """The verified local file for ``spec``: the shipped file, or the cached (downloaded) one."""
    if spec.file:
        path = REPO_ROOT / spec.file
        if not path.is_file():
            raise CheckpointError(f"the shipped weights of lifter {spec.name!r} are missing; "
                                  "train them with models/train_lifter.py", path)
        if spec.sha256 and sha256_file(path) != spec.sha256.lower():
            raise CheckpointError(f"sha256 of the shipped {spec.name!r} weights does not match "
                                  "the registry", path)
        return path
    cache = lifter_cache(cache)
    if not download:
        path = cached_path(spec, cache)
        if path is None:
            raise CheckpointError(f"lifter weights {spec.name!r} are not in the cache ({cache})")
        return path
    return fetch(spec, cache=cache, trust=trust)


# ----------------------------------------------------------------------------- state dicts
def extract_state_dict(obj: Mapping, path=None) -> tuple[dict, dict]:
    """(state dict, meta) from a loaded checkpoint: ``obj['model_pos']`` or a bare state dict."""
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a checkpoint dict", path)
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    sd = obj.get("model_pos", obj)
    if not isinstance(sd, Mapping):
        raise CheckpointError("'model_pos' is not a state dict", path)
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors or "expand_conv.weight" not in {k.removeprefix("module.") for k in tensors}:
        raise CheckpointError("no VideoPose3D-style 'model_pos' state dict found "
                              "(expected keys expand_conv.weight, layers_conv.N.weight, shrink.*)", path)
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, dict(meta)


_CONV = re.compile(r"^layers_conv\.(\d+)\.weight$")


def infer_tcn_architecture(sd: Mapping) -> dict:
    """filter_widths, channels, in_channels and num_joints_out of a TemporalModel state dict."""
    try:
        expand = sd["expand_conv.weight"]
        shrink = sd["shrink.weight"]
    except KeyError as exc:
        raise CheckpointError(f"not a temporal model state dict: no {exc.args[0]}") from None
    convs = sorted(int(m[1]) for k in sd if (m := _CONV.match(k)))
    widths = [int(expand.shape[2])]
    widths += [int(sd[f"layers_conv.{i}.weight"].shape[2]) for i in convs if i % 2 == 0]
    if shrink.shape[0] % 3:
        raise CheckpointError(f"shrink outputs {shrink.shape[0]} values, not a multiple of 3")
    return {"filter_widths": tuple(widths), "channels": int(expand.shape[0]),
            "in_channels": int(expand.shape[1]), "num_joints_out": int(shrink.shape[0]) // 3}


def build_lifter(spec: LifterSpec, *, dropout: float = 0.25):
    """A randomly initialised :class:`models.tcn.TemporalModel` for ``spec``."""
    from inference.layouts import get_layout
    from models.tcn import TemporalModel

    from models.lifter_input import extra_rows

    n_in = get_layout(spec.input_layout).n + extra_rows(spec.normalisation)
    return TemporalModel(n_in, spec.in_features, len(spec.output_names),
                         spec.filter_widths, causal=spec.causal, dropout=dropout,
                         channels=spec.channels, dense=spec.dense)


def _apply_meta(spec: LifterSpec, meta: Mapping, path) -> LifterSpec:
    fields = {f.name for f in dataclasses.fields(LifterSpec)} - {"name", "url", "sha256", "file"}
    changes = {k: v for k, v in meta.items() if k in fields}
    for k in ("output_names", "filter_widths"):
        if k in changes:
            changes[k] = tuple(changes[k])
    if "output_names" in changes:
        changes["output_names"] = canonical_output_names(changes["output_names"])
    try:
        out = dataclasses.replace(spec, **changes)
    except TypeError as exc:
        raise CheckpointError(f"bad 'meta' in the checkpoint: {exc}", path) from None
    from models.lifter_input import NORMALISATIONS

    if out.normalisation not in NORMALISATIONS:
        raise CheckpointError(f"bad 'meta' in the checkpoint: unknown normalisation "
                              f"{out.normalisation!r} (known: {', '.join(NORMALISATIONS)})", path)
    if out.output_units not in ("m", "height"):
        raise CheckpointError(f"bad 'meta' in the checkpoint: unknown output_units "
                              f"{out.output_units!r} (known: m, height)", path)
    return out


def canonical_output_names(names) -> tuple[str, ...]:
    """Output names in kinevid's canonical naming; built-in model marker names (``RHip``,
    ``Hip``, ``Head`` ... as kinevid's trainer writes them) are translated, so that left/right
    mirroring, floor contacts and bone checks find them; the TRC writer maps them back."""
    from inference.lift import MARKER_FOR

    from_marker = {m: c for c, m in MARKER_FOR.items()}
    return tuple(from_marker.get(n, n) for n in names)


def resolve_lifter(lifter: str | os.PathLike | LifterSpec, *, cache=None, trust: bool = False,
                   download: bool = True) -> tuple[LifterSpec, Path]:
    """(spec before the file's meta is applied, verified local file) for a registry name, a
    :class:`LifterSpec` or a checkpoint path (a plain file starts as a VideoPose3D spec)."""
    if isinstance(lifter, LifterSpec):
        return lifter, resolve_checkpoint(lifter, cache=cache, trust=trust, download=download)
    if isinstance(lifter, str) and lifter in LIFTER_REGISTRY:
        spec = LIFTER_REGISTRY[lifter]
        return spec, resolve_checkpoint(spec, cache=cache, trust=trust, download=download)
    path = Path(lifter)
    if not path.is_file():
        get_lifter_spec(str(lifter))  # raises: neither a known name nor a file
    spec = dataclasses.replace(LIFTER_REGISTRY["videopose3d-243"], name=path.stem, url=None,
                               sha256=sha256_file(path), licence="unknown (user-provided file)",
                               source=f"file {path}", notes="")
    return spec, path


def load_lifter(lifter: str | os.PathLike | LifterSpec, *, cache: str | os.PathLike | None = None,
                trust: bool = False, download: bool = True, device="cpu", quiet: bool = False):
    """(model in eval mode, spec) for a registry name, a :class:`LifterSpec` or a checkpoint path.

    Registry entries are fetched (sha256-verified) when not cached; a plain file path is loaded
    as a COCO-17 -> H36M-17 VideoPose3D model unless its 'meta' says otherwise. Loading is strict:
    every key of the network must be in the file with the right shape and nothing else.
    """
    spec, path = resolve_lifter(lifter, cache=cache, trust=trust, download=download)
    sd, meta = extract_state_dict(read_state_dict(path), path)
    spec = _apply_meta(spec, meta, path)
    if spec.file is None and spec.url is None and not meta:
        arch = infer_tcn_architecture(sd)  # a user file: take the widths/channels it has
        spec = dataclasses.replace(spec, filter_widths=arch["filter_widths"], channels=arch["channels"])
    model = build_lifter(spec)
    target = model.state_dict()
    missing = sorted(set(target) - set(sd))
    unknown = sorted(set(sd) - set(target))
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in target
           if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if missing or unknown or bad:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:10])}")
        if unknown:
            parts.append(f"unexpected {', '.join(unknown[:10])}")
        if bad:
            parts.append(f"wrong shape {'; '.join(bad[:10])}")
        raise CheckpointError(f"checkpoint does not fit lifter {spec.name!r} ("
                              f"{spec.input_layout} x{spec.in_features} -> {len(spec.output_names)} "
                              f"joints, widths {spec.filter_widths}, {spec.channels} channels): "
                              + "; ".join(parts), path)
    model.load_state_dict(sd, strict=True)
    if spec.noncommercial and not quiet:
        warnings.warn(f"lifter {spec.name}: {spec.licence}", stacklevel=2)
    return model.to(device).eval(), spec


def save_lifter_checkpoint(model, path: str | os.PathLike, *, meta: Mapping | None = None,
                           epoch: int = 0) -> Path:
    """Write ``{'model_pos', 'epoch', 'meta'}`` atomically (the layout :func:`load_lifter` reads).

    ``meta`` must be JSON-like (str, numbers, bools, lists, dicts) so it loads with
    ``weights_only=True``.
    """
    import torch

    from opensim_bridge.atomic import atomic_path

    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model_pos": state, "epoch": int(epoch), "meta": dict(meta or {})}, tmp)
    return path



def import_lifter(path: str | os.PathLike, name: str, *, trust: bool = False,
                  cache: str | os.PathLike | None = None) -> Path:
    """Bring a checkpoint downloaded elsewhere into the lifter cache under registry ``name``
    (offline machines). Verified like a download (sha256, or ``trust`` to pin it), then loaded
    strictly once before it is kept."""
    spec = get_lifter_spec(name)
    if spec.file:
        raise CheckpointError(f"lifter {name!r} is shipped with kinevid; nothing to import")
    src = Path(path)
    if not src.is_file():
        raise CheckpointError("checkpoint file not found", src)
    local = dataclasses.replace(spec, url=src.resolve().as_uri())
    cached = fetch(local, cache=lifter_cache(cache), trust=trust, force=True)
    try:
        load_lifter(spec, cache=cache, download=False, quiet=True)
    except CheckpointError:
        cached.unlink(missing_ok=True)
        raise
    return cached
