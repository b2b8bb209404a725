"""ViTPose weights: a registry as data, a verified download cache, and strict checkpoint loading.

* ``REGISTRY``: every published checkpoint kinevid knows, with its official URL, hash, input size,
  normalisation, keypoint layout, the decoding it was trained with, head type and licence.
* ``fetch`` downloads with urllib into a temporary file beside the cache entry, checks the sha256
  and only then renames it into place. A file whose full sha256 is not known in advance is
  refused unless ``trust=True``; its hash is then pinned in the cache index, so a later swap of
  the file is detected.
* ``import_checkpoint`` brings a file the user downloaded elsewhere (offline machines).
* ``checkpoint_filter_fn`` is a pure function: official state dict (mmpose 0.x *or* 1.x naming,
  nested or not, ViTPose+ expert layers) -> exactly our model's keys, strict, every key accounted
  for; position embeddings resampled when the input size differs.
* Every ``torch.load`` uses ``weights_only=True``; numpy arrays in checkpoint metadata (mmengine
  stores some) are the only extra types allowed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from opensim_bridge.atomic import atomic_copy, atomic_write
from opensim_bridge.errors import InputError

__all__ = [
    "CheckpointError", "WeightSpec", "REGISTRY", "MEAN_IMAGENET", "STD_IMAGENET", "cache_dir",
    "sha256_file", "get_spec", "list_weights", "cached_path", "fetch", "import_checkpoint",
    "read_state_dict", "checkpoint_filter_fn", "infer_architecture", "build_model",
    "load_checkpoint",
]

MEAN_IMAGENET = (0.485, 0.456, 0.406)  # RGB, on [0, 1] (mmpose 1.x: 123.675, 116.28, 103.53 on 0-255)
STD_IMAGENET = (0.229, 0.224, 0.225)

# Where the registry's facts come from, so each entry can cite them.
_MMPOSE_ZOO = ("mmpose 1.x model zoo, configs/body_2d_keypoint/topdown_heatmap/coco/vitpose_coco.md "
               "(models trained by OpenMMLab with the ViTPose recipe; UDPHeatmap codec sigma 2)")
_EASY_VITPOSE = ("Hugging Face mirror JunkyByte/easy_ViTPose (torch/wholebody/*): ViTPose+ multi-task "
                 "checkpoints split per dataset with the official tools/model_split.py; ViTPose+ "
                 "configs are the *_udp.py ones")
_LICENCE = ("Apache-2.0 code (ViTPose, mmpose); the weights carry no separate licence and were "
            "trained on COCO train2017 (annotations CC BY 4.0, images under Flickr terms)")


class CheckpointError(InputError):
    """A checkpoint file is missing, corrupt, unverified or does not fit the model."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    variant: str                      # 's', 'b', 'l', 'h' (models.vitpose.VARIANTS)
    head: str                         # 'classic' | 'simple'
    num_keypoints: int
    layout: str                       # 'coco17' | 'coco_wholebody133'
    url: str | None
    sha256: str | None                # full hash when known; None: only --trust downloads it
    sha256_prefix: str | None = None  # mmcv's publish_model puts sha256[:8] in the file name
    input_size: tuple[int, int] = (256, 192)   # (H, W)
    mean: tuple[float, float, float] = MEAN_IMAGENET
    std: tuple[float, float, float] = STD_IMAGENET
    decoder: str = "udp"              # models.heatmap.decode_heatmaps method used in training
    udp: bool = True                  # unbiased (size - 1) crop/heatmap scaling
    flip_shift: bool = False          # mmpose shift_heatmap for the flip test
    blur_kernel: int = 11             # modulate_kernel of the configs
    moe_expert: int | None = None     # ViTPose+ expert (0 coco .. 5 wholebody)
    source: str = ""
    licence: str = _LICENCE
    notes: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "WeightSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in fields}
        for k in ("input_size", "mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def _mmpose_coco(variant: str, word: str, head: str, tag: str, date: str, ap: float) -> WeightSpec:
    simple = "-simple" if head == "simple" else ""
    stem = f"td-hm_ViTPose-{word}{simple}_8xb64-210e_coco-256x192-{tag}_{date}.pth"
    return WeightSpec(
        name=f"vitpose-{variant}{simple}-coco", variant=variant, head=head, num_keypoints=17,
        layout="coco17",
        url=f"https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/{stem}",
        sha256=None, sha256_prefix=tag, source=_MMPOSE_ZOO, notes=f"COCO val2017 AP {ap}")


def _wholebody(variant: str) -> WeightSpec:
    return WeightSpec(
        name=f"vitpose-{variant}-wholebody", variant=variant, head="classic", num_keypoints=133,
        layout="coco_wholebody133",
        url=f"https://huggingface.co/JunkyByte/easy_ViTPose/resolve/main/torch/wholebody/vitpose-{variant}-wholebody.pth",
        sha256=None, moe_expert=5, source=_EASY_VITPOSE,
        notes="ViTPose+ (COCO+AIC+MPII+AP-10K+APT-36K+COCO-WholeBody), wholebody expert and head")


# Built from the published tables; the hashes in the file names are sha256 prefixes.
REGISTRY: dict[str, WeightSpec] = {s.name: s for s in [
    _mmpose_coco("s", "small", "classic", "62d7a712", "20230314", 0.739),
    _mmpose_coco("b", "base", "classic", "216eae50", "20230314", 0.757),
    _mmpose_coco("l", "large", "classic", "53609f55", "20230314", 0.782),
    _mmpose_coco("h", "huge", "classic", "e32adcd4", "20230314", 0.788),
    _mmpose_coco("s", "small", "simple", "4c101a76", "20230314", 0.736),
    _mmpose_coco("b", "base", "simple", "0b8234ea", "20230407", 0.756),
    _mmpose_coco("l", "large", "simple", "3a7ee9e1", "20230314", 0.780),
    _mmpose_coco("h", "huge", "simple", "ffd48c05", "20230314", 0.789),
    _wholebody("s"), _wholebody("b"), _wholebody("l"), _wholebody("h"),
]}


# ------------------------------------------------------------------------------------ cache
def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """``KINEVID_CACHE``/weights, else ``XDG_CACHE_HOME``/kinevid/weights, else ~/.cache/..."""
    if root is not None:
        return Path(root)
    env = os.environ.get("KINEVID_CACHE")
    if env:
        return Path(env).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kinevid" / "weights"


def _index_path(cache: Path) -> Path:
    return cache / "index.json"


def _read_index(cache: Path) -> dict:
    p = _index_path(cache)
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cache index is unreadable ({exc}); delete it to start over", p) from exc
    if not isinstance(data, dict):
        raise CheckpointError("cache index is not a JSON object; delete it to start over", p)
    return data


def _write_index(cache: Path, index: dict) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_write(_index_path(cache)) as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
        fh.write("\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def get_spec(name: str, cache: str | os.PathLike | None = None) -> WeightSpec:
    """A built-in entry, or one registered by ``import_checkpoint --name``."""
    if name in REGISTRY:
        return REGISTRY[name]
    entry = _read_index(cache_dir(cache)).get(name)
    if entry and "spec" in entry:
        return WeightSpec.from_json(entry["spec"])
    known = sorted(set(REGISTRY) | set(_read_index(cache_dir(cache))))
    raise CheckpointError(f"unknown weights {name!r}; known: {', '.join(known)}")


def _file_name(spec: WeightSpec) -> str:
    if spec.url:
        base = Path(urllib.parse.urlparse(spec.url).path).name
        if base:
            return f"{spec.name}--{base}"
    return f"{spec.name}.pth"


def _expected_hash(spec: WeightSpec, index: dict) -> str | None:
    if spec.sha256:
        return spec.sha256.lower()
    entry = index.get(spec.name)
    return entry.get("sha256") if entry else None


def cached_path(spec: WeightSpec | str, cache: str | os.PathLike | None = None, *,
                verify: bool = True) -> Path | None:
    """The cached file for ``spec`` after checking its sha256, or None when not cached."""
    cache = cache_dir(cache)
    spec = get_spec(spec, cache) if isinstance(spec, str) else spec
    index = _read_index(cache)
    entry = index.get(spec.name)
    if not entry:
        return None
    path = cache / entry["file"]
    if not path.exists():
        return None
    if verify:
        want = _expected_hash(spec, index)
        got = sha256_file(path)
        if want is None or got != want:
            raise CheckpointError(f"cached weights {spec.name!r} have sha256 {got}, expected {want}; "
                                  "the file was changed or corrupted: fetch or import it again", path)
    return path


def list_weights(cache: str | os.PathLike | None = None) -> list[tuple[WeightSpec, Path | None]]:
    """Every known entry (built-in, then user-registered) with its cached file if present."""
    cache = cache_dir(cache)
    index = _read_index(cache)
    specs = list(REGISTRY.values())
    specs += [WeightSpec.from_json(e["spec"]) for n, e in sorted(index.items())
              if n not in REGISTRY and "spec" in e]
    out = []
    for spec in specs:
        entry = index.get(spec.name)
        path = cache / entry["file"] if entry else None
        out.append((spec, path if path is not None and path.exists() else None))
    return out


def _check_hash(spec: WeightSpec, digest: str, trust: bool, where: str) -> None:
    if spec.sha256:
        if digest != spec.sha256.lower():
            raise CheckpointError(f"sha256 mismatch for {spec.name!r}: got {digest}, expected "
                                  f"{spec.sha256}; the file was not cached", where)
        return
    if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix.lower()):
        raise CheckpointError(f"sha256 {digest} does not start with {spec.sha256_prefix}, the "
                              f"prefix published for {spec.name!r}; the file was not cached", where)
    if not trust:
        raise CheckpointError(f"no sha256 is on record for {spec.name!r}, so the file cannot be "
                              "verified; pass --trust (trust=True) to accept it and pin its hash", where)
    warnings.warn(f"{spec.name}: accepted without a known sha256 (trust=True); pinned {digest}",
                  stacklevel=3)


def fetch(spec: WeightSpec | str, *, cache: str | os.PathLike | None = None, trust: bool = False,
          progress: Callable[[int, int | None], None] | None = None, force: bool = False) -> Path:
    """Download ``spec`` into the cache (verified), or return the verified cached file."""
    cache = cache_dir(cache)
    spec = get_spec(spec, cache) if isinstance(spec, str) else spec
    if not force:
        existing = cached_path(spec, cache)
        if existing is not None:
            return existing
    if not spec.url:
        raise CheckpointError(f"{spec.name!r} has no download URL; use `kinevid weights import`")
    if not trust and not spec.sha256:  # refuse before downloading gigabytes
        raise CheckpointError(f"no sha256 is on record for {spec.name!r}, so the download cannot "
                              "be verified; pass --trust (trust=True) to accept it and pin its hash",
                              spec.url)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / _file_name(spec)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=cache)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        done = 0
        req = urllib.request.Request(spec.url, headers={"User-Agent": "kinevid"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=60) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            while block := resp.read(1 << 20):
                out.write(block)
                h.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done != total:
            raise CheckpointError(f"download stopped after {done} of {total} bytes", spec.url)
        digest = h.hexdigest()
        _check_hash(spec, digest, trust, spec.url)
        os.replace(tmp, final)
    except OSError as exc:
        raise CheckpointError(f"download failed: {exc}", spec.url) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    _record(cache, spec, final, digest, origin=spec.url, with_spec=spec.name not in REGISTRY)
    return final


def _record(cache: Path, spec: WeightSpec, path: Path, digest: str, *, origin: str,
            with_spec: bool) -> None:
    index = _read_index(cache)
    entry = {"file": path.name, "sha256": digest, "origin": origin}
    if with_spec:
        entry["spec"] = spec.to_json()
    index[spec.name] = entry
    _write_index(cache, index)


def import_checkpoint(path: str | os.PathLike, *, name: str | None = None, trust: bool = False,
                      cache: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Copy a checkpoint the user brought into the cache; returns (name, cached path).

    * its sha256 equals a registry entry's: cached under that entry (``name`` may be omitted);
    * ``name`` is a registry entry without a full hash: accepted with ``trust`` (the published
      prefix, if any, must match) and the hash pinned;
    * ``name`` is new: registered with ``trust``, architecture inferred from the weights, the
      decoding of ViTPose's COCO configs (UDP) assumed.
    """
    src = Path(path)
    if not src.is_file():
        raise CheckpointError("checkpoint file not found", src)
    cache = cache_dir(cache)
    digest = sha256_file(src)
    matches = [s for s in REGISTRY.values() if s.sha256 and s.sha256.lower() == digest]
    if name is None:
        if not matches:
            raise CheckpointError(f"sha256 {digest} matches no registry entry; give --name to "
                                  "register it (with --trust)", src)
        spec = matches[0]
    elif name in REGISTRY:
        spec = REGISTRY[name]
        _check_hash(spec, digest, trust, str(src))
    else:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise CheckpointError(f"weights name {name!r} must be letters, digits, '.', '_' or '-'")
        if not trust:
            raise CheckpointError(f"{name!r} is not in the registry, so nothing vouches for this "
                                  "file; pass --trust to register it under its computed sha256", src)
        arch = infer_architecture(read_state_dict(src))
        spec = WeightSpec(name=name, url=None, sha256=digest, source=f"imported from {src}",
                          licence="unknown (user-provided file)", **arch)
        warnings.warn(f"{name}: registered a user-provided ViTPose-{arch['variant'].upper()} "
                      f"({arch['head']} head, {arch['num_keypoints']} keypoints, UDP decoding "
                      f"assumed); pinned sha256 {digest}", stacklevel=2)
    # The file must load as a checkpoint of this architecture before it enters the cache.
    model = build_model(spec)
    checkpoint_filter_fn(read_state_dict(src), model, moe_expert=spec.moe_expert)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / _file_name(spec)
    atomic_copy(src, final)
    if sha256_file(final) != digest:
        final.unlink()
        raise CheckpointError("the copy in the cache differs from the source (disk error?)", src)
    _record(cache, spec, final, digest, origin=str(src.resolve()), with_spec=spec.name not in REGISTRY)
    return spec.name, final


# ----------------------------------------------------------------------------- reading files
def _numpy_safe_globals() -> list:
    """numpy types mmengine metadata may hold; arrays rebuild without running arbitrary code."""
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core
    items: list = [core.multiarray._reconstruct, np.ndarray, np.dtype, core.multiarray.scalar,
                   (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                   (core.multiarray.scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return items


def read_state_dict(path: str | os.PathLike) -> dict:
    """Load a checkpoint file with ``weights_only=True`` (as saved: maybe nested)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a safe checkpoint"
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot be loaded as a weights-only PyTorch checkpoint: {first}",
                              path) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a state dict", path)
    return dict(obj)


def _unwrap(state: Mapping) -> dict:
    import torch

    d = dict(state)
    for _ in range(4):
        if d and all(isinstance(v, torch.Tensor) for v in d.values()):
            break
        for key in ("state_dict", "model", "module"):
            if isinstance(d.get(key), Mapping):
                d = dict(d[key])
                break
        else:
            break
    tensors = {k: v for k, v in d.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("no tensors found (looked under 'state_dict' and 'model')")
    others = sorted(k for k in d if k not in tensors)
    if others:
        raise CheckpointError(f"state dict has non-tensor entries: {', '.join(others[:20])}")
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# Renames, tried in order; the first match wins. Ours first so a re-saved model loads as is.
_RENAMES: list[tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    # mmpose 0.x (official ViTPose) head
    (r"^keypoint_head\.(deconv_layers|final_layer)\.(.+)$", r"head.\1.\2"),
    # mmpose 1.x: mmpretrain VisionTransformer backbone
    (r"^backbone\.patch_embed\.projection\.(weight|bias)$", r"backbone.patch_embed.proj.\1"),
    (r"^backbone\.layers\.(\d+)\.ln1\.(weight|bias)$", r"backbone.blocks.\1.norm1.\2"),
    (r"^backbone\.layers\.(\d+)\.ln2\.(weight|bias)$", r"backbone.blocks.\1.norm2.\2"),
    (r"^backbone\.layers\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$", r"backbone.blocks.\1.attn.\2.\3"),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$", r"backbone.blocks.\1.mlp.fc1.\2"),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)$", r"backbone.blocks.\1.mlp.fc2.\2"),
    (r"^backbone\.ln1\.(weight|bias)$", r"backbone.last_norm.\1"),
]]
_EXPERT = re.compile(r"^backbone\.blocks\.(\d+)\.mlp\.experts\.(\d+)\.(weight|bias)$")
_ASSOC_HEAD = re.compile(r"^associate_keypoint_heads\.(\d+)\.(deconv_layers|final_layer)\.(.+)$")
_MMPOSE1 = re.compile(r"^backbone\.(layers\.\d+\.|ln1\.|patch_embed\.projection\.)")


def _grid_for(num: int, like: tuple[int, int]) -> tuple[int, int]:
    """Factor ``num`` tokens into the (rows, cols) grid closest to the aspect of ``like``."""
    target = like[0] / like[1]
    best = None
    for r in range(1, num + 1):
        if num % r == 0:
            c = num // r
            score = abs(math.log((r / c) / target))
            if best is None or score < best[0]:
                best = (score, (r, c))
    return best[1]


def _resample_pos_embed(pos, src_grid: tuple[int, int], dst_grid: tuple[int, int]):
    import torch.nn.functional as F

    c = pos.shape[-1]
    grid = pos.reshape(1, src_grid[0], src_grid[1], c).permute(0, 3, 1, 2)
    # bicubic, align_corners False: as ViTPose's get_abs_pos and mmpretrain's resize_pos_embed
    out = F.interpolate(grid.float(), size=dst_grid, mode="bicubic", align_corners=False)
    return out.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, dst_grid[0] * dst_grid[1], c)


def _default_expert(num_keypoints: int) -> int:
    # ViTPose+ dataset order: coco, aic, mpii, ap10k, apt36k, wholebody
    if num_keypoints == 17:
        return 0
    if num_keypoints == 133:
        return 5
    raise CheckpointError(f"a ViTPose+ checkpoint needs moe_expert for a {num_keypoints}-keypoint model")


def checkpoint_filter_fn(state_dict: Mapping, model, *, moe_expert: int | None = None,
                         source_grid: tuple[int, int] | None = None) -> dict:
    """Official ViTPose / mmpose checkpoint -> exactly ``model.state_dict()``'s keys.

    Accepts mmpose 0.x naming (``backbone.blocks.*``, ``keypoint_head.*``, pos_embed with a
    class slot that is added to every patch: folded in here), mmpose 1.x naming (mmpretrain
    ``backbone.layers.*``/``ln1``/``patch_embed.projection``, ``head.*``), our own naming,
    nesting under ``state_dict``/``model``, a DataParallel ``module.`` prefix, and ViTPose+
    mixture-of-experts layers (``mlp.experts.E`` joined to ``fc2`` for expert ``moe_expert``;
    ``associate_keypoint_heads.J`` selected for experts 1..5). ``pos_embed`` is resampled
    (bicubic on the token grid) to the model's input size. Raises ``CheckpointError`` listing
    unknown, missing or mis-shaped keys.
    """
    import torch

    src = _unwrap(state_dict)
    target = model.state_dict()
    k_model = model.num_keypoints
    embed = model.backbone.embed_dim
    mmpose1 = any(_MMPOSE1.match(k) for k in src)

    out: dict = {}
    unknown: list[str] = []
    experts: dict[tuple[int, int, str], torch.Tensor] = {}
    assoc: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in src.items():
        if key == "backbone.pos_embed":
            out[key] = value
            continue
        m = _EXPERT.match(key)
        if m:
            experts[(int(m[1]), int(m[2]), m[3])] = value
            continue
        m = _ASSOC_HEAD.match(key)
        if m:
            assoc.setdefault(int(m[1]), {})[f"head.{m[2]}.{m[3]}"] = value
            continue
        for pat, rep in _RENAMES:
            if pat.match(key):
                key = pat.sub(rep, key)
                break
        if key in target:
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        hint = ""
        if any(k.startswith("backbone.embeddings.") or ".encoder.layer." in k for k in unknown):
            hint = " (this looks like a Hugging Face transformers VitPose file, which is not supported)"
        raise CheckpointError(f"{len(unknown)} checkpoint key(s) do not belong to a ViTPose model"
                              f"{hint}: {', '.join(sorted(unknown)[:40])}"
                              + (" ..." if len(unknown) > 40 else ""))

    # ViTPose+ (MoE): the block's fc2 produces embed - part features, an expert the rest.
    if experts:
        fc2_rows = {i: out[f"backbone.blocks.{i}.mlp.fc2.weight"].shape[0]
                    for i, _, _ in experts if f"backbone.blocks.{i}.mlp.fc2.weight" in out}
        partial_fc2 = any(r < embed for r in fc2_rows.values())
        expert = moe_expert if moe_expert is not None else _default_expert(k_model)
        if partial_fc2:
            for i, rows in fc2_rows.items():
                for p in ("weight", "bias"):
                    e = experts.get((i, expert, p))
                    if e is None:
                        raise CheckpointError(f"ViTPose+ checkpoint has no expert {expert} in block {i}")
                    key = f"backbone.blocks.{i}.mlp.fc2.{p}"
                    out[key] = torch.cat([out[key], e], dim=0)
        # else: a split file whose fc2 already holds the expert rows; the expert copies are spare.
    if assoc:
        expert = moe_expert if moe_expert is not None else _default_expert(k_model)
        if expert > 0:
            if expert - 1 not in assoc:
                raise CheckpointError(f"ViTPose+ checkpoint has no head for expert {expert}")
            for key, value in assoc[expert - 1].items():
                out[key] = value
            for key in ("head.final_layer.weight", "head.final_layer.bias"):
                if key in out and out[key].shape[0] > k_model:
                    out[key] = out[key][:k_model]

    # Position embedding: fold (0.x) or drop (1.x, as mmpretrain does) the class slot, resample.
    if "backbone.pos_embed" in out:
        pos = out["backbone.pos_embed"]
        if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != embed:
            raise CheckpointError(f"backbone.pos_embed has shape {tuple(pos.shape)}, "
                                  f"expected (1, tokens, {embed})")
        gh, gw = model.backbone.grid
        n = pos.shape[1]
        if mmpose1:
            if source_grid is None and n == gh * gw + 1:
                pos = pos[:, 1:]
        else:
            pos = pos[:, 1:] + pos[:, :1]
        n = pos.shape[1]
        if n != gh * gw:
            src_grid = tuple(source_grid) if source_grid else _grid_for(n, (gh, gw))
            if src_grid[0] * src_grid[1] != n:
                raise CheckpointError(f"source_grid {src_grid} does not hold {n} position tokens")
            pos = _resample_pos_embed(pos, src_grid, (gh, gw))
        out["backbone.pos_embed"] = pos

    missing = sorted(k for k in target if k not in out)
    if missing:
        raise CheckpointError(f"{len(missing)} model key(s) missing from the checkpoint: "
                              f"{', '.join(missing[:40])}" + (" ..." if len(missing) > 40 else ""))
    bad = [f"{k} {tuple(out[k].shape)} vs {tuple(target[k].shape)}"
           for k in target if tuple(out[k].shape) != tuple(target[k].shape)]
    if bad:
        raise CheckpointError(f"{len(bad)} tensor(s) have the wrong shape (checkpoint vs model): "
                              + "; ".join(bad[:20]))
    return {k: out[k] for k in target}


def infer_architecture(state_dict: Mapping) -> dict:
    """variant, head, num_keypoints and layout of a ViTPose state dict (for user imports)."""
    from .vitpose import VARIANTS

    sd = _unwrap(state_dict)

    def first(*names):
        for n in names:
            if n in sd:
                return sd[n]
        return None

    proj = first("backbone.patch_embed.proj.weight", "backbone.patch_embed.projection.weight")
    final = first("keypoint_head.final_layer.weight", "head.final_layer.weight")
    if proj is None or final is None:
        raise CheckpointError("not a ViTPose checkpoint: no patch embedding or final layer found")
    embed = proj.shape[0]
    depth = len({m[1] for k in sd if (m := re.match(r"^backbone\.(?:blocks|layers)\.(\d+)\.", k))})
    variant = next((v for v, c in VARIANTS.items() if c.embed_dim == embed and c.depth == depth), None)
    if variant is None:
        raise CheckpointError(f"embed dim {embed} and depth {depth} match no ViTPose variant "
                              f"({', '.join(f'{v}: {c.embed_dim}x{c.depth}' for v, c in VARIANTS.items())})")
    head = "classic" if any(".deconv_layers." in k for k in sd) else "simple"
    k = final.shape[0]
    layout = {17: "coco17", 133: "coco_wholebody133"}.get(k, f"unknown{k}")
    return {"variant": variant, "head": head, "num_keypoints": k, "layout": layout}


# ------------------------------------------------------------------------------------ models
def build_model(spec: WeightSpec, *, img_size: tuple[int, int] | None = None, **overrides):
    """The (randomly initialised) network for ``spec``; ``overrides`` e.g. ``depth=1`` in tests."""
    from .vitpose import create_vitpose

    return create_vitpose(spec.variant, head=spec.head, num_keypoints=spec.num_keypoints,
                          img_size=tuple(img_size or spec.input_size), **overrides)


def load_checkpoint(weights: str | os.PathLike | WeightSpec, *, img_size: tuple[int, int] | None = None,
                    cache: str | os.PathLike | None = None, device="cpu",
                    source_grid: tuple[int, int] | None = None, **overrides):
    """(model in eval mode, spec) from a registry name (cached, sha256-verified) or a file path.

    A path that is not a registry name is loaded directly (architecture inferred); nothing is
    downloaded here: use ``fetch`` or ``kinevid weights fetch`` first.
    """
    is_name = isinstance(weights, str) and (weights in REGISTRY
                                            or weights in _read_index(cache_dir(cache)))
    if isinstance(weights, str) and not is_name and not Path(weights).exists():
        get_spec(weights, cache)  # raises: neither a known name nor a file
    if isinstance(weights, WeightSpec) or is_name:
        spec = weights if isinstance(weights, WeightSpec) else get_spec(weights, cache)
        path = cached_path(spec, cache)
        if path is None:
            raise CheckpointError(f"weights {spec.name!r} are not in the cache "
                                  f"({cache_dir(cache)}); run `kinevid weights fetch {spec.name}` "
                                  "or `kinevid weights import FILE`")
        raw = read_state_dict(path)
    else:
        path = Path(weights)
        raw = read_state_dict(path)
        arch = infer_architecture(raw)
        spec = WeightSpec(name=path.stem, url=None, sha256=sha256_file(path),
                          source=f"file {path}", licence="unknown (user-provided file)", **arch)
    model = build_model(spec, img_size=img_size, **overrides)
    try:
        filtered = checkpoint_filter_fn(raw, model, moe_expert=spec.moe_expert, source_grid=source_grid)
    except CheckpointError as exc:
        raise CheckpointError(exc.problem, path) from None
    model.load_state_dict(filtered, strict=True)
    return model.to(device).eval(), spec
